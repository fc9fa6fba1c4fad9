//! Where the broker is, and how to reach it.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

/// The environment variable that lists the Kafka bootstrap servers.
pub const BOOTSTRAP_SERVERS_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// The prefix of environment variables passed through to librdkafka:
/// `KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`.
pub const SETTINGS_ENV_PREFIX: &str = "KAFKA_CONFIG_";

/// Missing or unusable Kafka configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `KAFKA_BOOTSTRAP_SERVERS` is not set.
    #[error(
        "KAFKA_BOOTSTRAP_SERVERS is not set: start the project's broker with `scripts/broker start` \
         (it prints the variable to export), or run the whole suite through `scripts/test`"
    )]
    MissingBootstrapServers,
    /// `KAFKA_GROUP_ID` is not set (a consumer configured from the environment needs it).
    #[error("KAFKA_GROUP_ID is not set: name the consumer group")]
    MissingGroupId,
    /// librdkafka refused the configuration (an unknown or invalid setting).
    #[error("librdkafka refused the configuration: {0}")]
    Client(#[source] KafkaError),
}

/// The bootstrap servers from `KAFKA_BOOTSTRAP_SERVERS`.
///
/// # Errors
/// [`ConfigError::MissingBootstrapServers`] when the variable is unset or empty.
pub fn bootstrap_servers() -> Result<String, ConfigError> {
    match std::env::var(BOOTSTRAP_SERVERS_ENV) {
        Ok(servers) if !servers.trim().is_empty() => Ok(servers),
        _ => Err(ConfigError::MissingBootstrapServers),
    }
}

/// How to reach a Kafka cluster: bootstrap servers plus librdkafka settings passed through
/// as they are (SASL, TLS, client id, tuning).
///
/// ```
/// use es_kafka::KafkaConfig;
///
/// let config = KafkaConfig::new("broker-1:9093,broker-2:9093")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanism", "SCRAM-SHA-512")
///     .set("sasl.username", "relay")
///     .set("sasl.password", "secret");
/// assert_eq!(config.settings["sasl.mechanism"], "SCRAM-SHA-512");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct KafkaConfig {
    /// `host:port` pairs, comma-separated.
    pub bootstrap_servers: String,
    /// librdkafka settings by name (`security.protocol`, `ssl.ca.location`, ...).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The replication factor of topics made by [`ensure_topics`](crate::ensure_topics)
    /// (default 1; use 3 on a production cluster).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
}

fn default_replication() -> i32 {
    1
}

impl KafkaConfig {
    /// Reaches `bootstrap_servers` with librdkafka's defaults.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            settings: BTreeMap::new(),
            replication_factor: default_replication(),
        }
    }

    /// `KAFKA_BOOTSTRAP_SERVERS`, plus every `KAFKA_CONFIG_*` variable as a librdkafka setting
    /// (the rest of the name lower-cased, `_` read as `.`), plus `KAFKA_REPLICATION_FACTOR`.
    ///
    /// # Errors
    /// [`ConfigError::MissingBootstrapServers`] when `KAFKA_BOOTSTRAP_SERVERS` is unset.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::new(bootstrap_servers()?);
        for (name, value) in std::env::vars() {
            if let Some(setting) = name.strip_prefix(SETTINGS_ENV_PREFIX) {
                config = config.set(setting.to_lowercase().replace('_', "."), value);
            }
        }
        if let Some(factor) = std::env::var("KAFKA_REPLICATION_FACTOR")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.replication_factor = factor;
        }
        Ok(config)
    }

    /// Sets a librdkafka setting.
    #[must_use]
    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(name.into(), value.into());
        self
    }

    /// Sets the replication factor of topics made by [`ensure_topics`](crate::ensure_topics).
    #[must_use]
    pub fn replication_factor(mut self, factor: i32) -> Self {
        self.replication_factor = factor;
        self
    }

    /// The configuration of a client in `role`: the servers and every setting, less those
    /// only the other role reads (librdkafka would ignore them with a `CONFWARN` line at every
    /// start, as it does for consumer settings shared with a producer).
    pub fn client_config_for(&self, role: Role) -> ClientConfig {
        let foreign: &[&str] = match role {
            Role::Producer => CONSUMER_ONLY,
            Role::Consumer => PRODUCER_ONLY,
            Role::Admin => &[],
        };
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.bootstrap_servers);
        for (name, value) in &self.settings {
            if !foreign.contains(&name.as_str()) {
                client.set(name, value);
            }
        }
        client
    }

    /// An rdkafka client configuration with the servers and every setting.
    pub fn client_config(&self) -> ClientConfig {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &self.bootstrap_servers);
        for (name, value) in &self.settings {
            client.set(name, value);
        }
        client
    }
}

/// Which kind of client a configuration is for ([`KafkaConfig::client_config_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A producer (the relay's publisher, the dead-letter publisher).
    Producer,
    /// A consumer group member.
    Consumer,
    /// An admin client (topic creation).
    Admin,
}

/// librdkafka settings only consumers read.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "group.protocol",
    "group.remote.assignor",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "coordinator.query.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
    "fetch.wait.max.ms",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.error.backoff.ms",
    "fetch.queue.backoff.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "isolation.level",
    "check.crcs",
];

/// librdkafka settings only producers read.
const PRODUCER_ONLY: &[&str] = &[
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "transactional.id",
    "transaction.timeout.ms",
    "linger.ms",
    "queue.buffering.max.ms",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "batch.num.messages",
    "batch.size",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "compression.type",
    "compression.codec",
    "compression.level",
    "retries",
    "message.send.max.retries",
    "max.in.flight",
    "max.in.flight.requests.per.connection",
    "partitioner",
    "sticky.partitioning.linger.ms",
    "request.timeout.ms",
];

#[cfg(test)]
mod tests {
    use super::{KafkaConfig, Role};

    #[test]
    fn each_role_gets_only_its_own_and_the_shared_settings() {
        let config = KafkaConfig::new("broker:9092")
            .set("session.timeout.ms", "6000")
            .set("linger.ms", "5")
            .set("security.protocol", "SASL_SSL");
        let producer = config.client_config_for(Role::Producer);
        assert_eq!(producer.get("session.timeout.ms"), None);
        assert_eq!(producer.get("linger.ms"), Some("5"));
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        let consumer = config.client_config_for(Role::Consumer);
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        assert_eq!(consumer.get("bootstrap.servers"), Some("broker:9092"));
        let admin = config.client_config_for(Role::Admin);
        assert_eq!(admin.get("linger.ms"), Some("5"));
    }
}
