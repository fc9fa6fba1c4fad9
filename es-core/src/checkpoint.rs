//! Named checkpoints written by compare-and-set, so a deposed leader cannot move one.

use std::future::Future;

use crate::error::BoxError;
use crate::ids::Position;

/// Failure to move a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint is not where the writer believed: another node moved it.
    #[error("checkpoint {name:?} is stale: expected {expected:?}, found {actual:?}")]
    Stale {
        /// The checkpoint's name.
        name: String,
        /// What the writer expected.
        expected: Option<Position>,
        /// What is stored.
        actual: Option<Position>,
    },
    /// The backend failed.
    #[error("checkpoint backend failed: {0}")]
    Backend(#[source] BoxError),
}

/// Named positions (a projection's, a relay's), each moved only by compare-and-set.
pub trait CheckpointStore: Send + Sync {
    /// The stored position, `None` when the name has never been checkpointed.
    ///
    /// # Errors
    /// [`CheckpointError::Backend`] when the backend fails.
    fn load_checkpoint(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Position>, CheckpointError>> + Send;

    /// Moves `name` from `expected` to `new`, or fails with [`CheckpointError::Stale`] when
    /// it is not at `expected` (another node took over: the caller must stop).
    ///
    /// # Errors
    /// [`CheckpointError::Stale`] or [`CheckpointError::Backend`].
    fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}
