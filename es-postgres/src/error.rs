//! Errors of the PostgreSQL backend.

use es_core::{BoxError, StoreError, StreamId};
use tokio_postgres::error::SqlState;

/// Failure specific to the PostgreSQL backend.
///
/// Port methods return the es-core error of their concern; a `PgError` then travels inside
/// its `Backend` variant and can be recovered with [`PgError::find`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A schema name that is not a plain identifier.
    #[error(
        "invalid schema name {0:?}: use letters, digits and underscores, at most 63 bytes, not starting with a digit"
    )]
    InvalidSchema(String),
    /// Configuration that cannot be used.
    #[error("invalid PostgreSQL configuration: {0}")]
    Config(String),
    /// No connection could be had from the pool.
    #[error("no PostgreSQL connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The server or the connection failed.
    #[error("PostgreSQL error: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A migration failed; nothing of it was applied.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// The migration's number.
        version: i32,
        /// Its file name.
        name: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The append ran in a transaction that is not READ COMMITTED: after waiting for the
    /// stream's lock it would read a stale version. Pools built by [`PgConfig`](crate::PgConfig)
    /// set it; a pool passed to `with_pool` must too.
    #[error(
        "appends need READ COMMITTED transactions (found another isolation level); set default_transaction_isolation = 'read committed' for the store's sessions"
    )]
    ReadCommittedRequired,
    /// A value PostgreSQL cannot store (a NUL character in text or JSON, a number out of
    /// range), refused before anything was sent.
    #[error("cannot store {what} for stream {stream}: {reason}")]
    Unstorable {
        /// The stream appended to.
        stream: StreamId,
        /// Which value.
        what: String,
        /// Why.
        reason: &'static str,
    },
    /// The database's transaction ids went backwards (for example a dump restored into a new
    /// cluster): reading on would silently skip events.
    #[error(
        "the global log's transaction ids went backwards (stored up to {stored}, the server is at {server}); readers refuse to continue rather than skip events. Reset reader checkpoints after a restore"
    )]
    TransactionIdRegression {
        /// The highest transaction id found in the log or a checkpoint.
        stored: u64,
        /// The server's next transaction id.
        server: u64,
    },
    /// A number too large for PostgreSQL's `bigint` (a version or position above `i64::MAX`).
    #[error("{what} {value} does not fit in a PostgreSQL bigint")]
    OutOfRange {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: u64,
    },
    /// A stored row that does not decode.
    #[error("corrupt row in {table} at position {position}: {reason}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's position.
        position: i64,
        /// What is wrong.
        reason: String,
    },
}

impl PgError {
    /// The `PgError` inside a store error, if any.
    pub fn find(error: &StoreError) -> Option<&PgError> {
        match error {
            StoreError::Backend(inner) => inner.downcast_ref::<PgError>(),
            _ => None,
        }
    }

    /// The SQLSTATE of the server error behind this one, if any.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            PgError::Postgres(error) | PgError::Migration { source: error, .. } => error.code(),
            _ => None,
        }
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> Self {
        StoreError::Backend(Box::new(error))
    }
}

pub(crate) fn backend(error: impl Into<PgError>) -> StoreError {
    StoreError::Backend(Box::new(error.into()) as BoxError)
}

/// Boxes a backend failure for the `Backend` variant of an es-core error.
pub(crate) fn boxed(error: impl Into<PgError>) -> BoxError {
    Box::new(error.into())
}

/// `value` as a `bigint`, or [`PgError::OutOfRange`].
pub(crate) fn to_bigint(what: &'static str, value: u64) -> Result<i64, PgError> {
    i64::try_from(value).map_err(|_| PgError::OutOfRange { what, value })
}

/// A `bigint` read back as the `u64` it was written from (never negative).
pub(crate) fn from_bigint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The server's message and SQLSTATE when there is one (the driver's own text says only
/// "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => error.to_string(),
    }
}
