//! The outbox relay, outbox → broker, against a raw rdkafka idempotent producer sending the
//! same records in the same run (alternating); then the latency from commit to broker
//! acknowledgement at a steady 1,000 messages/s.
//!
//! `cargo bench --bench relay` (needs `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`). Each
//! iteration relays (or sends) `ES_BENCH_RELAY_MESSAGES` messages (default 10,000), at least
//! ten samples a side, so at least 100,000 messages each; `ES_BENCH_LATENCY_SECS` (default 10)
//! sets the length of the latency run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use es_benches::{Report, fresh_store, latency_table};
use es_core::relay::{Relay, RelayOptions};
use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, NewEvent, OutboxMessage,
    OutboxSource, Position, PublishFailure, Publisher, StreamId, SystemClock,
};
use es_kafka::{KafkaConfig, KafkaPublisher, TopicRouter, ensure_topics};
use es_postgres::{PgCheckpointStore, PgEventStore};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use tokio::runtime::Runtime;

const SCHEMA: &str = "es_bench_relay";
const LATENCY_SCHEMA: &str = "es_bench_relay_latency";
const TOPIC: &str = "es-bench-relay";
const BATCH: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bootstrap() -> String {
    es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"))
}

fn message(n: usize) -> OutboxMessage {
    let key = format!("order-{}", n % 1_000);
    OutboxMessage::new(
        "OrderPlaced",
        key.clone(),
        json!({ "orderId": key, "n": n, "total": "19.99", "currency": "EUR" }),
    )
    .with_topic(TOPIC)
    .with_source("order", key)
}

async fn append(store: &PgEventStore, stream: &StreamId, messages: Vec<OutboxMessage>) {
    let event = NewEvent {
        event_type: "OrdersPlaced".into(),
        schema_version: 1,
        data: json!({ "count": messages.len() }),
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
}

/// Fills the outbox with `count` messages, 1,000 per append.
async fn fill(store: &PgEventStore, count: usize) {
    let stream = StreamId::new("bench-orders").unwrap();
    for start in (0..count).step_by(BATCH) {
        let messages = (start..(start + BATCH).min(count)).map(message).collect();
        append(store, &stream, messages).await;
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    KafkaConfig::new(bootstrap)
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("enable.gapless.guarantee", "true")
        .set("message.timeout.ms", "0")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "0")
        .set("compression.type", "lz4")
        .create()
        .unwrap()
}

/// The relay moves the whole outbox, from a fresh checkpoint, `iters` times.
async fn framework(store: &PgEventStore, publisher: &Arc<dyn Publisher>, iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let name = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let mut relay = Relay::new(
            name,
            store.clone(),
            PgCheckpointStore::new(store),
            Arc::clone(publisher),
        )
        .with_options(RelayOptions::default().batch_size(BATCH));
        let start = Instant::now();
        while relay.run_once().await.unwrap().read > 0 {}
        elapsed += start.elapsed();
    }
    elapsed
}

/// The floor: the same records, already in memory, sent by a raw idempotent producer in
/// batches of the same size, each awaited like the relay's.
async fn floor(producer: &FutureProducer, messages: &[OutboxMessage], iters: u64) -> Duration {
    let encoded: Vec<_> = messages
        .iter()
        .map(|m| es_kafka::envelope::encode(m).unwrap())
        .collect();
    let start = Instant::now();
    for _ in 0..iters {
        for chunk in encoded.chunks(BATCH) {
            let mut pending = Vec::with_capacity(chunk.len());
            for record in chunk {
                let mut next = FutureRecord::to(TOPIC)
                    .key(&record.key)
                    .payload(&record.payload)
                    .headers(record.headers.clone());
                loop {
                    match producer.send_result(next) {
                        Ok(delivery) => break pending.push(delivery),
                        Err((_, back)) => {
                            next = back;
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                }
            }
            for delivery in futures::future::join_all(pending).await {
                delivery.unwrap().unwrap();
            }
        }
    }
    start.elapsed()
}

/// Records, for every acknowledged message, the time from its creation (just before its
/// append commits) to the acknowledgement.
struct Timing {
    inner: Arc<dyn Publisher>,
    latencies: Mutex<Vec<Duration>>,
}

#[async_trait::async_trait]
impl Publisher for Timing {
    async fn publish(&self, messages: &[OutboxMessage]) -> Result<(), PublishFailure> {
        self.inner.publish(messages).await?;
        let now = chrono::Utc::now();
        let mut latencies = self.latencies.lock().unwrap();
        for message in messages {
            latencies.push((now - message.occurred_at).to_std().unwrap_or_default());
        }
        Ok(())
    }
}

/// A steady 1,000 messages/s (10 every 10 ms) for `seconds`, relayed with the in-process
/// signal; returns the latencies.
async fn latency(bootstrap: &str, seconds: usize) -> Vec<Duration> {
    let store = fresh_store(LATENCY_SCHEMA, 4, true).await;
    let timing = Arc::new(Timing {
        inner: Arc::new(
            KafkaPublisher::new(&KafkaConfig::new(bootstrap), TopicRouter::new()).unwrap(),
        ),
        latencies: Mutex::new(Vec::new()),
    });
    let mut relay = Relay::new(
        "latency",
        store.clone(),
        PgCheckpointStore::new(&store),
        timing.clone(),
    )
    .with_signal(store.append_signal().clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    // A running relay's producer is connected, has the topic's metadata and its producer
    // id: warm it up before the clock starts.
    timing.inner.publish(&[message(0)]).await.unwrap();
    let stream = StreamId::new("latency-orders").unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for round in 0..seconds * 100 {
        tick.tick().await;
        append(
            &store,
            &stream,
            (round * 10..round * 10 + 10).map(message).collect(),
        )
        .await;
    }
    let total = seconds * 1_000;
    while timing.latencies.lock().unwrap().len() < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let mut latencies = timing.latencies.lock().unwrap().clone();
    latencies.sort();
    latencies
}

fn main() {
    let runtime: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = bootstrap();
    let count = env_usize("ES_BENCH_RELAY_MESSAGES", 10_000);
    let seconds = env_usize("ES_BENCH_LATENCY_SECS", 10);
    let report = Report::default();
    let (store, messages) = runtime.block_on(async {
        ensure_topics(&KafkaConfig::new(&bootstrap), &[(TOPIC, 8)])
            .await
            .unwrap();
        let store = fresh_store(SCHEMA, 4, false).await;
        fill(&store, count).await;
        let stored = store.read_outbox(Position::START, count + 1).await.unwrap();
        let messages: Vec<OutboxMessage> = stored.messages.into_iter().map(|m| m.message).collect();
        (store, messages)
    });
    let publisher: Arc<dyn Publisher> =
        Arc::new(KafkaPublisher::new(&KafkaConfig::new(&bootstrap), TopicRouter::new()).unwrap());
    let raw = producer(&bootstrap);

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1));
    let case = format!("outbox → broker, {count} messages a run");
    let mut group = criterion.benchmark_group("relay/throughput");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(count as u64));
    for round in 1..=2 {
        group.bench_function(BenchmarkId::new("framework", round), |b| {
            b.iter_custom(|iters| {
                let elapsed = runtime.block_on(framework(&store, &publisher, iters));
                report.record(
                    &case,
                    "framework",
                    (iters as usize * count) as f64,
                    elapsed.as_secs_f64(),
                );
                elapsed
            })
        });
        group.bench_function(BenchmarkId::new("floor", round), |b| {
            b.iter_custom(|iters| {
                let elapsed = runtime.block_on(floor(&raw, &messages, iters));
                report.record(
                    &case,
                    "floor",
                    (iters as usize * count) as f64,
                    elapsed.as_secs_f64(),
                );
                elapsed
            })
        });
    }
    group.finish();
    criterion.final_summary();
    println!("\n{}", report.table("messages"));

    let latencies = runtime.block_on(latency(&bootstrap, seconds));
    println!(
        "{}",
        latency_table(
            &format!("latency, commit → broker ack, 1,000 messages/s for {seconds} s"),
            &latencies
        )
    );
}
