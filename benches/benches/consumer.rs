//! The consumer: end-to-end latency from commit to handler at a steady 1,000 messages/s
//! (outbox → relay → broker → `ConsumerRunner`), and consumer throughput with an
//! inbox-recording handler against a raw rdkafka consumer writing the same inbox rows
//! (alternating runs).
//!
//! `cargo bench --bench consumer` (needs `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS`).
//! `ES_BENCH_CONSUMER_MESSAGES` (default 10,000) messages per throughput run,
//! `ES_BENCH_CONSUMER_ROUNDS` (default 3) runs a side, `ES_BENCH_LATENCY_SECS` (default 10)
//! the length of the latency run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use es_benches::{Report, fresh_store, latency_table};
use es_core::relay::Relay;
use es_core::{
    AppendRequest, CommandContext, Delivery, EventStore, ExpectedVersion, HandlerError,
    InboxHandler, MessageHandler, NewEvent, OutboxMessage, Publisher, StreamId, SystemClock,
    TransactionalHandler,
};
use es_kafka::{
    ConsumerRunner, KafkaConfig, KafkaConsumer, KafkaPublisher, RunnerOptions, TopicRouter,
    ensure_topics,
};
use es_postgres::{PgCheckpointStore, PgEventStore, PgTransaction};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use serde_json::json;

const SCHEMA: &str = "es_bench_consumer";
const LATENCY_SCHEMA: &str = "es_bench_consumer_latency";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn message(topic: &str, n: usize) -> OutboxMessage {
    let key = format!("order-{}", n % 1_000);
    OutboxMessage::new(
        "OrderPlaced",
        key.clone(),
        json!({ "orderId": key, "n": n }),
    )
    .with_topic(topic)
}

fn consumer(bootstrap: &str, topic: &str) -> KafkaConsumer {
    KafkaConsumer::builder(
        KafkaConfig::new(bootstrap),
        format!("bench-{}", uuid::Uuid::new_v4().simple()),
    )
    .subscribe([topic])
    .set("session.timeout.ms", "3000")
    .set("heartbeat.interval.ms", "500")
    .build()
    .unwrap()
}

/// Records nothing beyond the inbox row.
struct Noop;

#[async_trait::async_trait]
impl TransactionalHandler<PgTransaction> for Noop {
    type Message = serde_json::Value;

    async fn handle(
        &self,
        _: &mut PgTransaction,
        _: &serde_json::Value,
        _: &Delivery,
    ) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// How many were handled, when the first and when the last.
type Tally = (usize, Option<Instant>, Option<Instant>);

/// Counts handled messages, noting when the first and the last came.
#[derive(Clone, Default)]
struct Clocked(Arc<Mutex<Tally>>);

impl Clocked {
    fn tick(&self) {
        let mut state = self.0.lock().unwrap();
        state.0 += 1;
        let now = Instant::now();
        state.1.get_or_insert(now);
        state.2 = Some(now);
    }

    async fn wait(&self, count: usize) -> Duration {
        loop {
            {
                let state = self.0.lock().unwrap();
                if state.0 >= count {
                    return state.2.unwrap() - state.1.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

struct ClockedInbox<H>(H, Clocked);

#[async_trait::async_trait]
impl<H: MessageHandler> MessageHandler for ClockedInbox<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        self.0.handle(delivery).await?;
        self.1.tick();
        Ok(())
    }
}

async fn framework(
    bootstrap: &str,
    topic: &str,
    store: &PgEventStore,
    count: usize,
    round: usize,
) -> Duration {
    let clock = Clocked::default();
    let inbox = InboxHandler::new(format!("framework-{round}"), store.clone(), Noop);
    let mut runner = ConsumerRunner::new(
        consumer(bootstrap, topic),
        ClockedInbox(inbox, clock.clone()),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let took = clock.wait(count).await;
    stop.send(()).unwrap();
    task.await.unwrap();
    took
}

async fn floor(
    bootstrap: &str,
    topic: &str,
    store: &PgEventStore,
    count: usize,
    round: usize,
) -> Duration {
    let raw: StreamConsumer = KafkaConfig::new(bootstrap)
        .client_config()
        .set(
            "group.id",
            format!("bench-floor-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    raw.subscribe(&[topic]).unwrap();
    let sql = format!(
        "INSERT INTO {SCHEMA}.inbox (subscriber, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    );
    let subscriber = format!("floor-{round}");
    let clock = Clocked::default();
    let mut client = store.pool().get().await.unwrap();
    for _ in 0..count {
        let record = raw.recv().await.unwrap();
        let message = es_kafka::envelope::decode(&record).unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute(&sql, &[&subscriber, &message.message_id])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        raw.store_offset(record.topic(), record.partition(), record.offset() + 1)
            .unwrap();
        clock.tick();
    }
    clock.wait(count).await
}

/// Measures commit → handler for every message.
struct Latency(Arc<Mutex<Vec<Duration>>>);

#[async_trait::async_trait]
impl MessageHandler for Latency {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let age = chrono::Utc::now() - delivery.message.occurred_at;
        self.0
            .lock()
            .unwrap()
            .push(age.to_std().unwrap_or_default());
        Ok(())
    }
}

async fn latency(bootstrap: &str, topic: &str, seconds: usize) -> Vec<Duration> {
    let store = fresh_store(LATENCY_SCHEMA, 4, true).await;
    let publisher: Arc<dyn Publisher> =
        Arc::new(KafkaPublisher::new(&KafkaConfig::new(bootstrap), TopicRouter::new()).unwrap());
    let mut relay = Relay::new(
        "latency",
        store.clone(),
        PgCheckpointStore::new(&store),
        publisher,
    )
    .with_signal(store.append_signal().clone());
    let relay_task = tokio::spawn(async move { relay.run(std::future::pending()).await });
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut runner = ConsumerRunner::new(consumer(bootstrap, topic), Latency(latencies.clone()))
        .with_options(RunnerOptions::default().commit_interval(Duration::from_millis(500)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    // Let the group form before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stream = StreamId::new("latency-orders").unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for round in 0..seconds * 100 {
        tick.tick().await;
        let event = NewEvent {
            event_type: "OrdersPlaced".into(),
            schema_version: 1,
            data: json!({ "round": round }),
            metadata: CommandContext::new().metadata(&SystemClock),
        };
        let messages: Vec<_> = (round * 10..round * 10 + 10)
            .map(|n| message(topic, n))
            .collect();
        store
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::Any)
                    .with_events([event])
                    .with_outbox(messages),
            )
            .await
            .unwrap();
    }
    while latencies.lock().unwrap().len() < seconds * 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    relay_task.abort();
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort();
    sorted
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bootstrap = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    let count = env_usize("ES_BENCH_CONSUMER_MESSAGES", 10_000);
    let rounds = env_usize("ES_BENCH_CONSUMER_ROUNDS", 3);
    let seconds = env_usize("ES_BENCH_LATENCY_SECS", 10);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("es-bench-consumer-{suffix}");
    let latency_topic = format!("es-bench-consumer-latency-{suffix}");
    let report = Report::default();
    runtime.block_on(async {
        let config = KafkaConfig::new(&bootstrap);
        ensure_topics(&config, &[(&topic, 4), (&latency_topic, 4)])
            .await
            .unwrap();
        let store = fresh_store(SCHEMA, 4, false).await;
        let publisher = KafkaPublisher::new(&config, TopicRouter::new()).unwrap();
        let messages: Vec<_> = (0..count).map(|n| message(&topic, n)).collect();
        for batch in messages.chunks(1_000) {
            publisher.publish(batch).await.unwrap();
        }
        let case = format!("{count} messages, inbox-recording handler");
        for round in 0..rounds {
            let took = framework(&bootstrap, &topic, &store, count, round).await;
            report.record(&case, "framework", count as f64, took.as_secs_f64());
            let took = floor(&bootstrap, &topic, &store, count, round).await;
            report.record(&case, "floor", count as f64, took.as_secs_f64());
        }
    });
    println!("{}", report.table("messages"));
    let latencies = runtime.block_on(latency(&bootstrap, &latency_topic, seconds));
    println!(
        "{}",
        latency_table(
            &format!("latency, commit → handler, 1,000 messages/s for {seconds} s"),
            &latencies
        )
    );
}
