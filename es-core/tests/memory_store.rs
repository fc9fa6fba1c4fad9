//! The event store contract against the in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::memory::MemoryEventStore;

async fn fresh() -> MemoryEventStore {
    MemoryEventStore::new()
}

es_core::store_contract_tests!(fresh());

mod unit {
    use super::fresh;

    es_core::unit_contract_tests!(fresh());
}
