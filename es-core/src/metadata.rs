//! What travels with every event: identity, correlation, causation, actor, time, headers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;
use crate::ids::EventId;

/// The metadata stored with one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// The event's unique id (UUIDv7); re-appending the same id is idempotent.
    pub event_id: EventId,
    /// Shared by every event and message of one business flow.
    pub correlation_id: Uuid,
    /// The command or message that caused this event, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who asked for it (a user id, a service name), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When the event was decided, in UTC.
    #[serde(deserialize_with = "crate::timestamp::deserialize")]
    pub timestamp: DateTime<Utc>,
    /// Free-form headers (for example a W3C `traceparent`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// The context a command runs in; every event it produces inherits its correlation, causation,
/// actor and headers.
///
/// ```
/// use es_core::{CommandContext, SystemClock};
///
/// let context = CommandContext::new().with_actor("customer-42").with_header("traceparent", "00-abc-def-01");
/// let first = context.metadata(&SystemClock);
/// let second = context.metadata(&SystemClock);
/// assert_eq!(first.correlation_id, second.correlation_id);
/// assert_ne!(first.event_id, second.event_id);
/// assert_eq!(first.actor.as_deref(), Some("customer-42"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandContext {
    /// The flow's correlation id.
    pub correlation_id: Uuid,
    /// The id of what caused the command (an incoming message, a request id).
    #[serde(default)]
    pub causation_id: Option<Uuid>,
    /// Who issued the command.
    #[serde(default)]
    pub actor: Option<String>,
    /// Headers copied onto every event.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl CommandContext {
    /// A context that starts a new flow (a fresh correlation id).
    pub fn new() -> Self {
        Self {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            actor: None,
            headers: BTreeMap::new(),
        }
    }

    /// A context continuing the flow of a message: same correlation, caused by that message.
    pub fn caused_by(correlation_id: Uuid, causation_id: Uuid) -> Self {
        Self {
            correlation_id,
            causation_id: Some(causation_id),
            actor: None,
            headers: BTreeMap::new(),
        }
    }

    /// Sets the actor.
    #[must_use]
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The metadata of one new event in this context: a fresh event id, the clock's time.
    pub fn metadata(&self, clock: &dyn Clock) -> Metadata {
        Metadata {
            event_id: EventId::new(),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            actor: self.actor.clone(),
            timestamp: clock.now(),
            headers: self.headers.clone(),
        }
    }
}

impl Default for CommandContext {
    fn default() -> Self {
        Self::new()
    }
}
