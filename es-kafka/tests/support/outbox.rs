//! Test support for the relay: a fresh PostgreSQL outbox, concurrent writers, consuming a
//! topic back through the envelope, and per-key order checks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, NewEvent, OutboxMessage,
    PublishFailure, Publisher, StreamId, SystemClock,
};
use es_postgres::{PgConfig, PgEventStore};
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::json;

/// The source aggregate type of every test message; with a unique router prefix it makes a
/// unique topic.
pub const SOURCE_TYPE: &str = "counter";

/// A store in a fresh, migrated schema (`scripts/test` drops `es_test_*` schemas); the test
/// holds the suite's lock shared from then on.
pub async fn fresh_store() -> PgEventStore {
    let url = es_postgres::database_url().unwrap_or_else(|error| panic!("{error}"));
    super::test_lock::hold_shared();
    let schema = format!("es_test_{}", uuid::Uuid::new_v4().simple());
    let config = PgConfig::new(url).schema(schema).pool_size(12);
    let store = PgEventStore::connect(&config).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.unwrap_or_else(|error| {
        panic!(
            "cannot migrate a test schema: {error}; is PostgreSQL running? `scripts/test` starts it"
        )
    });
    store
}

/// Writes `total` messages over `keys` keys with `writers` concurrent writers, `per_append`
/// messages per append, each message numbered per key from 1 in the order written (each
/// writer owns the keys `k` with `k % writers == w`). `pause` is slept between appends.
pub async fn write(
    store: &PgEventStore,
    writers: usize,
    total: usize,
    keys: usize,
    per_append: usize,
    pause: Duration,
) {
    let per_writer = total / writers;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let own: Vec<String> = (0..keys)
                    .filter(|k| k % writers == w)
                    .map(|k| format!("key-{k}"))
                    .collect();
                let stream = StreamId::new(format!("writer-{w}")).unwrap();
                let mut counters: HashMap<String, u64> = HashMap::new();
                let mut written = 0;
                while written < per_writer {
                    let count = per_append.min(per_writer - written);
                    let messages: Vec<OutboxMessage> = (0..count)
                        .map(|i| {
                            let key = own[(written + i) % own.len()].clone();
                            let n = counters.entry(key.clone()).or_default();
                            *n += 1;
                            OutboxMessage::new(
                                "Counted",
                                key.clone(),
                                json!({ "key": key, "n": *n }),
                            )
                            .with_source(SOURCE_TYPE, key.clone())
                            .with_header(
                                "traceparent",
                                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                            )
                        })
                        .collect();
                    written += count;
                    let event = NewEvent {
                        event_type: "Counted".into(),
                        schema_version: 1,
                        data: json!({ "written": written }),
                        metadata: CommandContext::new().metadata(&SystemClock),
                    };
                    store
                        .append(
                            AppendRequest::new(stream.clone(), ExpectedVersion::Any)
                                .with_events([event])
                                .with_outbox(messages),
                        )
                        .await
                        .unwrap();
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Reads `topic` from its start in a new consumer group until `distinct` distinct messages
/// arrived (failing after `within`), then a little longer to catch duplicates; returns every
/// record decoded, in the order consumed.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    distinct: usize,
    within: Duration,
) -> Vec<OutboxMessage> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", super::unique("relay-check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while seen.len() < distinct {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let record = tokio::time::timeout(left, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {distinct} messages arrived on {topic} in {within:?}",
                    seen.len()
                )
            })
            .unwrap();
        let message = es_kafka::envelope::decode(&record).unwrap();
        seen.insert(message.message_id);
        records.push(message);
    }
    // Anything still coming is a duplicate; collect it so it is counted.
    while let Ok(Ok(record)) =
        tokio::time::timeout(Duration::from_millis(1500), consumer.recv()).await
    {
        records.push(es_kafka::envelope::decode(&record).unwrap());
    }
    records
}

/// Asserts that every key's numbers arrive in order: never ahead of one past the highest
/// seen (a re-publication may repeat earlier ones), over `keys` keys whose highest numbers
/// add up to `total` (so none is missing). Returns how many records were duplicates.
pub fn assert_per_key_order(records: &[OutboxMessage], keys: usize, total: u64) -> usize {
    let mut highest: HashMap<&str, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for message in records {
        let n = message.payload["n"].as_u64().unwrap();
        let top = highest.entry(&message.partition_key).or_default();
        assert!(
            n <= *top + 1,
            "key {} skipped from {top} to {n}: reordered or lost",
            message.partition_key
        );
        *top = (*top).max(n);
        ids.insert(message.message_id);
    }
    assert_eq!(highest.len(), keys, "every key arrived");
    assert_eq!(
        highest.values().sum::<u64>(),
        total,
        "every message of every key arrived"
    );
    assert_eq!(
        ids.len() as u64,
        total,
        "as many distinct messages as written"
    );
    records.len() - ids.len()
}

/// A publisher that counts what it published through `inner`.
pub struct Counting {
    pub inner: Arc<dyn Publisher>,
    pub published: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Publisher for Counting {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        let outcome = self.inner.publish(messages).await;
        let acknowledged = match &outcome {
            Ok(()) => messages.len(),
            Err(failure) => failure.acknowledged,
        };
        self.published.fetch_add(acknowledged, Ordering::SeqCst);
        outcome
    }
}
