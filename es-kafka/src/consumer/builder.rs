//! Configuring and creating a [`KafkaConsumer`].

use std::sync::{Arc, Mutex};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};

use super::KafkaConsumer;
use super::context::GroupContext;
use super::track::Tracker;
use crate::config::{ConfigError, KafkaConfig};
use crate::dead_letter::{DeadLetterRoute, DeadLetters};

/// The environment variable naming the consumer group ([`KafkaConsumerBuilder::from_env`]).
pub const GROUP_ID_ENV: &str = "KAFKA_GROUP_ID";
/// The environment variable holding a prefix put before every subscribed topic name.
pub const TOPIC_PREFIX_ENV: &str = "KAFKA_TOPIC_PREFIX";

/// The consumer settings the consumer enforces over any given ones: nothing is stored or
/// committed behind its back.
const ENFORCED: [(&str, &str); 3] = [
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("enable.partition.eof", "false"),
];

/// Settings applied unless the configuration sets them.
///
/// `fetch.wait.max.ms` bounds how long the broker may hold a fetch that found nothing new.
/// Apache Kafka answers a waiting fetch as soon as a record arrives, but some Kafka-protocol
/// brokers (tansu among them) answer only when the wait runs out, so librdkafka's 500 ms
/// became the delivery delay: 50 ms keeps it small, at the cost of up to 20 empty fetches a
/// second per broker while idle.
const DEFAULTS: [(&str, &str); 2] = [
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "50"),
];

/// Configures a [`KafkaConsumer`]; [`build`](Self::build) creates it and subscribes.
#[derive(Debug, Clone)]
#[must_use]
pub struct KafkaConsumerBuilder {
    config: KafkaConfig,
    group_id: String,
    topic_prefix: String,
    topics: Vec<String>,
    dead_letters: DeadLetterRoute,
}

impl KafkaConsumerBuilder {
    pub(super) fn new(config: KafkaConfig, group_id: String) -> Self {
        Self {
            config,
            group_id,
            topic_prefix: String::new(),
            topics: Vec::new(),
            dead_letters: DeadLetterRoute::default(),
        }
    }

    /// [`KafkaConfig::from_env`], the group from `KAFKA_GROUP_ID` and the topic prefix from
    /// `KAFKA_TOPIC_PREFIX` (empty when unset).
    ///
    /// # Errors
    /// [`ConfigError::MissingBootstrapServers`], or [`ConfigError::MissingGroupId`] when
    /// `KAFKA_GROUP_ID` is unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = KafkaConfig::from_env()?;
        let group = std::env::var(GROUP_ID_ENV)
            .ok()
            .filter(|group| !group.trim().is_empty())
            .ok_or(ConfigError::MissingGroupId)?;
        let prefix = std::env::var(TOPIC_PREFIX_ENV).unwrap_or_default();
        Ok(Self::new(config, group).topic_prefix(prefix))
    }

    /// Puts `prefix` before every subscribed topic name (not before dead-letter topics named
    /// with [`DeadLetterRoute::Topic`]).
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// Subscribes to `topics` (added to any subscribed before).
    pub fn subscribe<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Sets a librdkafka consumer setting (`session.timeout.ms`, `auto.offset.reset`, ...);
    /// automatic commits and offset storing stay off whatever is set.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config = self.config.set(name, value);
        self
    }

    /// Where to send dead letters (`<topic>.dlq` by default).
    pub fn dead_letters(mut self, route: DeadLetterRoute) -> Self {
        self.dead_letters = route;
        self
    }

    /// Creates the consumer, joins the group and subscribes.
    ///
    /// # Errors
    /// [`ConfigError::Client`] when librdkafka refuses the configuration or the subscription.
    pub fn build(self) -> Result<KafkaConsumer, ConfigError> {
        let mut client = self.config.client_config();
        for (name, value) in DEFAULTS {
            if !self.config.settings.contains_key(name) {
                client.set(name, value);
            }
        }
        for (name, value) in ENFORCED {
            client.set(name, value);
        }
        client.set("group.id", &self.group_id);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let context = GroupContext {
            tracker: Arc::clone(&tracker),
        };
        let consumer = StreamConsumer::from_config_and_context(&client, context)
            .map_err(ConfigError::Client)?;
        let topics: Vec<String> = self
            .topics
            .iter()
            .map(|topic| format!("{}{topic}", self.topic_prefix))
            .collect();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(ConfigError::Client)?;
        let dead_letters = DeadLetters::new(&self.config, self.dead_letters, &self.group_id)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            tracker,
            dead_letters,
            group_id: self.group_id,
            pending: None,
        })
    }
}
