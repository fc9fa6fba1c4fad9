//! The es-core saga and deadline store contracts against PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_postgres::PgSagaStore;

async fn fresh() -> PgSagaStore {
    common::fresh_store().await.saga_store()
}

es_core::saga_contract_tests!(fresh());
