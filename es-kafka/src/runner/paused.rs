//! Partitions held paused at a failing message, by policy, until an operator resumes them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use es_core::BoxError;
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

type Key = (String, String, u32);

/// An in-memory [`PausedPartitions`] store (lost on restart); clones share it.
///
/// ```
/// use es_kafka::{MemoryPausedPartitions, PausedPartition, PausedPartitions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), es_kafka::PausedPartitionsError> {
/// let store = MemoryPausedPartitions::new();
/// store.pause(PausedPartition::new("billing", "orders", 3, 41, uuid::Uuid::nil(), "db down")).await?;
/// assert_eq!(store.list("billing").await?[0].offset, 41);
/// store.resume("billing", "orders", 3).await?;
/// assert!(store.list("billing").await?.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryPausedPartitions {
    paused: Arc<Mutex<BTreeMap<Key, PausedPartition>>>,
}

impl MemoryPausedPartitions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<Key, PausedPartition>) -> T) -> T {
        f(&mut self.paused.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl PausedPartitions for MemoryPausedPartitions {
    async fn pause(&self, paused: PausedPartition) -> Result<(), PausedPartitionsError> {
        let key = (paused.group.clone(), paused.topic.clone(), paused.partition);
        self.with(|map| map.insert(key, paused));
        Ok(())
    }

    async fn resume(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), PausedPartitionsError> {
        let key = (group.to_owned(), topic.to_owned(), partition);
        self.with(|map| map.remove(&key));
        Ok(())
    }

    async fn list(&self, group: &str) -> Result<Vec<PausedPartition>, PausedPartitionsError> {
        Ok(self.with(|map| {
            map.values()
                .filter(|paused| paused.group == group)
                .cloned()
                .collect()
        }))
    }
}
