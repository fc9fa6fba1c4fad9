//! Telemetry: the W3C trace context messages carry from span to span, and the framework's
//! metrics.
//!
//! **Traces.** The framework's spans are `tracing` spans; with a
//! [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry) layer installed they are
//! OpenTelemetry spans. A message written to an outbox inside a span carries that span's
//! `traceparent` (and `tracestate`) in its headers ([`inject_current`]); the relay publishes it
//! from a child span; a consumer loop handles it in a span whose parent is the message's
//! context ([`continue_trace`]), and what that handler writes carries the trace on. The
//! headers are written and read by the global text-map propagator
//! (`opentelemetry::global::set_text_map_propagator`, W3C trace context: `es-telemetry` sets
//! it); with none set, or no OpenTelemetry layer, nothing is written and a message keeps the
//! headers it had.
//!
//! **Metrics.** The framework records its metrics with the global OpenTelemetry meter
//! provider (`opentelemetry::global::set_meter_provider`), under the meter `es`; with none
//! set, recording does nothing. Install the provider before the first store, relay or
//! consumer is used: the instruments are created once, on first use. The names, as a
//! Prometheus exporter writes them:
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `es_append_events_total` | counter | `context` | events appended |
//! | `es_append_duration_seconds` | histogram | `context` | one append, from call to commit |
//! | `es_outbox_backlog` | gauge | `relay` | messages waiting in the outbox, as of the relay's last read |
//! | `es_relay_published_total` | counter | `relay`, `topic` | messages the relay published |
//! | `es_relay_lag_seconds` | gauge | `relay` | age of the oldest message not yet published |
//! | `es_consumer_handled_total` | counter | `group`, `topic`, `result` | deliveries by result: `ok`, `retried`, `dead_lettered`, `duplicate` |
//! | `es_consumer_lag` | gauge | `group`, `topic` | records the group has not committed |
//! | `es_projection_lag_events` | gauge | `projection` | events of the log the projection has not applied |
//! | `es_saga_decisions_total` | counter | `saga`, `outcome` | messages and deadlines a saga decided on |
//! | `es_deadlines_fired_total` | counter | `saga` | deadlines fired |
//! | `es_unit_of_work_reruns_total` | counter | `reason` | units of work run again: `conflict` (a stream moved), `lock` (a stream found late) |

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C trace state header.
pub const TRACESTATE: &str = "tracestate";

/// The name of the framework's meter.
pub(crate) const INSTRUMENTATION: &str = "es";

struct HeaderInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct HeaderExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Writes `span`'s trace context into `headers`, replacing the one they carried, when the span
/// is part of a trace; leaves them as they are otherwise. Returns whether it wrote.
pub fn inject(span: &tracing::Span, headers: &mut BTreeMap<String, String>) -> bool {
    if span.is_disabled() {
        return false;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return false;
    }
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
    true
}

/// Writes the current span's trace context into `headers` (see [`inject`]).
pub fn inject_current(headers: &mut BTreeMap<String, String>) -> bool {
    inject(&tracing::Span::current(), headers)
}

/// The trace context `headers` carry: an empty context when they carry none (or a malformed
/// one).
pub fn extract(headers: &BTreeMap<String, String>) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Makes `span` a child of the trace context `headers` carry, if they carry one.
pub fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if span.is_disabled() || !headers.contains_key(TRACEPARENT) {
        return;
    }
    let context = extract(headers);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The framework's instruments (see the [module](self) documentation).
#[derive(Debug)]
pub struct Metrics {
    /// `es_append_events_total`.
    pub append_events: Counter<u64>,
    /// `es_append_duration_seconds`.
    pub append_duration: Histogram<f64>,
    /// `es_outbox_backlog`.
    pub outbox_backlog: Gauge<u64>,
    /// `es_relay_published_total`.
    pub relay_published: Counter<u64>,
    /// `es_relay_lag_seconds`.
    pub relay_lag: Gauge<f64>,
    /// `es_consumer_handled_total`.
    pub consumer_handled: Counter<u64>,
    /// `es_consumer_lag`.
    pub consumer_lag: Gauge<i64>,
    /// `es_projection_lag_events`.
    pub projection_lag: Gauge<u64>,
    /// `es_saga_decisions_total`.
    pub saga_decisions: Counter<u64>,
    /// `es_deadlines_fired_total`.
    pub deadlines_fired: Counter<u64>,
    /// `es_unit_of_work_reruns_total`.
    pub unit_reruns: Counter<u64>,
}

/// The framework's instruments, created on first use from the global meter provider.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter(INSTRUMENTATION);
        Metrics {
            append_events: meter
                .u64_counter("es_append_events")
                .with_description("Events appended")
                .build(),
            append_duration: meter
                .f64_histogram("es_append_duration")
                .with_unit("s")
                .with_description("One append, from the call to the commit")
                .with_boundaries(vec![
                    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
            outbox_backlog: meter
                .u64_gauge("es_outbox_backlog")
                .with_description("Messages waiting in the outbox, as of the relay's last read")
                .build(),
            relay_published: meter
                .u64_counter("es_relay_published")
                .with_description("Messages the relay published")
                .build(),
            relay_lag: meter
                .f64_gauge("es_relay_lag")
                .with_unit("s")
                .with_description("Age of the oldest outbox message not yet published")
                .build(),
            consumer_handled: meter
                .u64_counter("es_consumer_handled")
                .with_description("Deliveries by result: ok, retried, dead_lettered, duplicate")
                .build(),
            consumer_lag: meter
                .i64_gauge("es_consumer_lag")
                .with_description("Records on the group's partitions it has not committed")
                .build(),
            projection_lag: meter
                .u64_gauge("es_projection_lag_events")
                .with_description("Events of the log the projection has not applied yet")
                .build(),
            saga_decisions: meter
                .u64_counter("es_saga_decisions")
                .with_description("Messages and deadlines a saga decided on, by outcome")
                .build(),
            deadlines_fired: meter
                .u64_counter("es_deadlines_fired")
                .with_description("Deadlines fired")
                .build(),
            unit_reruns: meter
                .u64_counter("es_unit_of_work_reruns")
                .with_description(
                    "Units of work run again, by reason: conflict (a stream moved) or lock (a stream found late)",
                )
                .build(),
        }
    })
}

/// The span of one append to `stream` of `context`'s store (`db_system`: `postgresql`, or
/// `memory`).
pub fn append_span(
    db_system: &'static str,
    context: &str,
    stream: &crate::StreamId,
    events: usize,
) -> tracing::Span {
    tracing::info_span!(
        "append",
        otel.name = %format_args!("append {context}"),
        otel.kind = "client",
        db.system.name = db_system,
        db.namespace = %context,
        db.operation.name = "append",
        es.stream_id = %stream,
        es.events = events,
    )
}

/// Records a committed append of `events` events to `context`'s store, begun at `started`:
/// `es_append_events_total` and `es_append_duration_seconds`.
pub fn record_append(context: &str, events: usize, started: std::time::Instant) {
    let metrics = metrics();
    let labels = [label("context", context.to_owned())];
    metrics
        .append_events
        .add(u64::try_from(events).unwrap_or(u64::MAX), &labels);
    metrics
        .append_duration
        .record(started.elapsed().as_secs_f64(), &labels);
}

/// A metric label (an OpenTelemetry attribute).
pub fn label(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}

tokio::task_local! {
    /// Set by an inbox that found a delivery handled before, read by the consumer loop.
    static DUPLICATE: Cell<bool>;
}

/// Tells the consumer loop handling the current delivery that it was a duplicate (its
/// message was handled before): it is counted as `duplicate`, not `ok`. Inbox handlers call
/// it; a handler of its own that deduplicates may too. Outside a consumer loop it does
/// nothing.
pub fn mark_duplicate() {
    let _ = DUPLICATE.try_with(|flag| flag.set(true));
}

/// Runs `handling` (a handler's future) and tells whether it marked its delivery a duplicate.
pub(crate) async fn watch_duplicate<T>(handling: impl Future<Output = T>) -> (T, bool) {
    DUPLICATE
        .scope(Cell::new(false), async {
            let outcome = handling.await;
            (outcome, DUPLICATE.with(Cell::get))
        })
        .await
}
