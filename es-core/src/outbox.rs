//! Integration messages written in the append transaction, and the relay's read side.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::ids::Position;
use crate::metadata::Metadata;

/// An integration message: written to the outbox with the events that caused it, relayed to a
/// broker, delivered to consumers.
///
/// ```
/// use es_core::OutboxMessage;
/// use serde_json::json;
///
/// let message = OutboxMessage::new("OrderPlaced", "order-7", json!({ "orderId": "order-7" }))
///     .with_topic("orders")
///     .with_source("order", "order-7")
///     .with_header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert_eq!(message.partition_key, "order-7");
/// assert_eq!(message.schema_version, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxMessage {
    /// Unique id; consumers deduplicate on it.
    pub message_id: Uuid,
    /// The persisted message type name.
    pub message_type: String,
    /// The payload's schema version (starting at 1).
    pub schema_version: u32,
    /// The key that keeps related messages in order (for example the order id); Kafka's key.
    pub partition_key: String,
    /// The destination topic; `None` lets the publisher's routing rule choose.
    pub topic: Option<String>,
    /// The type of aggregate (or component) that produced it.
    pub source_type: Option<String>,
    /// The id of the aggregate instance that produced it.
    pub source_id: Option<String>,
    /// The flow's correlation id.
    pub correlation_id: Option<Uuid>,
    /// What caused it (an event or message id).
    pub causation_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Extra headers (for example `traceparent`).
    pub headers: BTreeMap<String, String>,
    /// The JSON body.
    pub payload: Value,
}

impl OutboxMessage {
    /// A message of `message_type` keyed by `partition_key`, with a fresh id, schema version 1
    /// and the current time.
    pub fn new(
        message_type: impl Into<String>,
        partition_key: impl Into<String>,
        payload: Value,
    ) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            message_type: message_type.into(),
            schema_version: 1,
            partition_key: partition_key.into(),
            topic: None,
            source_type: None,
            source_id: None,
            correlation_id: None,
            causation_id: None,
            occurred_at: SystemClock.now(),
            headers: BTreeMap::new(),
            payload,
        }
    }

    /// Sets the message id (for deterministic ids derived from a cause).
    #[must_use]
    pub fn with_id(mut self, message_id: Uuid) -> Self {
        self.message_id = message_id;
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// Sets the topic explicitly.
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the producing aggregate's type and id.
    #[must_use]
    pub fn with_source(
        mut self,
        source_type: impl Into<String>,
        source_id: impl Into<String>,
    ) -> Self {
        self.source_type = Some(source_type.into());
        self.source_id = Some(source_id.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Writes the current span's W3C trace context (`traceparent`, `tracestate`) into the
    /// headers, replacing the ones copied from a cause, when the current span is part of a
    /// trace (see [`telemetry`](crate::telemetry)). Appends and saga commits do it for every
    /// outbox message they are given.
    #[must_use]
    pub fn with_current_trace(mut self) -> Self {
        crate::telemetry::inject_current(&mut self.headers);
        self
    }

    /// Copies correlation, headers and time from an event's metadata; the event becomes the
    /// cause.
    #[must_use]
    pub fn caused_by(mut self, metadata: &Metadata) -> Self {
        self.correlation_id = Some(metadata.correlation_id);
        self.causation_id = Some(metadata.event_id.as_uuid());
        self.occurred_at = metadata.timestamp;
        for (name, value) in &metadata.headers {
            self.headers
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self
    }
}

/// An outbox row as the relay reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutboxMessage {
    /// Its place in the outbox's gap-safe order.
    pub position: Position,
    /// The message.
    pub message: OutboxMessage,
}

/// One gap-safe batch of the outbox.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutboxBatch {
    /// Messages after the requested position, in order.
    pub messages: Vec<StoredOutboxMessage>,
    /// Whether the batch reached everything currently readable.
    pub reached_end: bool,
}

/// The relay's read side of an outbox.
pub trait OutboxSource: Send + Sync {
    /// Up to `limit` messages strictly after `after`, in order, never skipping one that
    /// commits later with a smaller position.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn read_outbox(
        &self,
        after: Position,
        limit: usize,
    ) -> impl Future<Output = Result<OutboxBatch, StoreError>> + Send;

    /// Deletes messages at or before `up_to` (every relay's checkpoint has passed them);
    /// returns how many were deleted.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn delete_outbox_up_to(
        &self,
        up_to: Position,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
