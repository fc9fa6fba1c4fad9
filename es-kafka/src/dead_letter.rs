//! Dead letters: records a consumer gave up on, published with why and where they came from.

use std::time::Duration;

use chrono::Utc;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::config::{ConfigError, KafkaConfig, Role};

use es_core::dead_letter::DeadLetterOrigin;
pub use es_core::dead_letter::{
    ATTEMPTS, ERROR, FAILED_AT, GROUP, ORIGINAL_OFFSET, ORIGINAL_PARTITION, ORIGINAL_TOPIC, PREFIX,
};

/// How long a dead-letter publish may wait for the broker's acknowledgement.
const PUBLISH_TIMEOUT_MS: &str = "30000";

/// Where a consumer sends the records it gives up on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub enum DeadLetterRoute {
    /// The record's topic followed by this suffix (`orders` → `orders.dlq` by default).
    Suffix(String),
    /// One topic for every dead letter of this consumer.
    Topic(String),
}

impl Default for DeadLetterRoute {
    fn default() -> Self {
        Self::Suffix(".dlq".to_owned())
    }
}

impl DeadLetterRoute {
    /// The dead-letter topic of records read from `topic`.
    pub fn topic_for(&self, topic: &str) -> String {
        match self {
            Self::Suffix(suffix) => format!("{topic}{suffix}"),
            Self::Topic(dlq) => dlq.clone(),
        }
    }
}

/// A record as it was read, to be dead-lettered.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl RawRecord {
    /// The name and value of every header.
    pub(crate) fn headers_of(headers: &impl Headers) -> Vec<(String, Option<Vec<u8>>)> {
        headers
            .iter()
            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
            .collect()
    }

    /// Copies the parts of a consumed record.
    pub(crate) fn of(record: &impl rdkafka::Message) -> Self {
        let headers = record.headers().map(Self::headers_of).unwrap_or_default();
        Self {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            key: record.key().map(<[u8]>::to_vec),
            payload: record.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// The producer of a consumer's dead letters, made on the first dead letter: a producer is a
/// client with threads of its own, which a consumer that never dead-letters need not pay for
/// (its settings are checked when the consumer is built).
pub(crate) struct DeadLetters {
    config: rdkafka::ClientConfig,
    producer: std::sync::OnceLock<FutureProducer>,
    route: DeadLetterRoute,
    group: String,
}

impl DeadLetters {
    pub(crate) fn new(
        config: &KafkaConfig,
        route: DeadLetterRoute,
        group: &str,
    ) -> Result<Self, ConfigError> {
        let mut client = config.client_config_for(Role::Producer);
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", PUBLISH_TIMEOUT_MS);
        // Refuses bad settings now rather than at the first dead letter.
        let _checked: FutureProducer = client.create().map_err(ConfigError::Client)?;
        Ok(Self {
            config: client,
            producer: std::sync::OnceLock::new(),
            route,
            group: group.to_owned(),
        })
    }

    fn producer(&self) -> Result<&FutureProducer, rdkafka::error::KafkaError> {
        if let Some(producer) = self.producer.get() {
            return Ok(producer);
        }
        let producer: FutureProducer = self.config.create()?;
        Ok(self.producer.get_or_init(|| producer))
    }

    pub(crate) fn route(&self) -> &DeadLetterRoute {
        &self.route
    }

    /// Publishes `record` to its dead-letter topic and waits for the acknowledgement.
    pub(crate) async fn send(
        &self,
        record: &RawRecord,
        reason: &str,
        attempts: u32,
    ) -> Result<String, rdkafka::error::KafkaError> {
        let topic = self.route.topic_for(&record.topic);
        let extra = DeadLetterOrigin {
            topic: &record.topic,
            partition: i64::from(record.partition),
            offset: record.offset,
            group: &self.group,
            reason,
            attempts,
            failed_at: Utc::now(),
        }
        .headers();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + extra.len());
        for (name, value) in &record.headers {
            if !name.starts_with(PREFIX) {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
        }
        for (name, value) in &extra {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut out = FutureRecord::<[u8], [u8]>::to(&topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key);
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload);
        }
        self.producer()?
            .send(out, Duration::from_secs(30))
            .await
            .map_err(|(error, _)| error)?;
        Ok(topic)
    }
}
