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
