//! Which topic a message goes to.

use std::collections::BTreeMap;

use es_core::OutboxMessage;

/// Chooses each message's topic: the message's own `topic` when set; else the topic mapped to
/// its message type; else one topic per source aggregate type (`{prefix}{source_type}`);
/// else the fallback topic, if any.
///
/// ```
/// use es_core::OutboxMessage;
/// use es_kafka::TopicRouter;
/// use serde_json::json;
///
/// let router = TopicRouter::new()
///     .with_prefix("shop.")
///     .route_type("PaymentRequested", "payments");
/// let placed = OutboxMessage::new("OrderPlaced", "o-1", json!({})).with_source("order", "o-1");
/// let pay = OutboxMessage::new("PaymentRequested", "o-1", json!({})).with_source("order", "o-1");
/// assert_eq!(router.route(&placed).as_deref(), Some("shop.order"));
/// assert_eq!(router.route(&pay).as_deref(), Some("payments"));
/// assert_eq!(router.route(&placed.with_topic("audit")).as_deref(), Some("audit"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicRouter {
    prefix: String,
    by_type: BTreeMap<String, String>,
    fallback: Option<String>,
}

impl TopicRouter {
    /// Routes by source aggregate type, with no prefix and no fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefixes the per-source-type topics (not explicit or per-type ones).
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sends messages of `message_type` to `topic` (unless they name their own).
    #[must_use]
    pub fn route_type(mut self, message_type: impl Into<String>, topic: impl Into<String>) -> Self {
        self.by_type.insert(message_type.into(), topic.into());
        self
    }

    /// Sends messages no other rule routes to `topic`.
    #[must_use]
    pub fn with_fallback(mut self, topic: impl Into<String>) -> Self {
        self.fallback = Some(topic.into());
        self
    }

    /// The topic for `message`, `None` when no rule applies.
    pub fn route(&self, message: &OutboxMessage) -> Option<String> {
        if let Some(topic) = &message.topic {
            return Some(topic.clone());
        }
        if let Some(topic) = self.by_type.get(&message.message_type) {
            return Some(topic.clone());
        }
        if let Some(source_type) = &message.source_type {
            return Some(format!("{}{source_type}", self.prefix));
        }
        self.fallback.clone()
    }
}
