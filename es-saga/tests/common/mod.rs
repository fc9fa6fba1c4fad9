//! Test support: a fresh, migrated PostgreSQL schema per test.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../../../es-postgres/tests/common/test_lock.rs"]
pub mod test_lock;

use es_postgres::{PgConfig, PgEventStore};

/// The database URL, or a panic saying how to start PostgreSQL. From the first call the test
/// holds the suite's lock shared (see [`test_lock`]); `alone_*` tests call [`alone`] first.
pub fn database_url() -> String {
    let url = es_postgres::database_url().unwrap_or_else(|error| panic!("{error}"));
    test_lock::hold_shared();
    url
}

/// Makes the test hold the suite's lock exclusively until it ends: the first line of every
/// `alone_*` test (see [`test_lock::alone`]).
pub fn alone() {
    test_lock::alone();
}

/// A unique schema name; `scripts/test` drops every `es_test_*` schema when the run ends.
pub fn schema_name() -> String {
    format!("es_test_{}", uuid::Uuid::new_v4().simple())
}

/// A store in a fresh, migrated schema.
pub async fn fresh_store() -> PgEventStore {
    let config = PgConfig::new(database_url())
        .schema(schema_name())
        .pool_size(10);
    let store = PgEventStore::connect(&config).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.unwrap_or_else(|error| {
        panic!(
            "cannot migrate a test schema: {error}; is PostgreSQL running? `scripts/test` starts it"
        )
    });
    store
}
