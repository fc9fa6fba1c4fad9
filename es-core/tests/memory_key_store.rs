//! The in-memory key store against the key-store contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::privacy::MemoryKeyStore;

async fn fresh() -> MemoryKeyStore {
    MemoryKeyStore::new()
}

es_core::key_store_contract_tests!(fresh());
