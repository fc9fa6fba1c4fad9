//! The paused-partitions contract against the in-memory store.

use es_core::memory::MemoryPausedPartitions;

async fn fresh() -> MemoryPausedPartitions {
    MemoryPausedPartitions::new()
}

es_core::paused_partitions_contract_tests!(fresh());
