#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The order saga on `PgSagaStore`: the happy path, a deadline, and 120 instances whose
//! messages are delivered concurrently and twice.

mod common;
mod support;

use std::time::Duration;

use chrono::TimeDelta;
use es_core::{ManualClock, OutboxSource, Position, SagaStore};
use es_postgres::PgSagaStore;
use es_saga::{DeadlineScheduler, SagaRunner, Tick};
use support::*;

/// The outbox's message types once it shows `expected` messages: the gap-safe read waits
/// for every older transaction in the cluster (other tests' included) to end.
async fn outbox_types(store: &PgSagaStore, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = store.read_outbox(Position::START, 10_000).await.unwrap();
        if batch.messages.len() >= expected || tokio::time::Instant::now() > deadline {
            return batch
                .messages
                .into_iter()
                .map(|m| m.message.message_type)
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn happy_path_on_postgres() {
    let store = common::fresh_store().await.saga_store();
    let runner = SagaRunner::new(OrderSaga, store.clone()).with_command_topic("commands");
    let order = unique_order("pg");
    let sent = drive(&runner, placed(&order, 42), Outcome::Ships, false).await;
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "RequestPayment",
            "RequestShipment",
            "RecordShipment"
        ]
    );
    let view = runner.instance(&order).await.unwrap().unwrap();
    assert_terminal(&view, &sent, Outcome::Ships);
    assert_eq!(runner.history(&order).await.unwrap().len(), 4);
    assert_eq!(outbox_types(&store, sent.len()).await, types(&sent));
}

#[tokio::test]
async fn a_deadline_fires_and_compensates_on_postgres() {
    let store = common::fresh_store().await.saga_store();
    let clock = ManualClock::default();
    let runner = SagaRunner::new(OrderSaga, store.clone()).with_clock(clock.clone());
    let scheduler = DeadlineScheduler::new(store.clone())
        .with_clock(clock.clone())
        .with_lease(Duration::from_secs(30))
        .register(runner.clone());
    let order = unique_order("pg-deadline");
    runner.handle(&placed(&order, 7)).await.unwrap();
    runner
        .handle(&StockReserved::new(&order).message())
        .await
        .unwrap();
    clock.advance(TimeDelta::seconds(30));
    assert_eq!(scheduler.tick().await.unwrap().claimed, 0);
    clock.advance(TimeDelta::seconds(31));
    assert_eq!(
        scheduler.tick().await.unwrap(),
        Tick {
            claimed: 1,
            fired: 1,
            failed: 0
        }
    );
    let view = runner.instance(&order).await.unwrap().unwrap();
    assert_eq!(view.state.status, Status::Cancelled);
    assert!(view.completed && view.awaiting.is_empty());
    // The payment that completes after the cancellation is refunded.
    runner
        .handle(&PaymentCompleted::new(&order).message())
        .await
        .unwrap();
    assert_eq!(
        outbox_types(&store, 5).await,
        [
            "ReserveStock",
            "RequestPayment",
            "ReleaseStock",
            "CancelOrder",
            "RefundPayment"
        ]
    );
    clock.advance(TimeDelta::hours(1));
    assert_eq!(scheduler.tick().await.unwrap().claimed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_instances_with_duplicate_deliveries_on_postgres() {
    let store = common::fresh_store().await.saga_store();
    let runner = SagaRunner::new(OrderSaga, store.clone());
    let mut tasks = Vec::new();
    for i in 0..120 {
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let order = format!("pg-many-{i}");
            let outcome = Outcome::for_index(i);
            let sent = drive(&runner, placed(&order, 10), outcome, true).await;
            (order, outcome, sent)
        }));
    }
    let mut all_sent = 0;
    for task in tasks {
        let (order, outcome, sent) = task.await.unwrap();
        all_sent += sent.len();
        assert_terminal(
            &runner.instance(&order).await.unwrap().unwrap(),
            &sent,
            outcome,
        );
    }
    assert_eq!(store.list(SAGA, Some(true)).await.unwrap().len(), 120);
    assert!(store.list(SAGA, Some(false)).await.unwrap().is_empty());
    assert_eq!(
        outbox_types(&store, all_sent).await.len(),
        all_sent,
        "each command written once"
    );
}
