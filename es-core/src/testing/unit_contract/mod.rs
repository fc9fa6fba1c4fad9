//! The unit-of-work contract: store transactions (several streams, outbox messages and
//! records of handled messages committing together or not at all, streams locked first) and
//! messages handled as commands exactly once. Every [`TransactionalStore`] runs it (see
//! [`unit_contract_tests!`](crate::unit_contract_tests)).

mod handlers;
mod transactions;

pub use handlers::{
    concurrent_duplicates_apply_once, concurrent_messages_to_one_aggregate_all_apply,
    duplicate_delivery_has_no_effect, late_stream_handler_runs_again_and_commits_once,
    redelivery_after_a_crash_has_no_effect, rejected_command_is_acknowledged_with_its_reply,
};
pub use transactions::{
    conflicting_unit_runs_again, dropped_transaction_writes_nothing,
    late_stream_is_refused_then_locked_by_a_rerun, multi_stream_transaction_commits_together,
    multi_stream_unit_rolls_back_entirely, transaction_reads_its_own_writes,
};

use std::time::Duration;

use crate::ids::Position;
use crate::outbox::{OutboxMessage, OutboxSource};
use crate::transaction::TransactionalStore;

/// What a store must implement to run the unit-of-work contract.
pub trait UnitContractStore: TransactionalStore + OutboxSource {}

impl<S: TransactionalStore + OutboxSource> UnitContractStore for S {}

/// Generates one `#[tokio::test]` per unit-of-work property; `$new_store` is an expression
/// evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::unit_contract_tests!(fresh_pg_store());
/// ```
#[macro_export]
macro_rules! unit_contract_tests {
    ($new_store:expr) => {
        $crate::unit_contract_tests!(@each $new_store;
            multi_stream_transaction_commits_together,
            dropped_transaction_writes_nothing,
            multi_stream_unit_rolls_back_entirely,
            late_stream_is_refused_then_locked_by_a_rerun,
            transaction_reads_its_own_writes,
            conflicting_unit_runs_again,
            duplicate_delivery_has_no_effect,
            concurrent_duplicates_apply_once,
            concurrent_messages_to_one_aggregate_all_apply,
            redelivery_after_a_crash_has_no_effect,
            rejected_command_is_acknowledged_with_its_reply,
            late_stream_handler_runs_again_and_commits_once
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::unit_contract::$property($new_store.await).await;
            }
        )+
    };
}

/// Every outbox message of `store` once at least `expected` are readable (readers of a
/// gap-safe outbox may wait for unrelated transactions of other tests to end), or after 10 s.
pub(crate) async fn outbox_messages<S: OutboxSource>(
    store: &S,
    expected: usize,
) -> Vec<OutboxMessage> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let batch = store
            .read_outbox(Position::START, 10_000)
            .await
            .expect("outbox read");
        let messages: Vec<_> = batch.messages.into_iter().map(|m| m.message).collect();
        if messages.len() >= expected || tokio::time::Instant::now() >= deadline {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
