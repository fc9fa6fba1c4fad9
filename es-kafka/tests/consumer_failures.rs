//! The consumer loop's failure handling: retries in place without holding other partitions,
//! dead letters (poison, malformed, unknown type) and replaying them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{Delivery, HandlerError, HandlerRegistry, MessageHandler, OutboxMessage};
use es_kafka::{
    ConsumerRunner, KafkaConfig, ReplayFilter, RunnerOptions, RunnerStats, dead_letter,
    replay_dead_letters,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::sync::oneshot;
use uuid::Uuid;

/// Records what it handled, in order; fails a message transiently while `fail` says so.
#[derive(Clone, Default)]
struct Recorder {
    handled: Arc<Mutex<Vec<(String, u64, u32)>>>,
    /// message id → failures left (u32::MAX: until `fixed`).
    failures: Arc<Mutex<HashMap<Uuid, u32>>>,
    fixed: Arc<AtomicBool>,
}

impl Recorder {
    fn handled(&self) -> Vec<(String, u64, u32)> {
        self.handled.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl MessageHandler for Recorder {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let id = delivery.message.message_id;
        if let Some(left) = self.failures.lock().unwrap().get_mut(&id) {
            let forever = *left == u32::MAX && !self.fixed.load(Ordering::SeqCst);
            if forever || (*left > 0 && *left != u32::MAX) {
                if !forever {
                    *left -= 1;
                }
                return Err(HandlerError::transient("the database is down"));
            }
        }
        let key = delivery.message.partition_key.clone();
        let seq = delivery.message.payload["seq"].as_u64().unwrap_or(u64::MAX);
        self.handled
            .lock()
            .unwrap()
            .push((key, seq, delivery.attempt));
        Ok(())
    }
}

fn message(topic: &str, key: &str, seq: u64) -> OutboxMessage {
    OutboxMessage::new("Tested", key, json!({ "key": key, "seq": seq })).with_topic(topic)
}

async fn topic_with_dlq(bootstrap: &str, prefix: &str) -> String {
    let topic = support::unique(prefix);
    support::create_topic(bootstrap, &topic, 4).await;
    support::create_topic(bootstrap, &format!("{topic}.dlq"), 1).await;
    topic
}

/// Runs a loop over `topic` with `handler` in the background; send on the sender to stop it.
fn spawn_runner<H: MessageHandler + 'static>(
    bootstrap: &str,
    topic: &str,
    handler: H,
    options: RunnerOptions,
) -> (
    oneshot::Sender<()>,
    RunnerStats,
    tokio::task::JoinHandle<()>,
) {
    let consumer = support::consumer(bootstrap, &support::unique("group"), &[topic]);
    let mut runner = ConsumerRunner::new(consumer, handler).with_options(options);
    let stats = runner.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, stats, task)
}

/// Every record of `topic` (up to `count`), with its headers as text.
/// A record's payload and headers.
type Record = (Option<Vec<u8>>, BTreeMap<String, String>);

/// Records of `topic` until `distinct` original offsets were seen, the first of each, in
/// original-offset order.
async fn read_distinct_records(bootstrap: &str, topic: &str, distinct: usize) -> Vec<Record> {
    let mut seen: BTreeMap<u64, Record> = BTreeMap::new();
    let mut read = distinct.saturating_sub(1);
    while seen.len() < distinct {
        read += 1;
        let all = read_records(bootstrap, topic, read).await;
        for (payload, headers) in all {
            let offset: u64 = headers[dead_letter::ORIGINAL_OFFSET].parse().unwrap();
            seen.entry(offset).or_insert((payload, headers));
        }
    }
    seen.into_values().collect()
}

async fn read_records(
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> Vec<(Option<Vec<u8>>, BTreeMap<String, String>)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", support::unique("dlq-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    while records.len() < count {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} records on {topic}", records.len()))
            .unwrap();
        let headers = record
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push((record.payload().map(<[u8]>::to_vec), headers));
    }
    records
}

fn quick(max_attempts: u32) -> RunnerOptions {
    RunnerOptions::default()
        .max_attempts(max_attempts)
        .backoff(Duration::from_millis(300), Duration::from_secs(2))
        .commit_interval(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_failing_three_times_then_succeeding_holds_only_its_partition() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = topic_with_dlq(&bootstrap, "retry").await;
    let flaky = message(&topic, "flaky", 0);
    let mut messages = vec![flaky.clone()];
    messages.extend((1..5).map(|seq| message(&topic, "flaky", seq)));
    messages.extend((0..200).map(|i| message(&topic, &format!("other-{}", i % 20), i / 20)));
    let recorder = Recorder::default();
    recorder
        .failures
        .lock()
        .unwrap()
        .insert(flaky.message_id, 3);
    support::publish(&bootstrap, &messages).await;

    let (stop, stats, task) = spawn_runner(&bootstrap, &topic, recorder.clone(), quick(5));
    support::wait_for("every message handled", || recorder.handled().len() >= 205).await;
    stop.send(()).unwrap();
    task.await.unwrap();

    let handled = recorder.handled();
    assert_eq!(handled.len(), 205, "each message handled once");
    let flaky_order: Vec<(u64, u32)> = handled
        .iter()
        .filter(|(key, ..)| key == "flaky")
        .map(|(_, seq, attempt)| (*seq, *attempt))
        .collect();
    assert_eq!(
        flaky_order,
        vec![(0, 4), (1, 1), (2, 1), (3, 1), (4, 1)],
        "the flaky message succeeds at its 4th attempt, before the rest of its key"
    );
    let first_flaky = handled.iter().position(|(key, ..)| key == "flaky").unwrap();
    assert!(
        first_flaky > 20,
        "other partitions went on during the ~2 s of retries (flaky handled at #{first_flaky})"
    );
    assert_eq!(stats.retried(), 3);
    assert_eq!(stats.dead_lettered(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_n_attempts_and_replayed_once_fixed() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = topic_with_dlq(&bootstrap, "poison").await;
    let poison = message(&topic, "key", 0);
    let messages: Vec<_> = std::iter::once(poison.clone())
        .chain((1..10).map(|seq| message(&topic, "key", seq)))
        .collect();
    let recorder = Recorder::default();
    recorder
        .failures
        .lock()
        .unwrap()
        .insert(poison.message_id, u32::MAX);
    support::publish(&bootstrap, &messages).await;

    let (stop, stats, task) = spawn_runner(&bootstrap, &topic, recorder.clone(), quick(3));
    support::wait_for("the rest of the partition handled", || {
        recorder.handled().len() >= 9
    })
    .await;
    assert_eq!(stats.dead_lettered(), 1);
    let seqs: Vec<u64> = recorder.handled().iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..10).collect::<Vec<_>>(),
        "the partition went on, in order"
    );

    let dlq = format!("{topic}.dlq");
    let records = read_records(&bootstrap, &dlq, 1).await;
    let (payload, headers) = &records[0];
    assert_eq!(headers[dead_letter::ATTEMPTS], "3");
    assert!(
        headers[dead_letter::ERROR].contains("the database is down"),
        "{headers:?}"
    );
    assert_eq!(headers[dead_letter::ORIGINAL_TOPIC], topic);
    assert_eq!(headers[dead_letter::ORIGINAL_OFFSET], "0");
    assert!(headers.contains_key(dead_letter::ORIGINAL_PARTITION));
    assert_eq!(
        headers[es_kafka::envelope::MESSAGE_ID],
        poison.message_id.to_string()
    );
    let payload: serde_json::Value = serde_json::from_slice(payload.as_ref().unwrap()).unwrap();
    assert_eq!(payload["seq"], 0);

    recorder.fixed.store(true, Ordering::SeqCst);
    let report = replay_dead_letters(
        &KafkaConfig::new(&bootstrap),
        &dlq,
        &ReplayFilter::all().message_id(poison.message_id),
    )
    .await
    .unwrap();
    assert_eq!(report.replayed, 1);
    support::wait_for("the replayed message handled", || {
        recorder.handled().len() >= 10
    })
    .await;
    assert_eq!(recorder.handled()[9], ("key".to_owned(), 0, 1));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_unknown_types_are_dead_lettered_with_the_reason() {
    let bootstrap = support::shared_bootstrap_servers();
    let topic = topic_with_dlq(&bootstrap, "malformed").await;
    let mut broken = message(&topic, "key", 0);
    let encoded = es_kafka::envelope::encode(&broken).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("key")
                .payload("{not json")
                .headers(encoded.headers),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    broken.message_type = "NobodyHandlesThis".into();
    let good = message(&topic, "key", 2);
    support::publish(&bootstrap, &[broken.clone(), good.clone()]).await;

    let recorder = Recorder::default();
    let registry = HandlerRegistry::new().on_type("Tested", 1, recorder.clone());
    let (stop, stats, task) = spawn_runner(&bootstrap, &topic, registry, quick(3));
    support::wait_for("the good message handled", || {
        !recorder.handled().is_empty()
    })
    .await;
    assert_eq!(recorder.handled(), vec![("key".to_owned(), 2, 1)]);

    // The dead-letter topic is written at least once (a member that rejoins before its
    // offsets are committed may dead-letter a record again): one record per original offset.
    let records = read_distinct_records(&bootstrap, &format!("{topic}.dlq"), 2).await;
    let reasons: Vec<&str> = records
        .iter()
        .map(|(_, h)| h[dead_letter::ERROR].as_str())
        .collect();
    assert!(
        reasons[0].contains("not JSON"),
        "malformed payload reason: {reasons:?}"
    );
    assert_eq!(
        records[0].0.as_deref(),
        Some(&b"{not json"[..]),
        "the record as it was"
    );
    assert!(
        reasons[1].contains("unknown message type"),
        "unknown type reason: {reasons:?}"
    );
    assert_eq!(
        records[1].1[dead_letter::ATTEMPTS],
        "1",
        "no retry for permanent failures"
    );
    assert_eq!(
        stats.dead_lettered(),
        1,
        "the loop dead-lettered the unknown type"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}
