//! The event-history read model behind every `/history` route: a live projection of one page
//! of the aggregate's stream, read on each call, so it is never behind the aggregate and a call
//! costs one page however long the stream grows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::privacy::Privacy;
use es_core::{
    EventStore, LogFilter, Projection, ProjectionError, RecordedEvent, StoreError, StreamId,
    StreamRead, TOMBSTONE_EVENT_TYPE, Version, fold,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::http::problem::ApiError;

/// One entry of an aggregate's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The event's position in its stream (1 for the first): pass the last one seen as
    /// `after` to read the next page.
    pub version: u64,
    /// The event's id.
    pub event_id: Uuid,
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The event's type name (`CustomerRegistered`, ...).
    pub event_type: String,
    /// The event's data as stored.
    #[schema(value_type = Object)]
    pub data: Value,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
}

/// Projects a stream into its history entries.
#[derive(Debug, Clone, Copy)]
pub struct HistoryProjection {
    /// The id every entry names.
    pub aggregate_id: Uuid,
}

#[async_trait]
impl Projection<Vec<HistoryEntry>> for HistoryProjection {
    fn name(&self) -> &str {
        "history"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    async fn apply(
        &self,
        history: &mut Vec<HistoryEntry>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.event_type != TOMBSTONE_EVENT_TYPE {
            history.push(HistoryEntry {
                version: event.version.get(),
                event_id: event.event_id().as_uuid(),
                aggregate_id: self.aggregate_id,
                event_type: event.event_type.clone(),
                data: event.data.clone(),
                timestamp: event.metadata.timestamp,
            });
        }
        Ok(())
    }
}

/// Which page of a history to read: the entries after version `after`, at most `limit` of
/// them (`?after=12&limit=50`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Entries after this version (the `version` of the last entry already read); from the
    /// start when absent.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
    /// At most this many entries: 1 to 1000, 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

impl Page {
    /// Entries in a page when the client does not say.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// The most entries a page holds.
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of the default size.
    pub fn first() -> Self {
        Self::default()
    }

    /// How many entries this page holds at most.
    pub fn size(&self) -> u32 {
        self.limit.unwrap_or(Self::DEFAULT_LIMIT)
    }

    /// The stream read of this page.
    pub fn read(&self) -> StreamRead {
        let from = Version::new(self.after.unwrap_or(0)).next();
        StreamRead::forward().from(from).limit(self.size() as usize)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Page {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(page) =
            axum::extract::Query::<Page>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::field(
                        "query",
                        format!(
                            "`after` and `limit` must be whole numbers: {}",
                            rejection.body_text()
                        ),
                    )
                })?;
        if page
            .after
            .is_some_and(|after| i64::try_from(after).is_err())
        {
            return Err(ApiError::field("after", "must be a version of the stream"));
        }
        if let Some(limit) = page.limit
            && !(1..=Self::MAX_LIMIT).contains(&limit)
        {
            return Err(ApiError::field(
                "limit",
                format!("must be between 1 and {}", Self::MAX_LIMIT),
            ));
        }
        Ok(page)
    }
}

/// A page of entries, answered as a JSON array with a `Link` header (`rel="next"`) to the
/// next page while the page came back full.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T> {
    /// The entries.
    pub entries: Vec<T>,
    /// The `after` of the next page, when there may be one.
    pub next: Option<u64>,
    /// The page size asked for.
    pub limit: u32,
}

impl<T> Paged<T> {
    /// The page read as `page`: `last` is the version of the last event read, if any.
    pub fn new(entries: Vec<T>, page: Page, read: usize, last: Option<u64>) -> Self {
        let next = (read >= page.size() as usize).then_some(last).flatten();
        Self {
            entries,
            next,
            limit: page.size(),
        }
    }
}

impl<T: Serialize> axum::response::IntoResponse for Paged<T> {
    fn into_response(self) -> axum::response::Response {
        let mut response = axum::Json(self.entries).into_response();
        if let Some(after) = self.next {
            let link = format!("<?after={after}&limit={}>; rel=\"next\"", self.limit);
            if let Ok(value) = axum::http::HeaderValue::from_str(&link) {
                response
                    .headers_mut()
                    .insert(axum::http::header::LINK, value);
            }
        }
        response
    }
}

/// One page of the history of `stream`, oldest first. Personal values show as their value
/// when `privacy` can reveal them, else as [`FORGOTTEN`](es_core::privacy::FORGOTTEN).
///
/// # Errors
/// [`ProjectionError`] when the store fails, or a personal value was tampered with.
pub async fn history(
    store: &impl EventStore,
    stream: &StreamId,
    aggregate_id: Uuid,
    page: Page,
    privacy: Option<&Privacy>,
) -> Result<Paged<HistoryEntry>, ProjectionError> {
    let mut entries = Vec::new();
    let mut events: Vec<RecordedEvent> = store
        .read_stream(stream, page.read())
        .try_collect()
        .await
        .map_err(ProjectionError::from)?;
    for event in &mut events {
        if let Some(privacy) = privacy {
            privacy
                .reveal(&mut event.data)
                .await
                .map_err(|e| ProjectionError::Apply(e.into()))?;
        }
        es_core::privacy::present(&mut event.data);
    }
    let last = events.last().map(|event| event.version.get());
    let read = events.len();
    fold(
        &HistoryProjection { aggregate_id },
        &mut entries,
        futures::stream::iter(events.into_iter().map(Ok::<_, StoreError>)),
    )
    .await?;
    Ok(Paged::new(entries, page, read, last))
}
