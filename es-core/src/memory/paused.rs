//! [`MemoryPausedPartitions`]: paused consumer partitions kept in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::paused::{PausedPartition, PausedPartitions, PausedPartitionsError};

type Key = (String, String, u32);

/// An in-memory [`PausedPartitions`] store (lost on restart); clones share it.
///
/// ```
/// use es_core::memory::MemoryPausedPartitions;
/// use es_core::{PausedPartition, PausedPartitions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), es_core::PausedPartitionsError> {
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
