//! One trace across a command, its outbox message, the relay's publish, the consumer loop and
//! what its handler writes, on the in-memory store and bus, seen through an in-memory span
//! exporter; and the framework's metrics in the Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use es_core::consume::ConsumerLoop;
use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryEventStore};
use es_core::relay::Relay;
use es_core::{
    Aggregate, AppendRequest, CommandContext, Delivery, DomainEvent, ExpectedVersion, HandlerError,
    MessageHandler, Metadata, NewEvent, OutboxMessage, Repository, StoreError, StoreTransaction,
    StreamId, SystemClock, UnitOfWork,
};
use es_telemetry::{Telemetry, TelemetryConfig};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Default)]
struct Tally(u64);

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
enum TallyEvent {
    #[serde(rename = "Counted")]
    Counted,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = ();
    type Event = TallyEvent;
    type Error = std::convert::Infallible;

    fn decide(&self, (): &()) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Counted])
    }

    fn evolve(&mut self, _: &TallyEvent) {
        self.0 += 1;
    }
}

fn announce(stream: &StreamId, _: &Tally, events: &[(TallyEvent, Metadata)]) -> Vec<OutboxMessage> {
    let topic = if stream.as_str().starts_with("tally-first") {
        "counts"
    } else {
        "echoes"
    };
    events
        .iter()
        .map(|(_, metadata)| {
            OutboxMessage::new("Counted", stream.as_str(), json!({}))
                .with_topic(topic)
                .caused_by(metadata)
        })
        .collect()
}

/// Runs a second command for each message: what it writes continues the trace.
struct Echo(Repository<Tally, MemoryEventStore>);

#[async_trait::async_trait]
impl MessageHandler for Echo {
    async fn handle(&self, _: &Delivery) -> Result<(), HandlerError> {
        let stream = StreamId::new("tally-second").unwrap();
        self.0
            .execute(&stream, &(), &CommandContext::new())
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
            panic!("no span {name:?} among {names:?}")
        })
}

fn trace_of(message: &OutboxMessage) -> (TraceId, SpanId) {
    let traceparent = &message.headers["traceparent"];
    let parts: Vec<&str> = traceparent.split('-').collect();
    (
        TraceId::from_hex(parts[1]).unwrap(),
        SpanId::from_hex(parts[2]).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_its_message_the_relay_and_the_consumer_share_one_trace() {
    let spans = InMemorySpanExporter::default();
    let telemetry = Telemetry::init(
        TelemetryConfig::new("trace-test")
            .with_span_exporter(spans.clone())
            .with_log_filter("info"),
    )
    .unwrap();

    let store = MemoryEventStore::new();
    let bus = MemoryBus::new();
    bus.create_topics(&["counts", "echoes"]);
    let tallies = Repository::<Tally, _>::new(store.clone()).with_outbox(announce);
    let first = StreamId::new("tally-first").unwrap();
    tallies
        .execute(&first, &(), &CommandContext::new())
        .await
        .unwrap();

    let publisher: Arc<dyn es_core::Publisher> = Arc::new(bus.clone());
    let mut relay = Relay::new(
        "tallies",
        store.clone(),
        MemoryCheckpointStore::new(),
        publisher,
    );
    relay.run_once().await.unwrap();
    let counted = bus.published("counts");
    assert_eq!(counted.len(), 1);

    let mut consumer = ConsumerLoop::new(bus.consumer("echo", &["counts"]), Echo(tallies));
    let stats = consumer.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        consumer
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.handled() < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never handled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    relay.run_once().await.unwrap();
    let echoed = bus.published("echoes");
    assert_eq!(echoed.len(), 1);

    telemetry.flush_spans();
    let spans = spans.get_finished_spans().unwrap();
    let command = named(&spans, "tally command");
    let trace = command.span_context.trace_id();
    let publish = named(&spans, "publish counts");
    let process = named(&spans, "process counts");
    // The published message names the publish span, which is a child of the command's.
    assert_eq!(publish.span_context.trace_id(), trace);
    assert_eq!(publish.parent_span_id, command.span_context.span_id());
    assert_eq!(
        trace_of(&counted[0]),
        (trace, publish.span_context.span_id())
    );
    // The consumer continues it; the handler's command is a child of the consumer's span.
    assert_eq!(process.span_context.trace_id(), trace);
    assert_eq!(process.parent_span_id, publish.span_context.span_id());
    let second = spans
        .iter()
        .filter(|span| span.name == "tally command")
        .find(|span| span.parent_span_id == process.span_context.span_id())
        .expect("the handler's command is a child of the consumer's span");
    assert_eq!(second.span_context.trace_id(), trace);
    // And what the handler wrote carries the trace on.
    assert_eq!(trace_of(&echoed[0]).0, trace);
    let appends = spans.iter().filter(|span| span.name == "append memory");
    assert_eq!(appends.count(), 2, "one append span per command");

    let metrics = telemetry.render_metrics();
    for expected in [
        "es_append_events_total{context=\"memory\"} 2",
        "es_relay_published_total{relay=\"tallies\",topic=\"counts\"} 1",
        "es_relay_published_total{relay=\"tallies\",topic=\"echoes\"} 1",
        "es_consumer_handled_total{group=\"echo\",result=\"ok\",topic=\"counts\"} 1",
        "es_append_duration_seconds_count{context=\"memory\"} 2",
        "es_outbox_backlog{relay=\"tallies\"} 0",
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }

    // A unit of work that appends to a stream it did not lock, after writing, runs again.
    let (first, late) = (
        StreamId::new("late-1").unwrap(),
        StreamId::new("late-2").unwrap(),
    );
    let event = || NewEvent {
        event_type: "Counted".into(),
        schema_version: 1,
        data: json!(null),
        metadata: CommandContext::new().metadata(&SystemClock),
    };
    let done = UnitOfWork::new(&MemoryEventStore::new())
        .run(|mut tx| {
            let (first, late) = (&first, &late);
            async move {
                for stream in [first, late] {
                    let append = AppendRequest::new(stream.clone(), ExpectedVersion::Any);
                    tx.append(append.with_events([event()])).await?;
                }
                Ok::<_, StoreError>((tx, ()))
            }
        })
        .await
        .unwrap();
    assert_eq!(done.runs, 2);
    let metrics = telemetry.render_metrics();
    let expected = "es_unit_of_work_reruns_total{reason=\"lock\"} 1";
    assert!(
        metrics.contains(expected),
        "{expected} missing from:\n{metrics}"
    );
    telemetry.shutdown();
}
