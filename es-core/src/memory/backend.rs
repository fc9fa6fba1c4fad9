//! The in-memory backend as a whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{
    MemoryCheckpointStore, MemoryEventStore, MemoryLeases, MemoryPausedPartitions, MemorySagaStore,
    lock,
};
use crate::backend::Backend;
use crate::error::BoxError;

/// Every port in memory ([`Backend`]): one [`MemoryEventStore`] per context, each with its
/// saga store writing to the same outbox, checkpoints and paused partitions per context, and
/// leases shared by every clone. Clones share everything.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    contexts: Arc<Mutex<HashMap<String, Context>>>,
    leases: MemoryLeases,
}

#[derive(Debug, Clone)]
struct Context {
    store: MemoryEventStore,
    checkpoints: MemoryCheckpointStore,
    sagas: MemorySagaStore,
    paused: MemoryPausedPartitions,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    /// The context that owns `store` (made with it).
    fn context_of(&self, store: &MemoryEventStore) -> Context {
        let contexts = lock(&self.contexts);
        contexts
            .values()
            .find(|context| context.store.shares_state_with(store))
            .cloned()
            .unwrap_or_else(|| Context::around(store.clone()))
    }
}

impl Context {
    fn around(store: MemoryEventStore) -> Self {
        let sagas = MemorySagaStore::new()
            .with_outbox(store.outbox().clone())
            .with_signal(store.append_signal().clone());
        Self {
            store,
            checkpoints: MemoryCheckpointStore::new(),
            sagas,
            paused: MemoryPausedPartitions::new(),
        }
    }
}

impl Backend for MemoryBackend {
    type Store = MemoryEventStore;
    type Checkpoints = MemoryCheckpointStore;
    type Sagas = MemorySagaStore;
    type PausedPartitions = MemoryPausedPartitions;
    type Leases = MemoryLeases;

    async fn store(&self, context: &str) -> Result<MemoryEventStore, BoxError> {
        let mut contexts = lock(&self.contexts);
        let context = contexts
            .entry(context.to_owned())
            .or_insert_with(|| Context::around(MemoryEventStore::new()));
        Ok(context.store.clone())
    }

    fn checkpoints(&self, store: &MemoryEventStore) -> MemoryCheckpointStore {
        self.context_of(store).checkpoints
    }

    fn sagas(&self, store: &MemoryEventStore) -> MemorySagaStore {
        self.context_of(store).sagas
    }

    fn paused_partitions(&self, store: &MemoryEventStore) -> MemoryPausedPartitions {
        self.context_of(store).paused
    }

    fn leases(&self, _: &MemoryEventStore) -> MemoryLeases {
        self.leases.clone()
    }
}
