//! Connection, pool and schema configuration.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Deserialize;
use tokio_postgres::NoTls;

use crate::error::PgError;

/// Where and how the store connects.
///
/// Loadable from the environment with [`PgConfig::from_env`]: `DATABASE_URL` (required),
/// `ES_PG_SCHEMA` (default `public`), `ES_PG_POOL_SIZE` (default 16),
/// `ES_PG_MAX_EVENT_BYTES` (default 1 MiB).
///
/// TLS: this configuration connects without TLS. To use TLS, build a
/// `deadpool_postgres::Pool` with a TLS connector (for example `tokio-postgres-rustls`) and
/// pass it to [`PgEventStore::with_pool`](crate::PgEventStore::with_pool).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PgConfig {
    /// A `postgres://` URL or a key-value connection string.
    pub url: String,
    /// The schema holding the store's tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// The most pooled connections.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The largest event (JSON data plus metadata) accepted, in bytes.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// How long to wait for a pooled connection.
    #[serde(default = "default_wait", with = "seconds")]
    pub pool_wait: Duration,
}

fn default_schema() -> String {
    "public".to_owned()
}
fn default_pool_size() -> usize {
    16
}
fn default_max_event_bytes() -> usize {
    1024 * 1024
}
fn default_wait() -> Duration {
    Duration::from_secs(30)
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        f64::deserialize(d).map(Duration::from_secs_f64)
    }
}

impl PgConfig {
    /// A configuration for `url` with defaults for the rest.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: default_schema(),
            pool_size: default_pool_size(),
            max_event_bytes: default_max_event_bytes(),
            pool_wait: default_wait(),
        }
    }

    /// Sets the schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Sets the pool size.
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets the largest accepted event, in bytes.
    #[must_use]
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }

    /// Reads `DATABASE_URL`, `ES_PG_SCHEMA`, `ES_PG_POOL_SIZE` and `ES_PG_MAX_EVENT_BYTES`.
    ///
    /// # Errors
    /// [`PgError::Config`] when `DATABASE_URL` is missing or a number does not parse.
    pub fn from_env() -> Result<Self, PgError> {
        let url = crate::connect::database_url().map_err(|e| PgError::Config(e.to_string()))?;
        let mut config = Self::new(url);
        if let Ok(schema) = std::env::var("ES_PG_SCHEMA") {
            config.schema = schema;
        }
        if let Ok(size) = std::env::var("ES_PG_POOL_SIZE") {
            config.pool_size = size.parse().map_err(|_| {
                PgError::Config(format!("ES_PG_POOL_SIZE={size:?} is not a number"))
            })?;
        }
        if let Ok(bytes) = std::env::var("ES_PG_MAX_EVENT_BYTES") {
            config.max_event_bytes = bytes.parse().map_err(|_| {
                PgError::Config(format!("ES_PG_MAX_EVENT_BYTES={bytes:?} is not a number"))
            })?;
        }
        Ok(config)
    }

    /// Builds a connection pool (connections open lazily, on first use).
    ///
    /// # Errors
    /// [`PgError::Config`] when the URL does not parse or the pool cannot be built.
    pub fn pool(&self) -> Result<Pool, PgError> {
        let mut pg = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| PgError::Config(format!("DATABASE_URL does not parse: {e}")))?;
        // Appends re-read a stream's version after waiting for its lock, which needs each
        // statement to see the latest commits: sessions run at READ COMMITTED whatever the
        // server, database or role default is.
        let options = match pg.get_options() {
            Some(options) => format!("{options} -c default_transaction_isolation=read\\ committed"),
            None => "-c default_transaction_isolation=read\\ committed".to_owned(),
        };
        pg.options(&options);
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(self.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.pool_wait))
            .create_timeout(Some(self.pool_wait))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))
    }
}

/// A validated schema name and its quoted form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Schema {
    pub(crate) name: String,
    pub(crate) quoted: String,
}

impl Schema {
    pub(crate) fn new(name: &str) -> Result<Self, PgError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(PgError::InvalidSchema(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            quoted: format!("\"{name}\""),
        })
    }

    /// Replaces the placeholders of a SQL text.
    pub(crate) fn render(&self, sql: &str) -> String {
        sql.replace("__SCHEMA__", &self.quoted)
            .replace("__LOCK_NS__", &format!("{}:", self.name))
    }
}
