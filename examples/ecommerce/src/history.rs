//! The event-history read model behind every `/history` route: a live projection, folded
//! from the aggregate's stream on each read, so it is never behind the aggregate.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{
    EventStore, LogFilter, Projection, ProjectionError, RecordedEvent, StreamId, StreamRead,
    TOMBSTONE_EVENT_TYPE, fold,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// One entry of an aggregate's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
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

/// The history of `stream`, oldest first.
///
/// # Errors
/// [`ProjectionError`] when the store fails.
pub async fn history(
    store: &impl EventStore,
    stream: &StreamId,
    aggregate_id: Uuid,
) -> Result<Vec<HistoryEntry>, ProjectionError> {
    let mut entries = Vec::new();
    let events = store.read_stream(stream, StreamRead::forward());
    fold(&HistoryProjection { aggregate_id }, &mut entries, events).await?;
    Ok(entries)
}
