//! Failures of the projection daemon and its administration.

use es_core::{CheckpointError, ProjectionError, StoreError};

use crate::error::PgError;

/// Failure of the projection daemon or of an administrative call (status, resume, rebuild).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// No projection of this name is known (registered here or recorded in the database).
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    /// Two projections registered under one name.
    #[error("projection {0:?} is registered twice")]
    DuplicateProjection(String),
    /// `resume` of a projection that is not paused.
    #[error("projection {0:?} is not paused")]
    NotPaused(String),
    /// `rebuild` of a projection already rebuilding.
    #[error("projection {name:?} is already rebuilding version {version}")]
    AlreadyRebuilding {
        /// The projection.
        name: String,
        /// The version being rebuilt.
        version: u32,
    },
    /// The daemon was already started.
    #[error("the projection daemon is already running")]
    AlreadyStarted,
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A projection failed to prepare its read model.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The database failed.
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl From<tokio_postgres::Error> for DaemonError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Postgres(error.into())
    }
}

impl From<deadpool_postgres::PoolError> for DaemonError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::Postgres(error.into())
    }
}
