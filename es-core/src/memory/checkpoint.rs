//! The in-memory checkpoint store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lock;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::ids::Position;

/// An in-memory [`CheckpointStore`]: named positions moved by compare-and-set. Clones share
/// the same checkpoints.
///
/// ```
/// use es_core::memory::MemoryCheckpointStore;
/// use es_core::{CheckpointError, CheckpointStore, Position};
///
/// # futures::executor::block_on(async {
/// let store = MemoryCheckpointStore::new();
/// store.compare_and_set_checkpoint("relay", None, Position::new(1, 1)).await?;
/// let stale = store.compare_and_set_checkpoint("relay", None, Position::new(2, 2)).await;
/// assert!(matches!(stale, Err(CheckpointError::Stale { .. })));
/// assert_eq!(store.load_checkpoint("relay").await?, Some(Position::new(1, 1)));
/// # Ok::<(), CheckpointError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    checkpoints: Arc<Mutex<HashMap<String, Position>>>,
}

impl MemoryCheckpointStore {
    /// A store with no checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        Ok(lock(&self.checkpoints).get(name).copied())
    }

    async fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        let mut checkpoints = lock(&self.checkpoints);
        let actual = checkpoints.get(name).copied();
        if actual != expected {
            return Err(CheckpointError::Stale {
                name: name.to_owned(),
                expected,
                actual,
            });
        }
        checkpoints.insert(name.to_owned(), new);
        Ok(())
    }
}
