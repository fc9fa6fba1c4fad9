//! Configuring and creating a [`KafkaConsumer`].

use std::sync::{Arc, Mutex};

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};

use super::KafkaConsumer;
use super::context::GroupContext;
use super::track::Tracker;
use crate::config::{ConfigError, KafkaConfig, Role};
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

/// Settings applied unless the configuration sets them: a preset that works on Apache Kafka
/// and on the test broker alike (docs/kafka.md gives the reasons).
///
/// - `auto.offset.reset=earliest`: a new group reads what was published before it joined.
/// - `fetch.wait.max.ms=50` bounds how long the broker may hold a fetch that found nothing new.
///   Apache Kafka answers a waiting fetch as soon as a record arrives, but some Kafka-protocol
///   brokers (tansu among them) answer only when the wait runs out, so librdkafka's 500 ms
///   became the delivery delay: 50 ms keeps it small, at the cost of up to 20 empty fetches a
///   second per broker while idle.
/// - `session.timeout.ms=6000` (the smallest Apache Kafka accepts by default) and
///   `heartbeat.interval.ms=1000`: librdkafka's 45 s session means a member that died holds
///   its partitions for up to 45 s; and the test broker holds every join for half a session,
///   so a new group received nothing for about 23 s with the defaults (3 s with these).
pub(crate) const DEFAULTS: [(&str, &str); 4] = [
    ("auto.offset.reset", "earliest"),
    ("fetch.wait.max.ms", "50"),
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
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
    /// with [`DeadLetterRoute::Topic`]) and before the group id, so that deployments sharing a
    /// broker never share a consumer group.
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
        let mut client = self.config.client_config_for(Role::Consumer);
        for (name, value) in DEFAULTS {
            if !self.config.settings.contains_key(name) {
                client.set(name, value);
            }
        }
        for (name, value) in ENFORCED {
            client.set(name, value);
        }
        // The group is namespaced like the topics: deployments sharing a broker never share a
        // group (a member joining or dying in one would rebalance the other).
        let group_id = format!("{}{}", self.topic_prefix, self.group_id);
        client.set("group.id", &group_id);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let context = GroupContext {
            tracker: Arc::clone(&tracker),
            closing: std::sync::atomic::AtomicBool::new(false),
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
        let dead_letters = DeadLetters::new(&self.config, self.dead_letters, &group_id)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
            tracker,
            dead_letters,
            group_id,
            pending: None,
            waker: Mutex::new(None),
            in_flight: Arc::default(),
        })
    }
}
