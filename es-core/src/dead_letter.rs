//! The headers a dead letter carries, the same on every bus.

use chrono::{DateTime, SecondsFormat, Utc};

/// Header of a dead letter: why it was dead-lettered.
pub const ERROR: &str = "es-dlq-error";
/// Header of a dead letter: how many times it was handled before it was given up on.
pub const ATTEMPTS: &str = "es-dlq-attempts";
/// Header of a dead letter: the topic it was read from.
pub const ORIGINAL_TOPIC: &str = "es-dlq-original-topic";
/// Header of a dead letter: the partition it was read from.
pub const ORIGINAL_PARTITION: &str = "es-dlq-original-partition";
/// Header of a dead letter: its offset in that partition.
pub const ORIGINAL_OFFSET: &str = "es-dlq-original-offset";
/// Header of a dead letter: the consumer group that gave up on it.
pub const GROUP: &str = "es-dlq-group";
/// Header of a dead letter: when it was given up on (RFC 3339, UTC).
pub const FAILED_AT: &str = "es-dlq-failed-at";
/// The prefix of every dead-letter header; replaying a dead letter removes them.
pub const PREFIX: &str = "es-dlq-";

/// Where a dead letter was read, and why and when it was given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterOrigin<'a> {
    /// The topic it was read from.
    pub topic: &'a str,
    /// The partition.
    pub partition: i64,
    /// The offset in that partition.
    pub offset: i64,
    /// The consumer group that gave up.
    pub group: &'a str,
    /// Why.
    pub reason: &'a str,
    /// How many times it was handled.
    pub attempts: u32,
    /// When.
    pub failed_at: DateTime<Utc>,
}

impl DeadLetterOrigin<'_> {
    /// The `es-dlq-*` headers, in a fixed order.
    pub fn headers(&self) -> [(&'static str, String); 7] {
        [
            (ERROR, self.reason.to_owned()),
            (ATTEMPTS, self.attempts.to_string()),
            (ORIGINAL_TOPIC, self.topic.to_owned()),
            (ORIGINAL_PARTITION, self.partition.to_string()),
            (ORIGINAL_OFFSET, self.offset.to_string()),
            (GROUP, self.group.to_owned()),
            (
                FAILED_AT,
                self.failed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        ]
    }
}

/// The dead letter of `delivery` refused by `group`: its message with the `es-dlq-*`
/// headers, to `<topic>.dlq`.
pub(crate) fn dead_letter_message(
    delivery: &crate::messaging::Delivery,
    group: &str,
    reason: &str,
    attempts: u32,
) -> crate::outbox::OutboxMessage {
    let mut message = delivery.message.clone();
    let origin = DeadLetterOrigin {
        topic: &delivery.topic,
        partition: i64::from(delivery.partition),
        offset: i64::try_from(delivery.offset).unwrap_or(i64::MAX),
        group,
        reason,
        attempts,
        failed_at: Utc::now(),
    };
    for (name, value) in origin.headers() {
        message.headers.insert(name.to_owned(), value);
    }
    message.topic = Some(format!("{}.dlq", delivery.topic));
    message
}
