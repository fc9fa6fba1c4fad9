//! The checkpoint contract against the in-memory checkpoint store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::memory::MemoryCheckpointStore;

async fn fresh() -> MemoryCheckpointStore {
    MemoryCheckpointStore::new()
}

es_core::checkpoint_contract_tests!(fresh());

#[tokio::test]
async fn run_all_properties() {
    es_core::testing::checkpoint_contract::run_all(fresh).await;
}
