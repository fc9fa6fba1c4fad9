//! The es-core event store contract against the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

es_core::store_contract_tests!(common::fresh_store());

mod unit {
    use super::common;

    es_core::unit_contract_tests!(common::fresh_store());
}
