#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The dispatch loop: commands from the outbox to a user-supplied dispatcher, in order, with
//! retries, idempotency keys and a compare-and-set checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::memory::{MemoryCheckpointStore, MemoryOutbox};
use es_core::{CheckpointError, CheckpointStore, OutboxMessage};
use es_saga::{CommandDispatcher, DISPATCH_TOPIC, DispatchError, DispatchLoop};
use serde_json::json;
use uuid::Uuid;

/// Records what it accepted; fails chosen commands transiently a number of times, or for good.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<(String, Uuid)>>>,
    transient: Arc<Mutex<HashMap<Uuid, u32>>>,
    refused: Arc<Mutex<Option<Uuid>>>,
    calls: Arc<Mutex<u32>>,
}

impl Receiver {
    fn accepted(&self) -> Vec<String> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl CommandDispatcher for Receiver {
    async fn dispatch(
        &self,
        command: &OutboxMessage,
        idempotency_key: Uuid,
    ) -> Result<(), DispatchError> {
        *self.calls.lock().unwrap() += 1;
        let id = command.message_id;
        if *self.refused.lock().unwrap() == Some(id) {
            return Err(DispatchError::Permanent {
                message_id: id,
                source: "422: no such warehouse".into(),
            });
        }
        if let Some(left) = self.transient.lock().unwrap().get_mut(&id)
            && *left > 0
        {
            *left -= 1;
            return Err(DispatchError::Transient {
                message_id: id,
                source: "503: try again".into(),
            });
        }
        let name = command.payload["name"].as_str().unwrap().to_owned();
        self.accepted.lock().unwrap().push((name, idempotency_key));
        Ok(())
    }
}

fn command(name: &str) -> OutboxMessage {
    OutboxMessage::new("ReserveStock", name, json!({ "name": name })).with_topic(DISPATCH_TOPIC)
}

fn other(name: &str) -> OutboxMessage {
    OutboxMessage::new("OrderShipped", name, json!({ "name": name })).with_topic("events")
}

fn dispatch_loop(
    outbox: &MemoryOutbox,
    checkpoints: &MemoryCheckpointStore,
    receiver: &Receiver,
) -> DispatchLoop<MemoryOutbox, MemoryCheckpointStore> {
    DispatchLoop::new(
        "dispatch",
        outbox.clone(),
        checkpoints.clone(),
        receiver.clone(),
    )
    .with_retries(3, Duration::from_millis(1))
}

#[tokio::test]
async fn commands_go_out_in_order_with_their_message_id_as_idempotency_key() {
    let outbox = MemoryOutbox::new();
    let messages = vec![
        command("a"),
        other("x"),
        command("b"),
        command("c"),
        other("y"),
    ];
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    outbox.push(messages);
    let (checkpoints, receiver) = (MemoryCheckpointStore::new(), Receiver::default());
    let dispatcher = dispatch_loop(&outbox, &checkpoints, &receiver);

    assert_eq!(dispatcher.run_once().await.unwrap(), 3);
    let accepted = receiver.accepted.lock().unwrap().clone();
    assert_eq!(
        accepted,
        [
            ("a".to_owned(), ids[0]),
            ("b".to_owned(), ids[2]),
            ("c".to_owned(), ids[3])
        ],
        "only the dispatch topic, in outbox order, keyed by message id"
    );
    let last = outbox.messages().last().unwrap().position;
    assert_eq!(
        checkpoints.load_checkpoint("dispatch").await.unwrap(),
        Some(last),
        "passed-over messages move the checkpoint too"
    );
    assert_eq!(
        dispatcher.run_once().await.unwrap(),
        0,
        "nothing is sent twice"
    );
    assert_eq!(receiver.accepted().len(), 3);

    outbox.push(vec![command("d")]);
    assert_eq!(dispatcher.run_once().await.unwrap(), 1);
    assert_eq!(receiver.accepted(), ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_one_that_outlasts_the_retries_is_sent_next_run() {
    let outbox = MemoryOutbox::new();
    let (a, b, c) = (command("a"), command("b"), command("c"));
    let receiver = Receiver::default();
    receiver.transient.lock().unwrap().insert(a.message_id, 2);
    receiver.transient.lock().unwrap().insert(b.message_id, 4);
    outbox.push(vec![a, b.clone(), c]);
    let checkpoints = MemoryCheckpointStore::new();
    let dispatcher = dispatch_loop(&outbox, &checkpoints, &receiver);

    let error = dispatcher.run_once().await.unwrap_err();
    assert!(
        matches!(error, DispatchError::Transient { message_id, .. } if message_id == b.message_id),
        "{error}"
    );
    assert_eq!(
        receiver.accepted(),
        ["a"],
        "a succeeded on its third try; c waits behind b"
    );
    assert_eq!(*receiver.calls.lock().unwrap(), 3 + 3, "three tries each");
    assert_eq!(
        checkpoints.load_checkpoint("dispatch").await.unwrap(),
        Some(outbox.messages()[0].position),
        "the checkpoint moved past a only"
    );

    assert_eq!(dispatcher.run_once().await.unwrap(), 2);
    assert_eq!(receiver.accepted(), ["a", "b", "c"]);
}

#[tokio::test]
async fn a_refused_command_stops_the_loop_before_it() {
    let outbox = MemoryOutbox::new();
    let (a, b, c) = (command("a"), command("b"), command("c"));
    let receiver = Receiver::default();
    *receiver.refused.lock().unwrap() = Some(b.message_id);
    outbox.push(vec![a, b.clone(), c]);
    let checkpoints = MemoryCheckpointStore::new();
    let dispatcher = dispatch_loop(&outbox, &checkpoints, &receiver);

    for _ in 0..2 {
        let error = dispatcher.run_once().await.unwrap_err();
        assert!(matches!(error, DispatchError::Permanent { .. }), "{error}");
    }
    assert_eq!(
        receiver.accepted(),
        ["a"],
        "nothing passes the refused command"
    );
    assert_eq!(
        *receiver.calls.lock().unwrap(),
        1 + 2,
        "a refusal is not retried"
    );

    *receiver.refused.lock().unwrap() = None;
    assert_eq!(dispatcher.run_once().await.unwrap(), 2);
    assert_eq!(receiver.accepted(), ["a", "b", "c"]);
}

/// Another loop under the same name wins the race: just before this loop's write, it moves
/// the checkpoint to `to`.
#[derive(Clone)]
struct Raced {
    inner: MemoryCheckpointStore,
    to: Arc<Mutex<Option<es_core::Position>>>,
}

impl CheckpointStore for Raced {
    async fn load_checkpoint(
        &self,
        name: &str,
    ) -> Result<Option<es_core::Position>, CheckpointError> {
        self.inner.load_checkpoint(name).await
    }

    async fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<es_core::Position>,
        new: es_core::Position,
    ) -> Result<(), CheckpointError> {
        let raced = self.to.lock().unwrap().take();
        if let Some(to) = raced {
            self.inner
                .compare_and_set_checkpoint(name, expected, to)
                .await?;
        }
        self.inner
            .compare_and_set_checkpoint(name, expected, new)
            .await
    }
}

#[tokio::test]
async fn a_loop_whose_checkpoint_moved_under_it_is_fenced() {
    let outbox = MemoryOutbox::new();
    outbox.push(vec![command("a"), command("b")]);
    let receiver = Receiver::default();
    let first = outbox.messages()[0].position;
    let checkpoints = Raced {
        inner: MemoryCheckpointStore::new(),
        to: Arc::new(Mutex::new(Some(first))),
    };
    let dispatcher = DispatchLoop::new(
        "dispatch",
        outbox.clone(),
        checkpoints.clone(),
        receiver.clone(),
    );
    let error = dispatcher.run_once().await.unwrap_err();
    assert!(
        matches!(
            error,
            DispatchError::Checkpoint(CheckpointError::Stale { actual: Some(actual), .. }) if actual == first
        ),
        "{error}"
    );
    assert_eq!(
        checkpoints.load_checkpoint("dispatch").await.unwrap(),
        Some(first),
        "the other loop's checkpoint stands"
    );
}
