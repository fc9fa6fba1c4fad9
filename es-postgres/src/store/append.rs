//! The append: one statement, one round trip.

use std::collections::HashSet;

use deadpool_postgres::ClientWrapper;
use es_core::{
    AppendOutcome, AppendRequest, AppendStatus, CommandContext, Conflict, DeleteMode, EventId,
    EventStore, ExpectedVersion, Position, StoreError, StreamId, SystemClock, Version,
};
use uuid::Uuid;

use super::{Inner, PgEventStore};
use crate::error::{PgError, backend};
use crate::jsonb::RawJson;

fn expected_code(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => -2,
        ExpectedVersion::StreamExists => -3,
        ExpectedVersion::Exact(version) => i64::try_from(version.get()).unwrap_or(i64::MAX),
    }
}

fn encode_error(stream: &StreamId, error: serde_json::Error) -> StoreError {
    StoreError::backend(PgError::Config(format!(
        "cannot encode an event of {stream}: {error}"
    )))
}

/// Appends through `client`, which is either a pooled connection in autocommit mode or one
/// inside a [`PgTransaction`](crate::PgTransaction).
pub(crate) async fn append_on(
    inner: &Inner,
    client: &ClientWrapper,
    request: AppendRequest,
) -> Result<AppendOutcome, StoreError> {
    if !request.expected.is_valid() {
        return Err(StoreError::InvalidExpectedVersion(request.stream_id));
    }
    let count = request.events.len();
    let mut ids = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut schema_versions = Vec::with_capacity(count);
    let mut data = Vec::with_capacity(count);
    let mut metadata = Vec::with_capacity(count);
    let mut seen = HashSet::with_capacity(count);
    for event in &request.events {
        let id = event.event_id();
        if !seen.insert(id) {
            return Err(StoreError::DuplicateEventId {
                stream: request.stream_id.clone(),
                event_id: id,
                existing_stream: request.stream_id.clone(),
            });
        }
        let body = RawJson::encode(&event.data).map_err(|e| encode_error(&request.stream_id, e))?;
        let meta =
            RawJson::encode(&event.metadata).map_err(|e| encode_error(&request.stream_id, e))?;
        let size = body.len() + meta.len();
        if size > inner.max_event_bytes {
            return Err(StoreError::PayloadTooLarge {
                stream: request.stream_id.clone(),
                event_id: id,
                size,
                limit: inner.max_event_bytes,
            });
        }
        ids.push(id.as_uuid());
        types.push(event.event_type.as_str());
        schema_versions.push(i32::try_from(event.schema_version).unwrap_or(i32::MAX));
        data.push(body);
        metadata.push(meta);
    }
    let outbox = if request.outbox.is_empty() {
        None
    } else {
        Some(RawJson::encode(&request.outbox).map_err(|e| encode_error(&request.stream_id, e))?)
    };
    let statement = client
        .prepare_cached(&inner.sql.append)
        .await
        .map_err(backend)?;
    let row = client
        .query_one(
            &statement,
            &[
                &request.stream_id.as_str(),
                &request.stream_type,
                &expected_code(request.expected),
                &ids,
                &types,
                &schema_versions,
                &data,
                &metadata,
                &outbox,
            ],
        )
        .await
        .map_err(backend)?;
    outcome_from_row(
        &row,
        request.stream_id,
        request.expected,
        request.events.first().map(|e| e.event_id()),
    )
}

/// Turns the status row of `append_events` or `delete_stream` into an outcome or an error.
fn outcome_from_row(
    row: &tokio_postgres::Row,
    stream_id: StreamId,
    expected: ExpectedVersion,
    first_event: Option<EventId>,
) -> Result<AppendOutcome, StoreError> {
    let status: i16 = row.get(0);
    let version: Option<i64> = row.get(1);
    let transaction: Option<i64> = row.get(2);
    let positions: Option<Vec<i64>> = row.get(3);
    let detail: Option<String> = row.get(4);
    let version = Version::new(version.unwrap_or(0).max(0) as u64);
    let transaction = transaction.unwrap_or(0).max(0) as u64;
    let positions: Vec<Position> = positions
        .unwrap_or_default()
        .into_iter()
        .map(|p| Position::new(transaction, p.max(0) as u64))
        .collect();
    match status {
        0 => Ok(AppendOutcome {
            status: AppendStatus::Appended,
            last_version: version,
            positions,
        }),
        2 => Ok(AppendOutcome {
            status: AppendStatus::AlreadyAppended,
            last_version: version,
            positions,
        }),
        1 => Err(Conflict {
            stream: stream_id,
            expected,
            actual: version,
        }
        .into()),
        3 => Err(StoreError::StreamDeleted(stream_id)),
        4 => {
            let detail = detail.unwrap_or_default();
            let (existing, event_id) = detail.rsplit_once(' ').unwrap_or((detail.as_str(), ""));
            let event_id = Uuid::parse_str(event_id)
                .map(EventId::from_uuid)
                .ok()
                .or(first_event)
                .unwrap_or_default();
            Err(StoreError::DuplicateEventId {
                existing_stream: StreamId::new(existing).unwrap_or_else(|_| stream_id.clone()),
                stream: stream_id,
                event_id,
            })
        }
        5 => Err(PgError::LocksNotTakenFirst(stream_id).into()),
        other => {
            Err(PgError::Config(format!("append_events returned unknown status {other}")).into())
        }
    }
}

impl EventStore for PgEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let client = self.inner.pool.get().await.map_err(backend)?;
        let outcome = append_on(&self.inner, &client, request).await?;
        if outcome.status == AppendStatus::Appended && !outcome.positions.is_empty() {
            self.inner.signal.notify();
        }
        Ok(outcome)
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: es_core::StreamRead,
    ) -> futures::stream::BoxStream<'a, Result<es_core::RecordedEvent, StoreError>> {
        self.read_stream_rows(stream_id, read)
    }

    async fn delete_stream(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<Position>, StoreError> {
        if !expected.is_valid() {
            return Err(StoreError::InvalidExpectedVersion(stream_id.clone()));
        }
        let metadata = CommandContext::new().metadata(&SystemClock);
        let event_id = metadata.event_id;
        let metadata = RawJson::encode(&metadata).map_err(|e| encode_error(stream_id, e))?;
        let hard = mode == DeleteMode::Hard;
        let client = self.inner.pool.get().await.map_err(backend)?;
        let statement = client
            .prepare_cached(&self.inner.sql.delete_stream)
            .await
            .map_err(backend)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &stream_id.as_str(),
                    &expected_code(expected),
                    &hard,
                    &event_id.as_uuid(),
                    &metadata,
                ],
            )
            .await
            .map_err(backend)?;
        let outcome = outcome_from_row(&row, stream_id.clone(), expected, Some(event_id))?;
        if !hard {
            self.inner.signal.notify();
        }
        Ok(outcome.positions.first().copied())
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<Version, StoreError> {
        self.current_version(stream_id).await
    }

    async fn read_log(
        &self,
        after: Position,
        filter: &es_core::LogFilter,
        limit: usize,
    ) -> Result<es_core::LogBatch, StoreError> {
        self.read_log_batch(after, filter, limit).await
    }

    fn subscribe(
        &self,
        after: Position,
        filter: es_core::LogFilter,
    ) -> futures::stream::BoxStream<'static, Result<es_core::SubscriptionItem, StoreError>> {
        es_core::poll_subscription(
            self.clone(),
            after,
            filter,
            self.inner.options,
            &self.inner.signal,
        )
    }
}
