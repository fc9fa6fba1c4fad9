//! The durable local route: a relay hands the messages of its topics to consumer loops in the
//! same process, its checkpoint held before what they have not handled; a crash hands them
//! over again, a failing partition holds only itself, the others go to the broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::consume::{ConsumerLoop, RunnerOptions};
use es_core::local::LocalRoute;
use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryOutbox};
use es_core::relay::{Relay, RelayOptions};
use es_core::{
    AppendSignal, CheckpointStore, Consumer, Delivery, HandlerError, MessageHandler, OutboxMessage,
    OutboxSource, PublishError, PublishFailure, Publisher,
};
use serde_json::json;

const LOCAL: &str = "commands";
const REMOTE: &str = "events";
const GROUP: &str = "handlers";

/// Pushes `commits` commits of `per_commit` messages over `keys` keys, numbered per key
/// from 1; every third message goes to the broker's topic, the others to the local one.
fn fill(outbox: &MemoryOutbox, commits: usize, per_commit: usize, keys: usize) {
    let mut counters: HashMap<String, u64> = HashMap::new();
    for commit in 0..commits {
        let messages = (0..per_commit)
            .map(|i| {
                let at = commit * per_commit + i;
                let key = format!("key-{}", at % keys);
                let topic = if at % 3 == 2 { REMOTE } else { LOCAL };
                let n = counters.entry(format!("{topic}/{key}")).or_default();
                *n += 1;
                OutboxMessage::new("Counted", key.clone(), json!({ "key": key, "n": *n }))
                    .with_topic(topic)
            })
            .collect();
        outbox.push(messages);
    }
}

/// Records what it handled, in order; fails every message of `failing` keys (transiently)
/// while that is set.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(String, u64, uuid::Uuid)>>,
    failing: Mutex<HashSet<String>>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let key = delivery.message.partition_key.clone();
        if self.failing.lock().unwrap().contains(&key) {
            return Err(HandlerError::transient("not yet"));
        }
        let n = delivery.message.payload["n"].as_u64().unwrap();
        self.handled
            .lock()
            .unwrap()
            .push((key, n, delivery.message.message_id));
        Ok(())
    }
}

impl Recorder {
    /// The distinct messages handled, after checking each key's were in order.
    fn distinct_in_order(&self) -> usize {
        let handled = self.handled.lock().unwrap();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (key, n, _) in handled.iter() {
            let previous = last.get(key.as_str()).copied().unwrap_or(0);
            assert!(*n <= previous + 1, "{key} jumped from {previous} to {n}");
            last.insert(key, previous.max(*n));
        }
        handled
            .iter()
            .map(|(_, _, id)| *id)
            .collect::<HashSet<_>>()
            .len()
    }
}

fn route() -> LocalRoute {
    LocalRoute::new(4).topic(LOCAL, &[GROUP])
}

fn relay(
    outbox: &MemoryOutbox,
    checkpoints: &MemoryCheckpointStore,
    broker: &MemoryBus,
    route: &LocalRoute,
) -> Relay<MemoryOutbox, MemoryCheckpointStore> {
    Relay::new(
        "relay",
        outbox.clone(),
        checkpoints.clone(),
        Arc::new(broker.clone()),
    )
    .with_options(
        RelayOptions::default()
            .batch_size(16)
            .poll_interval(Duration::from_millis(2), Duration::from_secs(30))
            .checkpoint_interval(Duration::from_millis(20)),
    )
    .with_local_route(route.clone())
}

fn options() -> RunnerOptions {
    RunnerOptions::default()
        .max_attempts(1000)
        .backoff(Duration::from_millis(2), Duration::from_millis(10))
}

/// Messages of the outbox after `checkpoint` on the local topic.
async fn local_after(outbox: &MemoryOutbox, checkpoints: &MemoryCheckpointStore) -> usize {
    let checkpoint = checkpoints
        .load_checkpoint("relay")
        .await
        .unwrap()
        .unwrap_or_default();
    outbox
        .read_outbox(checkpoint, 10_000)
        .await
        .unwrap()
        .messages
        .iter()
        .filter(|m| m.message.topic.as_deref() == Some(LOCAL))
        .count()
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_delivers_its_topics_in_order_per_key_and_the_checkpoint_follows_the_handlers() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    let route = route();
    let signal = AppendSignal::new();
    let mut relay = relay(&outbox, &checkpoints, &broker, &route).with_signal(signal.clone());
    let handler = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut member = ConsumerLoop::new(route.consumer(GROUP, &[LOCAL]), dyn_handler(&handler))
            .with_options(options());
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            member
                .run(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        }));
    }
    let mut relay_stopped = stopped.clone();
    let relaying = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = relay_stopped.wait_for(|stop| *stop).await;
            })
            .await
    });
    for _ in 0..10 {
        fill(&outbox, 10, 9, 7);
        signal.notify();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let handled = handler.clone();
    eventually("every local message handled", || {
        handled.handled.lock().unwrap().len() >= 600
    })
    .await;
    assert_eq!(handler.distinct_in_order(), 600, "each local message once");
    assert_eq!(
        broker.published(REMOTE).len(),
        300,
        "the rest was published"
    );
    assert!(
        broker.published(LOCAL).is_empty(),
        "nothing local reached the broker"
    );
    // Handled, the checkpoint follows without another commit to wake the relay.
    let last = outbox.messages().last().unwrap().position;
    tokio::time::timeout(Duration::from_secs(5), async {
        while checkpoints.load_checkpoint("relay").await.unwrap() != Some(last) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the checkpoint reached the last message once everything was handled");
    assert_eq!(route.pending(), 0);
    stop.send(true).unwrap();
    relaying.await.unwrap().unwrap();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_crash_before_the_handlers_hands_over_again_what_they_had_not_handled() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    fill(&outbox, 4, 6, 3);
    let total_local = 16;
    // The first process: everything handed over, half of it handled, then it dies.
    {
        let route = route();
        let mut relay = relay(&outbox, &checkpoints, &broker, &route);
        relay.run_once().await.unwrap();
        relay.run_once().await.unwrap();
        let mut consumer = route.consumer(GROUP, &[LOCAL]);
        for _ in 0..8 {
            let delivery = consumer.recv().await.unwrap();
            consumer.store(&delivery).unwrap();
        }
        relay.flush_checkpoint().await.unwrap();
        assert!(route.pending() >= total_local - 8);
    }
    let left = local_after(&outbox, &checkpoints).await;
    assert!(
        (total_local - 8..total_local).contains(&left),
        "the checkpoint stays before the first unhandled message: {left} local ones after it"
    );
    // The next process hands over again everything after the checkpoint.
    let route = route();
    let mut relay = relay(&outbox, &checkpoints, &broker, &route);
    relay.run_once().await.unwrap();
    relay.run_once().await.unwrap();
    let mut consumer = route.consumer(GROUP, &[LOCAL]);
    let mut again = 0;
    while route.pending() > 0 {
        let delivery = consumer.recv().await.unwrap();
        consumer.store(&delivery).unwrap();
        again += 1;
    }
    assert_eq!(again, left, "every unhandled message came again");
    relay.flush_checkpoint().await.unwrap();
    assert_eq!(local_after(&outbox, &checkpoints).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_partition_holds_the_checkpoint_back_but_not_the_other_partitions() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    let route = route();
    let mut relay = relay(&outbox, &checkpoints, &broker, &route);
    let handler = Arc::new(Recorder::default());
    handler.failing.lock().unwrap().insert("key-0".to_owned());
    let mut member = ConsumerLoop::new(route.consumer(GROUP, &[LOCAL]), dyn_handler(&handler))
        .with_options(options());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consuming = tokio::spawn(async move {
        member
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    fill(&outbox, 6, 10, 6);
    while relay.run_once().await.unwrap().read > 0 {}
    // key-0's ten messages, and those of the keys sharing its partition, wait; the other
    // partitions' messages are handled meanwhile.
    let handled = handler.clone();
    let settled = |handler: &Recorder| handler.handled.lock().unwrap().len();
    eventually("other partitions' messages", || settled(&handled) > 0).await;
    let mut seen = settled(&handler);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = settled(&handler);
        if now == seen {
            break;
        }
        seen = now;
    }
    assert!(seen <= 30, "key-0's messages wait: {seen} handled");
    assert!(
        handler
            .handled
            .lock()
            .unwrap()
            .iter()
            .all(|(key, _, _)| key != "key-0"),
        "nothing of key-0 was handled"
    );
    relay.flush_checkpoint().await.unwrap();
    let held = local_after(&outbox, &checkpoints).await;
    assert!(
        held >= 40 - seen,
        "the checkpoint stays before key-0's first message: {held} local ones after it"
    );
    assert!(
        handler.calls.load(Ordering::SeqCst) > seen,
        "key-0 was retried"
    );
    handler.failing.lock().unwrap().clear();
    eventually("key-0's messages once it recovers", || {
        handled.handled.lock().unwrap().len() >= 40
    })
    .await;
    relay.flush_checkpoint().await.unwrap();
    assert_eq!(local_after(&outbox, &checkpoints).await, 0);
    assert_eq!(handler.distinct_in_order(), 40);
    stop.send(()).unwrap();
    consuming.await.unwrap().unwrap();
}

/// Acknowledges nothing of its first call, then publishes to `inner`.
struct FailsFirst {
    inner: MemoryBus,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Publisher for FailsFirst {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(PublishFailure::new(
                0,
                PublishError::backend("injected broker failure"),
            ));
        }
        self.inner.publish(messages).await
    }
}

#[tokio::test]
async fn a_broker_failure_holds_the_checkpoint_before_its_first_unacknowledged_message() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    let route = route();
    // Two local messages, then one for the broker, then one local.
    fill(&outbox, 1, 4, 4);
    let publisher = Arc::new(FailsFirst {
        inner: broker.clone(),
        calls: AtomicUsize::new(0),
    });
    let mut relay = Relay::new("relay", outbox.clone(), checkpoints.clone(), publisher)
        .with_local_route(route.clone());
    assert!(relay.run_once().await.is_err(), "the broker refused");
    let mut consumer = route.consumer(GROUP, &[LOCAL]);
    let mut last_local = None;
    for _ in 0..3 {
        let delivery = consumer.recv().await.unwrap();
        if delivery.message.partition_key == "key-3" {
            last_local = Some(delivery.message.message_id);
        }
        consumer.store(&delivery).unwrap();
    }
    relay.flush_checkpoint().await.unwrap();
    // Retried from the broker's message: the local message after it comes again.
    relay.run_once().await.unwrap();
    assert_eq!(broker.published(REMOTE).len(), 1);
    let again = consumer.recv().await.unwrap();
    assert_eq!(
        Some(again.message.message_id),
        last_local,
        "the local message after the refused one was handed over again"
    );
    consumer.store(&again).unwrap();
    relay.flush_checkpoint().await.unwrap();
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(outbox.messages().last().unwrap().position)
    );
}

#[tokio::test]
async fn dead_letters_go_through_the_route_s_publisher_and_count_as_handled() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    let route = route().with_dead_letters(Arc::new(broker.clone()));
    outbox.push(vec![
        OutboxMessage::new("Counted", "key-1", json!({ "n": 1 })).with_topic(LOCAL),
    ]);
    let mut relay = relay(&outbox, &checkpoints, &broker, &route);
    relay.run_once().await.unwrap();
    let mut consumer = route.consumer(GROUP, &[LOCAL]);
    let delivery = consumer.recv().await.unwrap();
    consumer.dead_letter(&delivery, "refused", 3).await.unwrap();
    let dead = broker.published(&format!("{LOCAL}.dlq"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers[es_core::dead_letter::ERROR], "refused");
    assert_eq!(dead[0].headers[es_core::dead_letter::GROUP], GROUP);
    assert_eq!(route.pending(), 0);
    relay.flush_checkpoint().await.unwrap();
    assert_eq!(local_after(&outbox, &checkpoints).await, 0);
}

/// The recorder, shared with the test.
struct Shared(Arc<Recorder>);

#[async_trait::async_trait]
impl MessageHandler for Shared {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.0.handle(delivery).await
    }
}

fn dyn_handler(handler: &Arc<Recorder>) -> Shared {
    Shared(handler.clone())
}

#[tokio::test]
async fn a_full_route_stops_the_relay_reading_until_its_members_catch_up() {
    let outbox = MemoryOutbox::new();
    let checkpoints = MemoryCheckpointStore::new();
    let broker = MemoryBus::new();
    let route = route().with_capacity(10);
    let mut relay = Relay::new(
        "relay",
        outbox.clone(),
        checkpoints.clone(),
        Arc::new(broker.clone()),
    )
    .with_options(RelayOptions::default().batch_size(16))
    .with_local_route(route.clone());
    for n in 1..=40 {
        outbox.push(vec![
            OutboxMessage::new("Counted", "key-1", json!({ "n": n })).with_topic(LOCAL),
        ]);
    }
    assert_eq!(relay.run_once().await.unwrap().read, 16);
    assert_eq!(route.pending(), 16, "one batch may go past the capacity");
    let full = relay.run_once().await.unwrap();
    assert_eq!(full.read, 0, "a full route: nothing more read");
    assert!(!full.reached_end, "more waits in the outbox");
    assert_eq!(route.pending(), 16);
    let mut consumer = route.consumer(GROUP, &[LOCAL]);
    for _ in 0..8 {
        let delivery = consumer.recv().await.unwrap();
        consumer.store(&delivery).unwrap();
    }
    assert_eq!(relay.run_once().await.unwrap().read, 16, "room again");
    let mut handled = 8;
    while route.pending() > 0 || handled < 40 {
        if route.pending() == 0 {
            relay.run_once().await.unwrap();
            continue;
        }
        let delivery = consumer.recv().await.unwrap();
        assert_eq!(delivery.message.payload["n"], handled + 1, "in order");
        consumer.store(&delivery).unwrap();
        handled += 1;
    }
    relay.flush_checkpoint().await.unwrap();
    assert_eq!(local_after(&outbox, &checkpoints).await, 0);
}
