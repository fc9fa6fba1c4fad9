//! The event store contract: every backend's tests run these properties against a fresh
//! store each (see [`store_contract_tests!`](crate::store_contract_tests)).

mod append;
mod delete;
mod log;
mod repository;

pub use append::{
    concurrent_appends_have_one_winner, expected_version_cases, idempotent_reappend,
    long_streams_read_in_order, read_your_writes, rejected_appends_write_nothing,
    stream_ids_round_trip,
};
pub use delete::{hard_delete_erases_everything, soft_delete_refuses_appends};
pub use log::{global_log_order_and_resumption, subscription_catch_up_then_live};
pub use repository::{
    decode_errors_name_the_event, snapshots_used_and_invalidated, upcasting_on_read,
};

use serde_json::json;

use crate::clock::SystemClock;
use crate::event::NewEvent;
use crate::ids::StreamId;
use crate::metadata::CommandContext;
use crate::outbox::OutboxSource;
use crate::snapshot::SnapshotStore;
use crate::store::EventStore;

/// What a store must implement to run the whole contract.
pub trait ContractStore: EventStore + SnapshotStore + OutboxSource + Clone + 'static {}

impl<S: EventStore + SnapshotStore + OutboxSource + Clone + 'static> ContractStore for S {}

/// Runs every property, each on a fresh store from `new_store`.
pub async fn run_all<S, F, Fut>(new_store: F)
where
    S: ContractStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    concurrent_appends_have_one_winner(new_store().await).await;
    expected_version_cases(new_store().await).await;
    long_streams_read_in_order(new_store().await).await;
    idempotent_reappend(new_store().await).await;
    read_your_writes(new_store().await).await;
    rejected_appends_write_nothing(new_store().await).await;
    stream_ids_round_trip(new_store().await).await;
    global_log_order_and_resumption(new_store().await).await;
    subscription_catch_up_then_live(new_store().await).await;
    upcasting_on_read(new_store().await).await;
    snapshots_used_and_invalidated(new_store().await).await;
    decode_errors_name_the_event(new_store().await).await;
    soft_delete_refuses_appends(new_store().await).await;
    hard_delete_erases_everything(new_store().await).await;
}

/// Generates one `#[tokio::test]` per store-contract property; `$new_store` is an expression
/// evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::store_contract_tests!(fresh_pg_store());
/// ```
#[macro_export]
macro_rules! store_contract_tests {
    ($new_store:expr) => {
        $crate::store_contract_tests!(@each $new_store;
            concurrent_appends_have_one_winner,
            expected_version_cases,
            long_streams_read_in_order,
            idempotent_reappend,
            read_your_writes,
            rejected_appends_write_nothing,
            stream_ids_round_trip,
            global_log_order_and_resumption,
            subscription_catch_up_then_live,
            upcasting_on_read,
            snapshots_used_and_invalidated,
            decode_errors_name_the_event,
            soft_delete_refuses_appends,
            hard_delete_erases_everything
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::store_contract::$property($new_store.await).await;
            }
        )+
    };
}

pub(crate) fn stream(prefix: &str) -> StreamId {
    StreamId::new(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())).expect("valid stream id")
}

pub(crate) fn event(amount: i64) -> NewEvent {
    NewEvent {
        event_type: "TallyAdded".to_owned(),
        schema_version: 1,
        data: json!({ "amount": amount }),
        metadata: CommandContext::new().metadata(&SystemClock),
    }
}

pub(crate) fn events(amounts: std::ops::Range<i64>) -> Vec<NewEvent> {
    amounts.map(event).collect()
}
