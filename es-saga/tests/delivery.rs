#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Duplicate, early and concurrent messages, and a crash between deciding and committing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use es_core::memory::MemorySagaStore;
use es_core::{
    Delivery, HandlerError, MessageHandler, SagaCommit, SagaCommitOutcome, SagaInstance, SagaStore,
    SagaStoreError,
};
use es_saga::{Handled, SagaError, SagaRunner};
use support::*;

fn runner() -> SagaRunner<OrderSaga, MemorySagaStore> {
    SagaRunner::new(OrderSaga, MemorySagaStore::new())
}

fn delivery(message: es_core::OutboxMessage) -> Delivery {
    Delivery {
        message,
        topic: "replies".into(),
        partition: 0,
        offset: 0,
        attempt: 1,
    }
}

#[tokio::test]
async fn a_redelivered_message_is_a_no_op() {
    let runner = runner();
    let order = placed("d-1", 3);
    assert!(matches!(
        runner.handle(&order).await.unwrap(),
        Handled::Committed { version: 1, .. }
    ));
    let reserved = StockReserved::new("d-1").message();
    runner.handle(&reserved).await.unwrap();
    assert_eq!(runner.handle(&order).await.unwrap(), Handled::Duplicate);
    assert_eq!(runner.handle(&reserved).await.unwrap(), Handled::Duplicate);
    let view = runner.instance("d-1").await.unwrap().unwrap();
    assert_eq!((view.version, view.state.status), (2, Status::Paying));
    assert_eq!(runner.store().outbox().read_outbox_len(), 2);
}

trait OutboxLen {
    fn read_outbox_len(&self) -> usize;
}

impl OutboxLen for es_core::memory::MemoryOutbox {
    fn read_outbox_len(&self) -> usize {
        use es_core::OutboxSource;
        futures::executor::block_on(self.read_outbox(es_core::Position::START, 10_000))
            .unwrap()
            .messages
            .len()
    }
}

#[tokio::test]
async fn a_reply_before_its_start_message_is_retried_then_handled() {
    let runner = runner();
    let early = StockReserved::new("d-2").message();
    let error = runner.handle(&early).await.unwrap_err();
    assert!(
        matches!(error, SagaError::NotStarted { ref key, .. } if key == "d-2"),
        "{error}"
    );
    assert!(error.is_transient());
    // Through a consumer it is a transient failure: the consumer retries it later.
    let handled = MessageHandler::handle(&runner, &delivery(early.clone())).await;
    assert!(
        matches!(handled, Err(HandlerError::Transient(_))),
        "{handled:?}"
    );
    assert!(
        runner.instance("d-2").await.unwrap().is_none(),
        "nothing was written"
    );

    runner.handle(&placed("d-2", 3)).await.unwrap();
    let Handled::Committed { commands, .. } = runner.handle(&early).await.unwrap() else {
        panic!("the retried reply is handled once its saga started");
    };
    assert_eq!(types(&commands), ["RequestPayment"]);
}

#[tokio::test]
async fn a_malformed_message_is_a_permanent_failure() {
    let runner = runner();
    let bad = es_core::OutboxMessage::new(
        "OrderPlaced",
        "d-3",
        serde_json::json!({ "orderId": "d-3", "amount": "lots" }),
    );
    let handled = MessageHandler::handle(&runner, &delivery(bad)).await;
    assert!(
        matches!(handled, Err(HandlerError::Permanent(_))),
        "{handled:?}"
    );
}

/// A store whose next commits fail after deciding, as if the process died before committing.
#[derive(Clone)]
struct CrashingStore {
    inner: MemorySagaStore,
    crashes: Arc<AtomicU32>,
}

impl SagaStore for CrashingStore {
    async fn load(&self, saga: &str, key: &str) -> Result<Option<SagaInstance>, SagaStoreError> {
        self.inner.load(saga, key).await
    }
    async fn commit(&self, commit: SagaCommit) -> Result<SagaCommitOutcome, SagaStoreError> {
        let crash = self
            .crashes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if crash {
            return Err(SagaStoreError::backend("connection lost before commit"));
        }
        self.inner.commit(commit).await
    }
    async fn history(&self, saga: &str, key: &str) -> Result<Vec<SagaInstance>, SagaStoreError> {
        self.inner.history(saga, key).await
    }
    async fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> Result<Vec<SagaInstance>, SagaStoreError> {
        self.inner.list(saga, completed).await
    }
}

#[tokio::test]
async fn a_crash_before_commit_then_redelivery_reaches_the_same_outcome() {
    let inner = MemorySagaStore::new();
    let crashes = Arc::new(AtomicU32::new(0));
    let crashing = SagaRunner::new(
        OrderSaga,
        CrashingStore {
            inner: inner.clone(),
            crashes: crashes.clone(),
        },
    );

    let order = placed("d-4", 8);
    let reserved = StockReserved::new("d-4").message();
    crashing.handle(&order).await.unwrap();
    crashes.store(1, Ordering::SeqCst);
    let error = crashing.handle(&reserved).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    drop(crashing);
    let view = SagaRunner::new(OrderSaga, inner.clone())
        .instance("d-4")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (view.version, view.state.status),
        (1, Status::Reserving),
        "nothing committed"
    );
    assert_eq!(inner.outbox().read_outbox_len(), 1);

    // A restarted runner gets the message again and reaches the outcome of a crash-free run.
    let restarted = SagaRunner::new(OrderSaga, inner.clone());
    let Handled::Committed {
        commands, version, ..
    } = restarted.handle(&reserved).await.unwrap()
    else {
        panic!("the redelivery commits");
    };
    assert_eq!((version, types(&commands)), (2, vec!["RequestPayment"]));
    assert_eq!(
        restarted.handle(&reserved).await.unwrap(),
        Handled::Duplicate
    );
    let sent = drive(
        &restarted,
        PaymentCompleted::new("d-4").message(),
        Outcome::Ships,
        false,
    )
    .await;
    assert_eq!(types(&sent), ["RequestShipment", "RecordShipment"]);
    assert_eq!(
        restarted
            .instance("d-4")
            .await
            .unwrap()
            .unwrap()
            .state
            .status,
        Status::Shipped
    );
    assert_eq!(inner.outbox().read_outbox_len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_messages_for_one_instance_are_serialized_by_retries() {
    let runner = runner();
    runner.handle(&placed("d-5", 1)).await.unwrap();
    runner
        .handle(&StockReserved::new("d-5").message())
        .await
        .unwrap();
    // Twenty different cancellation requests and a payment, all at once.
    let mut tasks = Vec::new();
    for i in 0..21 {
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let message = if i == 0 {
                PaymentCompleted::new("d-5").message()
            } else {
                CancellationRequested::new("d-5").message()
            };
            handle_retrying(&runner, &message).await
        }));
    }
    let mut commands = Vec::new();
    for task in tasks {
        if let Handled::Committed { commands: sent, .. } = task.await.unwrap() {
            commands.extend(sent);
        }
    }
    let view = runner.instance("d-5").await.unwrap().unwrap();
    assert_eq!(
        view.version,
        2 + 21,
        "every message committed once, in turn"
    );
    assert_eq!(view.state.status, Status::Cancelled);
    let count = |ty: &str| commands.iter().filter(|c| c.message_type == ty).count();
    assert_eq!(count("CancelOrder"), 1);
    assert_eq!(count("ReleaseStock"), 1);
    // Paid before or after the cancellation, the payment is refunded exactly once.
    assert_eq!(count("RefundPayment"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_instances_all_reach_a_terminal_state() {
    let runner = runner();
    let mut tasks = Vec::new();
    for i in 0..1_000 {
        let runner = runner.clone();
        tasks.push(tokio::spawn(async move {
            let order = format!("many-{i}");
            let outcome = Outcome::for_index(i);
            let sent = drive(&runner, placed(&order, 10), outcome, true).await;
            (order, outcome, sent)
        }));
    }
    for task in tasks {
        let (order, outcome, sent) = task.await.unwrap();
        let view = runner.instance(&order).await.unwrap().unwrap();
        assert_terminal(&view, &sent, outcome);
    }
    let list = runner.store().list(SAGA, Some(false)).await.unwrap();
    assert!(list.is_empty(), "{} instances still running", list.len());
    assert_eq!(
        runner.store().list(SAGA, Some(true)).await.unwrap().len(),
        1_000
    );
}
