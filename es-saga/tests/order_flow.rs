#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The order saga on the in-memory store: the happy path, every compensation path, and a
//! consumer loop driving the runner through the in-memory bus.

mod support;

use std::time::Duration;

use es_core::memory::{MemoryBus, MemorySagaStore};
use es_core::{Consumer, MessageHandler, OutboxSource, Position, Publisher};
use es_saga::{Handled, SagaRunner};
use support::*;

fn runner() -> SagaRunner<OrderSaga, MemorySagaStore> {
    SagaRunner::new(OrderSaga, MemorySagaStore::new()).with_command_topic("commands")
}

#[tokio::test]
async fn happy_path_reserves_pays_ships_and_completes() {
    let runner = runner();
    let sent = drive(&runner, placed("o-1", 42), Outcome::Ships, false).await;
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "RequestPayment",
            "RequestShipment",
            "RecordShipment"
        ]
    );
    assert!(
        sent.iter()
            .all(|c| c.partition_key == "o-1" && c.topic.as_deref() == Some("commands"))
    );
    assert_eq!(sent[1].payload["amount"], 42);
    let view = runner.instance("o-1").await.unwrap().unwrap();
    assert_terminal(&view, &sent, Outcome::Ships);
    let history = runner.history("o-1").await.unwrap();
    let statuses: Vec<Status> = history.iter().map(|v| v.state.status).collect();
    assert_eq!(
        statuses,
        [
            Status::Reserving,
            Status::Paying,
            Status::Shipping,
            Status::Shipped
        ]
    );
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // The commands reached the outbox with the commits.
    let outbox = runner
        .store()
        .read_outbox(Position::START, 100)
        .await
        .unwrap();
    assert_eq!(outbox.messages.len(), 4);
    // A completed order's deadlines are all gone.
    use es_core::DeadlineStore;
    let far = chrono::Utc::now() + chrono::TimeDelta::days(1);
    assert!(
        runner
            .store()
            .claim_due(far, Duration::from_secs(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn stock_unavailable_cancels_without_compensation() {
    let runner = runner();
    let sent = drive(&runner, placed("o-2", 5), Outcome::OutOfStock, false).await;
    assert_eq!(types(&sent), ["ReserveStock", "CancelOrder"]);
    let view = runner.instance("o-2").await.unwrap().unwrap();
    assert_eq!(view.state.cancel_reason.as_deref(), Some("OutOfStock"));
    assert_terminal(&view, &sent, Outcome::OutOfStock);
}

#[tokio::test]
async fn payment_failure_releases_stock_and_cancels() {
    let runner = runner();
    let sent = drive(&runner, placed("o-3", 5), Outcome::PaymentFails, false).await;
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "RequestPayment",
            "ReleaseStock",
            "CancelOrder"
        ]
    );
    assert_terminal(
        &runner.instance("o-3").await.unwrap().unwrap(),
        &sent,
        Outcome::PaymentFails,
    );
}

#[tokio::test]
async fn shipment_failure_refunds_then_releases_in_reverse_order() {
    let runner = runner();
    let sent = drive(&runner, placed("o-4", 5), Outcome::ShipmentFails, false).await;
    assert_eq!(
        types(&sent),
        [
            "ReserveStock",
            "RequestPayment",
            "RequestShipment",
            "RefundPayment",
            "ReleaseStock",
            "CancelOrder"
        ]
    );
    let view = runner.instance("o-4").await.unwrap().unwrap();
    assert_eq!(view.state.steps.compensated, ["payment", "stock"]);
    assert_terminal(&view, &sent, Outcome::ShipmentFails);
}

#[tokio::test]
async fn customer_cancellation_before_shipment_refunds_and_releases() {
    let runner = runner();
    runner.handle(&placed("o-5", 5)).await.unwrap();
    runner
        .handle(&StockReserved::new("o-5").message())
        .await
        .unwrap();
    runner
        .handle(&PaymentCompleted::new("o-5").message())
        .await
        .unwrap();
    let Handled::Committed {
        commands,
        completed,
        ..
    } = runner
        .handle(&CancellationRequested::new("o-5").message())
        .await
        .unwrap()
    else {
        panic!("the cancellation commits");
    };
    assert!(completed);
    assert_eq!(
        types(&commands),
        ["RefundPayment", "ReleaseStock", "CancelOrder"]
    );
    // A second cancellation request (a new message) compensates nothing again.
    let Handled::Committed { commands, .. } = runner
        .handle(&CancellationRequested::new("o-5").message())
        .await
        .unwrap()
    else {
        panic!("a late message is still decided");
    };
    assert!(commands.is_empty());
}

#[tokio::test]
async fn customer_cancellation_before_any_reply_only_cancels() {
    let runner = runner();
    runner.handle(&placed("o-6", 5)).await.unwrap();
    let Handled::Committed { commands, .. } = runner
        .handle(&CancellationRequested::new("o-6").message())
        .await
        .unwrap()
    else {
        panic!("the cancellation commits");
    };
    assert_eq!(types(&commands), ["CancelOrder"]);
    // The stock reservation answered after the cancellation is released.
    let Handled::Committed { commands, .. } = runner
        .handle(&StockReserved::new("o-6").message())
        .await
        .unwrap()
    else {
        panic!("a late reply is decided");
    };
    assert_eq!(types(&commands), ["ReleaseStock"]);
}

#[tokio::test]
async fn unrelated_messages_are_ignored() {
    let runner = runner();
    let other = es_core::OutboxMessage::new(
        "InvoiceSent",
        "o-7",
        serde_json::json!({ "orderId": "o-7" }),
    );
    assert_eq!(runner.handle(&other).await.unwrap(), Handled::Ignored);
    assert!(runner.instance("o-7").await.unwrap().is_none());
}

/// Copies new outbox messages to the bus; returns the new position.
async fn relay(store: &MemorySagaStore, bus: &MemoryBus, after: Position) -> Position {
    let batch = store.read_outbox(after, 100).await.unwrap();
    let messages: Vec<_> = batch.messages.iter().map(|m| m.message.clone()).collect();
    bus.publish(&messages).await.unwrap();
    batch.messages.last().map_or(after, |m| m.position)
}

#[tokio::test]
async fn a_consumer_loop_drives_the_runner_through_the_bus() {
    let store = MemorySagaStore::new();
    let runner = SagaRunner::new(OrderSaga, store.clone()).with_command_topic("commands");
    let bus = MemoryBus::new()
        .with_default_topic("replies")
        .with_duplicate_delivery(true);
    let mut sagas = bus.consumer("order-saga", &["orders", "replies"]);
    let mut services = bus.consumer("services", &["commands"]);
    bus.publish(&[placed("o-8", 9).with_topic("orders")])
        .await
        .unwrap();

    let mut relayed = Position::START;
    // The services deduplicate commands on their message id, as a receiver must.
    let mut answered = std::collections::HashSet::new();
    for _ in 0..200 {
        while let Ok(Ok(delivery)) =
            tokio::time::timeout(Duration::from_millis(20), sagas.recv()).await
        {
            match MessageHandler::handle(&runner, &delivery).await {
                Ok(()) => sagas.commit(&delivery).await.unwrap(),
                Err(error) if error.is_transient() => sagas.retry(&delivery).await.unwrap(),
                Err(error) => panic!("{error}"),
            }
        }
        relayed = relay(&store, &bus, relayed).await;
        while let Ok(Ok(delivery)) =
            tokio::time::timeout(Duration::from_millis(20), services.recv()).await
        {
            if answered.insert(delivery.message.message_id) {
                let replies = respond(&delivery.message, Outcome::Ships);
                bus.publish(&replies).await.unwrap();
            }
            services.commit(&delivery).await.unwrap();
        }
        if runner
            .instance("o-8")
            .await
            .unwrap()
            .is_some_and(|v| v.completed)
        {
            break;
        }
    }
    let view = runner.instance("o-8").await.unwrap().unwrap();
    assert_eq!(view.state.status, Status::Shipped);
    // Every message was delivered twice; each decision was committed once.
    assert_eq!(view.version, 4);
    let outbox = store.read_outbox(Position::START, 100).await.unwrap();
    assert_eq!(outbox.messages.len(), 4);
}
