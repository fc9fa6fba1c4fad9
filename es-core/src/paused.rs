//! Consumer partitions held paused at a failing message, by policy, until an operator
//! resumes them: the record and the port that persists it (in memory:
//! [`MemoryPausedPartitions`](crate::memory::MemoryPausedPartitions); on PostgreSQL:
//! `es_postgres::PgPausedPartitions`).

use std::future::Future;

use crate::error::BoxError;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A partition paused at a message its handler kept failing on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PausedPartition {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset of the failing message (where the partition resumes).
    pub offset: u64,
    /// The failing message.
    pub message_id: Uuid,
    /// The handler's last error.
    pub reason: String,
    /// When it was paused.
    pub paused_at: DateTime<Utc>,
}

impl PausedPartition {
    /// A record of `group`'s `topic`/`partition` paused at `offset` (message `message_id`).
    pub fn new(
        group: impl Into<String>,
        topic: impl Into<String>,
        partition: u32,
        offset: u64,
        message_id: Uuid,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            topic: topic.into(),
            partition,
            offset,
            message_id,
            reason: reason.into(),
            paused_at: Utc::now(),
        }
    }
}

/// Failure of a [`PausedPartitions`] store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PausedPartitionsError {
    /// The backend failed.
    #[error("paused-partitions store failed: {0}")]
    Backend(#[source] BoxError),
}

/// Where paused partitions are persisted, so they stay paused across restarts and
/// rebalances, are visible to operators, and can be resumed.
pub trait PausedPartitions: Send + Sync {
    /// Records `paused` (replacing a record of the same group, topic and partition).
    ///
    /// # Errors
    /// [`PausedPartitionsError::Backend`].
    fn pause(
        &self,
        paused: PausedPartition,
    ) -> impl Future<Output = Result<(), PausedPartitionsError>> + Send;

    /// Removes the record of `group`'s `topic`/`partition`; the group's consumers resume it.
    ///
    /// # Errors
    /// [`PausedPartitionsError::Backend`].
    fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> impl Future<Output = Result<(), PausedPartitionsError>> + Send;

    /// Every partition of `group` currently paused.
    ///
    /// # Errors
    /// [`PausedPartitionsError::Backend`].
    fn list(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<PausedPartition>, PausedPartitionsError>> + Send;
}
