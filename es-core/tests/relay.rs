//! The outbox relay against the in-memory outbox, bus and checkpoint store: order, the
//! acknowledged prefix, fatal publisher errors, fencing, the loop, retention and figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeZone;
use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryOutbox};
use es_core::relay::{Relay, RelayError, RelayOptions};
use es_core::{
    AppendSignal, CheckpointError, CheckpointStore, ManualClock, OutboxMessage, Position,
    PublishError, PublishFailure, Publisher,
};
use serde_json::json;

const TOPIC: &str = "orders";

/// Fills `outbox` with `commits` commits of `per_commit` messages over `keys` keys, each
/// message numbered per key from 1.
fn fill(outbox: &MemoryOutbox, commits: usize, per_commit: usize, keys: usize) {
    let mut counters: HashMap<String, u64> = HashMap::new();
    for commit in 0..commits {
        let messages = (0..per_commit)
            .map(|i| {
                let key = format!("key-{}", (commit * per_commit + i) % keys);
                let n = counters.entry(key.clone()).or_default();
                *n += 1;
                OutboxMessage::new("Counted", key.clone(), json!({ "key": key, "n": *n }))
            })
            .collect();
        outbox.push(messages);
    }
}

/// Asserts every message of `outbox_ids` reached the topic, each key in order; returns how
/// many copies arrived in all.
fn assert_delivered_in_order(bus: &MemoryBus, expected: usize) -> usize {
    let published = bus.published(TOPIC);
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut distinct = std::collections::HashSet::new();
    for message in &published {
        let n = message.payload["n"].as_u64().unwrap();
        let previous = last.get(&message.partition_key).copied().unwrap_or(0);
        assert!(
            n <= previous + 1,
            "key {} jumped from {previous} to {n}",
            message.partition_key
        );
        last.insert(message.partition_key.clone(), previous.max(n));
        distinct.insert(message.message_id);
    }
    assert_eq!(distinct.len(), expected, "every message arrived");
    published.len()
}

fn bus() -> MemoryBus {
    MemoryBus::new().with_default_topic(TOPIC)
}

fn relay(
    outbox: &MemoryOutbox,
    checkpoints: &MemoryCheckpointStore,
    publisher: Arc<dyn Publisher>,
    batch_size: usize,
) -> Relay<MemoryOutbox, MemoryCheckpointStore> {
    Relay::new("relay", outbox.clone(), checkpoints.clone(), publisher)
        .with_options(RelayOptions::default().batch_size(batch_size))
}

async fn drain(relay: &mut Relay<MemoryOutbox, MemoryCheckpointStore>) {
    loop {
        match relay.run_once().await {
            Ok(batch) if batch.read == 0 => return,
            Ok(_) => {}
            Err(error) if error.is_deposed() => panic!("{error}"),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn relays_every_message_in_order_and_checkpoints_the_last() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 50, 10, 7);
    let bus = bus();
    let checkpoints = MemoryCheckpointStore::new();
    let mut relay = relay(&outbox, &checkpoints, Arc::new(bus.clone()), 7);
    drain(&mut relay).await;
    assert_eq!(assert_delivered_in_order(&bus, 500), 500, "no duplicates");
    let last = outbox.messages().last().unwrap().position;
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(last)
    );
    let stats = relay.stats().snapshot();
    assert_eq!(stats.published, 500);
    assert_eq!(stats.checkpoint, Some(last));
    assert_eq!(stats.backlog, 0);
    assert_eq!(stats.oldest_unpublished_at, None);
}

/// Publishes the first `prefix` messages of its `fail_on`-th call, then fails.
struct FailsMidBatch {
    inner: MemoryBus,
    calls: AtomicUsize,
    fail_on: usize,
    prefix: usize,
    fatal: bool,
}

#[async_trait::async_trait]
impl Publisher for FailsMidBatch {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call != self.fail_on {
            return self.inner.publish(messages).await;
        }
        self.inner.publish(&messages[..self.prefix]).await?;
        let error = if self.fatal {
            PublishError::fatal("injected fatal error")
        } else {
            PublishError::backend("injected broker failure")
        };
        Err(PublishFailure::new(self.prefix, error))
    }
}

#[tokio::test]
async fn a_failure_mid_batch_moves_the_checkpoint_exactly_past_the_acknowledged_prefix() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 10, 10, 3);
    let bus = bus();
    let publisher = Arc::new(FailsMidBatch {
        inner: bus.clone(),
        calls: AtomicUsize::new(0),
        fail_on: 2,
        prefix: 4,
        fatal: false,
    });
    let checkpoints = MemoryCheckpointStore::new();
    let mut relay = relay(&outbox, &checkpoints, publisher, 25);
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2040, 1, 1, 0, 0, 0).unwrap());
    relay = relay.with_clock(clock);

    assert_eq!(relay.run_once().await.unwrap().published, 25);
    let error = relay.run_once().await.unwrap_err();
    let RelayError::Publish { source, .. } = &error else {
        panic!("expected a publish failure, got {error}");
    };
    assert_eq!(source.acknowledged, 4);
    assert!(!error.is_fatal_publish());
    let messages = outbox.messages();
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(messages[25 + 4 - 1].position),
        "the checkpoint is exactly past the acknowledged prefix"
    );
    let stats = relay.stats().snapshot();
    assert_eq!(stats.backlog, 21, "the rest of the batch is unpublished");
    assert!(stats.backlog_is_lower_bound);
    assert_eq!(
        stats.oldest_unpublished_at,
        Some(messages[29].message.occurred_at)
    );

    drain(&mut relay).await;
    assert_eq!(
        assert_delivered_in_order(&bus, 100),
        100,
        "nothing published twice"
    );
}

#[tokio::test]
async fn a_fatal_error_recreates_the_publisher_and_loses_nothing() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 20, 10, 5);
    let bus = bus();
    let created = Arc::new(AtomicUsize::new(0));
    let factory = {
        let bus = bus.clone();
        let created = Arc::clone(&created);
        move || -> Result<Arc<dyn Publisher>, PublishError> {
            let n = created.fetch_add(1, Ordering::SeqCst) + 1;
            // The first publisher fails fatally on its second batch; later ones work.
            Ok(Arc::new(FailsMidBatch {
                inner: bus.clone(),
                calls: AtomicUsize::new(0),
                fail_on: if n == 1 { 2 } else { usize::MAX },
                prefix: 3,
                fatal: true,
            }))
        }
    };
    let checkpoints = MemoryCheckpointStore::new();
    let mut relay = Relay::with_factory("relay", outbox.clone(), checkpoints.clone(), factory)
        .with_options(RelayOptions::default().batch_size(30));
    relay.run_once().await.unwrap();
    let error = relay.run_once().await.unwrap_err();
    assert!(error.is_fatal_publish(), "{error}");
    assert_eq!(created.load(Ordering::SeqCst), 1);
    drain(&mut relay).await;
    assert_eq!(
        created.load(Ordering::SeqCst),
        2,
        "the factory was called again"
    );
    assert_eq!(relay.stats().snapshot().publishers_created, 2);
    assert_eq!(assert_delivered_in_order(&bus, 200), 200);
}

/// Counts reads of the outbox it wraps.
#[derive(Clone)]
struct CountsReads {
    inner: MemoryOutbox,
    reads: Arc<AtomicUsize>,
}

impl es_core::OutboxSource for CountsReads {
    async fn read_outbox(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<es_core::OutboxBatch, es_core::StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_outbox(after, limit).await
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, es_core::StoreError> {
        self.inner.delete_outbox_up_to(up_to).await
    }
}

/// Notes, when each publish returns, how many outbox reads had started.
struct NotesReads {
    inner: MemoryBus,
    reads: Arc<AtomicUsize>,
    seen: std::sync::Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl Publisher for NotesReads {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        // A broker taking its time: long enough for a read to run beside it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.seen
            .lock()
            .unwrap()
            .push(self.reads.load(Ordering::SeqCst));
        self.inner.publish(messages).await
    }
}

#[tokio::test]
async fn the_next_full_batch_is_read_while_the_current_one_is_published() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 10, 10, 3);
    let reads = Arc::new(AtomicUsize::new(0));
    let source = CountsReads {
        inner: outbox.clone(),
        reads: Arc::clone(&reads),
    };
    let bus = bus();
    let publisher = Arc::new(NotesReads {
        inner: bus.clone(),
        reads: Arc::clone(&reads),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let checkpoints = MemoryCheckpointStore::new();
    let mut relay = Relay::new("relay", source, checkpoints.clone(), publisher.clone())
        .with_options(RelayOptions::default().batch_size(30));
    let mut batches = Vec::new();
    loop {
        let batch = relay.run_once().await.unwrap();
        if batch.read == 0 {
            break;
        }
        batches.push(batch.read);
    }
    assert_eq!(batches, [30, 30, 30, 10]);
    // Batch n+1 was read (read n+1 started) before batch n's publish returned; the last
    // batch did not fill up, so nothing was read beside it.
    assert_eq!(*publisher.seen.lock().unwrap(), [2, 3, 4, 4]);
    assert_eq!(
        reads.load(Ordering::SeqCst),
        5,
        "one read per batch and the last, empty one"
    );
    assert_eq!(
        assert_delivered_in_order(&bus, 100),
        100,
        "nothing published twice"
    );
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(outbox.messages().last().unwrap().position)
    );
}

/// Fails its next compare-and-set after the write took effect, as a crash right after the
/// commit (or a lost reply) would.
#[derive(Clone)]
struct LosesNextReply {
    inner: MemoryCheckpointStore,
    armed: Arc<AtomicBool>,
}

impl CheckpointStore for LosesNextReply {
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, CheckpointError> {
        self.inner.load_checkpoint(name).await
    }

    async fn compare_and_set_checkpoint(
        &self,
        name: &str,
        expected: Option<Position>,
        new: Position,
    ) -> Result<(), CheckpointError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(CheckpointError::Backend("connection lost".into()));
        }
        self.inner
            .compare_and_set_checkpoint(name, expected, new)
            .await
    }
}

#[tokio::test]
async fn a_failed_checkpoint_write_republishes_and_loses_nothing() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 10, 10, 4);
    let bus = bus();
    let checkpoints = LosesNextReply {
        inner: MemoryCheckpointStore::new(),
        armed: Arc::new(AtomicBool::new(false)),
    };
    let publisher: Arc<dyn Publisher> = Arc::new(bus.clone());
    let mut relay = Relay::new("relay", outbox.clone(), checkpoints.clone(), publisher)
        .with_options(RelayOptions::default().batch_size(40));
    relay.run_once().await.unwrap();
    checkpoints.armed.store(true, Ordering::SeqCst);
    let error = relay.run_once().await.unwrap_err();
    assert!(matches!(error, RelayError::Checkpoint { .. }), "{error}");
    loop {
        if relay.run_once().await.unwrap().read == 0 {
            break;
        }
    }
    let copies = assert_delivered_in_order(&bus, 100);
    assert_eq!(
        copies, 140,
        "the batch whose checkpoint failed was published again"
    );
}

#[tokio::test]
async fn a_relay_whose_checkpoint_moved_is_deposed() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 4, 10, 4);
    let bus = bus();
    let checkpoints = MemoryCheckpointStore::new();
    let mut first = relay(&outbox, &checkpoints, Arc::new(bus.clone()), 10);
    let mut second = relay(&outbox, &checkpoints, Arc::new(bus.clone()), 10);
    first.run_once().await.unwrap();
    second.run_once().await.unwrap();
    let error = first.run_once().await.unwrap_err();
    assert!(error.is_deposed(), "{error}");
    let error = first.run(std::future::pending()).await.unwrap_err();
    assert!(error.is_deposed(), "run stops too: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_wakes_on_the_signal_applies_retention_and_stops_on_shutdown() {
    let outbox = MemoryOutbox::new();
    let bus = bus();
    let checkpoints = MemoryCheckpointStore::new();
    let signal = AppendSignal::new();
    let options = RelayOptions::default()
        .batch_size(16)
        .poll_interval(Duration::from_secs(30), Duration::from_secs(30));
    let mut relay = Relay::new(
        "relay",
        outbox.clone(),
        checkpoints.clone(),
        Arc::new(bus.clone()),
    )
    .with_options(options)
    .with_signal(signal.clone())
    .with_retention(Duration::ZERO);
    let stats = relay.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    for round in 0..5 {
        fill(&outbox, 3, 10, 6);
        signal.notify();
        let expected = (round + 1) * 30;
        tokio::time::timeout(Duration::from_secs(5), async {
            while bus.published(TOPIC).len() < expected || !outbox.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the signal woke the relay long before its 30 s poll");
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.published, 150);
    assert_eq!(snapshot.deleted, 150, "retention emptied the outbox");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_retries_after_failures_and_polls_without_a_signal() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 10, 10, 5);
    let bus = bus();
    let publisher = Arc::new(FailsMidBatch {
        inner: bus.clone(),
        calls: AtomicUsize::new(0),
        fail_on: 1,
        prefix: 0,
        fatal: false,
    });
    let checkpoints = MemoryCheckpointStore::new();
    let options = RelayOptions::default()
        .batch_size(8)
        .retry_delay(Duration::from_millis(10), Duration::from_millis(20));
    let mut relay =
        Relay::new("relay", outbox.clone(), checkpoints, publisher).with_options(options);
    let stats = relay.stats();
    let task =
        tokio::spawn(async move { relay.run(tokio::time::sleep(Duration::from_secs(60))).await });
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.published(TOPIC).len() < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the relay recovered from the failure");
    fill(&outbox, 1, 10, 5);
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.published(TOPIC).len() < 110 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("polling found the later commit");
    assert_eq!(stats.snapshot().errors, 1);
    task.abort();
}

/// With a checkpoint interval, batches while messages flow leave the checkpoint behind (the
/// stats say how far the broker acknowledged); it is written once the outbox runs dry, and a
/// relay started from a checkpoint left behind publishes again what followed it, losing
/// nothing.
#[tokio::test]
async fn a_checkpoint_interval_writes_the_checkpoint_when_the_outbox_runs_dry() {
    let outbox = MemoryOutbox::new();
    fill(&outbox, 4, 5, 3);
    let bus = bus();
    let checkpoints = MemoryCheckpointStore::new();
    let options = RelayOptions::default()
        .batch_size(5)
        .checkpoint_interval(Duration::from_secs(3600));
    let mut relay = Relay::new(
        "relay",
        outbox.clone(),
        checkpoints.clone(),
        Arc::new(bus.clone()),
    )
    .with_options(options);
    let positions: Vec<Position> = outbox.messages().iter().map(|m| m.position).collect();

    // No batch is written: the interval counts from the checkpoint's load.
    for _ in 0..3 {
        assert_eq!(relay.run_once().await.unwrap().published, 5);
    }
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        None,
        "an hour's interval: nothing written while messages flow"
    );
    let stats = relay.stats().snapshot();
    assert_eq!(stats.relayed, Some(positions[14]));
    assert_eq!(stats.checkpoint, None);

    // A relay started now (after a crash) begins at the written checkpoint: it publishes
    // the first 15 again and loses nothing.
    let again_bus = bus.clone();
    let mut restarted = Relay::new(
        "relay-after-crash",
        outbox.clone(),
        MemoryCheckpointStore::new(),
        Arc::new(again_bus),
    )
    .with_options(RelayOptions::default().batch_size(100));
    assert_eq!(restarted.run_once().await.unwrap().published, 20);

    // The last batch, then a read that finds nothing: the checkpoint is written.
    assert_eq!(relay.run_once().await.unwrap().published, 5);
    assert_eq!(checkpoints.load_checkpoint("relay").await.unwrap(), None);
    assert_eq!(relay.run_once().await.unwrap().read, 0);
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(positions[19])
    );
    let stats = relay.stats().snapshot();
    assert_eq!(
        (stats.checkpoint, stats.relayed),
        (Some(positions[19]), Some(positions[19]))
    );
    assert_eq!(
        assert_delivered_in_order(&bus, 20),
        40,
        "20, then the 20 again"
    );
}

/// A shutdown writes the checkpoint the interval left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_writes_the_checkpoint_left_behind() {
    let outbox = MemoryOutbox::new();
    let bus = bus();
    let checkpoints = MemoryCheckpointStore::new();
    let signal = AppendSignal::new();
    // Polling only after an hour: the outbox is never seen dry, so only the shutdown writes.
    let options = RelayOptions::default()
        .batch_size(4)
        .poll_interval(Duration::from_secs(3600), Duration::from_secs(3600))
        .checkpoint_interval(Duration::from_secs(3600));
    let mut relay = Relay::new(
        "relay",
        outbox.clone(),
        checkpoints.clone(),
        Arc::new(bus.clone()),
    )
    .with_options(options)
    .with_signal(signal.clone());
    let stats = relay.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    fill(&outbox, 2, 2, 2);
    signal.notify();
    let last = outbox.messages().last().unwrap().position;
    tokio::time::timeout(Duration::from_secs(5), async {
        while stats.snapshot().relayed != Some(last) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("relayed");
    assert_eq!(bus.published(TOPIC).len(), 4);
    assert_eq!(checkpoints.load_checkpoint("relay").await.unwrap(), None);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        checkpoints.load_checkpoint("relay").await.unwrap(),
        Some(last)
    );
}

/// With a linger, a relay at rest still reads at once when signalled, and commits signalled
/// one after another faster than the linger are read a few at a time instead of one read
/// each; none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_relay_reads_a_burst_of_commits_together() {
    let outbox = MemoryOutbox::new();
    let bus = bus();
    let signal = AppendSignal::new();
    let linger = Duration::from_millis(300);
    let options = RelayOptions::default()
        .poll_interval(Duration::from_millis(5), Duration::from_secs(30))
        .linger(linger);
    let mut relay = Relay::new(
        "relay",
        outbox.clone(),
        MemoryCheckpointStore::new(),
        Arc::new(bus.clone()),
    )
    .with_options(options)
    .with_signal(signal.clone());
    let stats = relay.stats();
    let task =
        tokio::spawn(async move { relay.run(tokio::time::sleep(Duration::from_secs(60))).await });
    // Let the relay go idle (its waits double up to 30 s: only the signal wakes it).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    fill(&outbox, 1, 1, 1);
    signal.notify();
    while bus.published(TOPIC).is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        started.elapsed() < linger,
        "at rest the signal is read at once ({:?})",
        started.elapsed()
    );
    let before = stats.snapshot().batches;
    for _ in 0..10 {
        fill(&outbox, 1, 1, 1);
        signal.notify();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), async {
        while bus.published(TOPIC).len() < 11 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every commit was published");
    let reads = stats.snapshot().batches - before;
    assert!(
        (1..=3).contains(&reads),
        "10 commits 30 ms apart took {reads} batches"
    );
    task.abort();
}
