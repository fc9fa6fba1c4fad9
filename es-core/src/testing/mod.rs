//! Test support for users and backends: the Given/When/Then aggregate harness and the
//! contract suites that every backend's tests run against a real instance.
//!
//! Contract suite functions panic (like `assert!`) when the backend breaks the contract.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod fixture;
mod harness;

pub mod bus_contract;
pub mod checkpoint_contract;
pub mod deadline_contract;
pub mod inbox_contract;
pub mod key_store_contract;
pub mod paused_contract;
pub mod saga_contract;
pub mod store_contract;
pub mod unit_contract;

pub use fixture::{NegativeAmount, Tally, TallyCommand, TallyEvent};
pub use harness::{Given, When, given};
