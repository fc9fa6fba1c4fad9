//! Where the broker is.

/// The environment variable that lists the Kafka bootstrap servers.
pub const BOOTSTRAP_SERVERS_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

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
