//! Telemetry of the app on PostgreSQL and the broker: one order is one trace from its HTTP
//! request through the relays, the broker, the saga, inventory, payments and shipments; an
//! order whose payment never answers is cancelled by a deadline whose compensation keeps the
//! trace and the correlation id; and `/metrics` counts what happened.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// The demo's load generator, shared with the `ecommerce` binary (it is not part of the
/// library's API).
#[path = "../src/demo/mod.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod demo;

#[path = "../../../es-postgres/tests/common/test_lock.rs"]
mod test_lock;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use demo::shop::{InProcess, Listener, Shop};
use demo::{DemoOptions, run};
use ecommerce::app::{App, AppConfig, KafkaSettings, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::failures::FailureRules;
use es_telemetry::{Telemetry, TelemetryConfig};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use uuid::Uuid;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The spans of one trace, by span id.
struct Trace<'a> {
    spans: HashMap<SpanId, &'a SpanData>,
}

impl<'a> Trace<'a> {
    fn of(all: &'a [SpanData], trace: TraceId) -> Self {
        Self {
            spans: all
                .iter()
                .filter(|span| span.span_context.trace_id() == trace)
                .map(|span| (span.span_context.span_id(), span))
                .collect(),
        }
    }

    fn names(&self) -> HashSet<String> {
        self.spans.values().map(|s| s.name.to_string()).collect()
    }

    /// Every span's parent is in the trace, but for one root: an HTTP request.
    fn assert_unbroken(&self, what: &str) {
        let roots: Vec<&&SpanData> = self
            .spans
            .values()
            .filter(|span| !self.spans.contains_key(&span.parent_span_id))
            .collect();
        let names: Vec<String> = roots.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(roots.len(), 1, "{what}: one root, found {names:?}");
        assert_eq!(
            roots[0].span_kind,
            SpanKind::Server,
            "{what}: the root is a server span"
        );
        assert!(
            roots[0].name.starts_with("POST "),
            "{what}: the root is the HTTP request placing the order: {names:?}"
        );
    }

    /// Whether `span` descends from `ancestor`.
    fn descends(&self, span: &SpanData, ancestor: SpanId) -> bool {
        let mut parent = span.parent_span_id;
        while let Some(next) = self.spans.get(&parent) {
            if parent == ancestor {
                return true;
            }
            parent = next.parent_span_id;
        }
        false
    }
}

/// A sum of the samples of `metric` with every label in `labels`.
fn sample(metrics: &str, metric: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' ']).next() == Some(metric)
                && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_the_broker_and_metrics_count_what_happened() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run `scripts/test`, or start PostgreSQL and export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    });
    let bootstrap = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    test_lock::hold_shared();
    let exported = InMemorySpanExporter::default();
    let telemetry = Telemetry::init(
        TelemetryConfig::new("ecommerce-test")
            .with_span_exporter(exported.clone())
            .with_log_filter("info"),
    )
    .unwrap();

    let run_id = Uuid::new_v4().simple().to_string();
    let prefix = format!("trace-{run_id}-");
    let app = App::start(AppConfig {
        backend: Backend::postgres(&url, 8, &format!("es_test_trace_{run_id}")).unwrap(),
        workflow: WorkflowConfig {
            failures: FailureRules::demo(),
            step_timeout: Duration::from_secs(3),
            deadline_poll: Duration::from_millis(50),
            held: &["payments"],
            consumers: 1,
            // Every hop through the broker (the local route's hops continue the trace alike).
            through_broker: true,
            ..WorkflowConfig::default()
        },
        kafka: Some(KafkaSettings {
            config: es_kafka::KafkaConfig::new(&bootstrap),
            topic_prefix: prefix.clone(),
        }),
        ..AppConfig::embedded()
    })
    .await
    .unwrap();
    let shop = Arc::new(InProcess::new(&app));
    let one_order = DemoOptions {
        customers: 1,
        orders: 1,
        settle: Duration::from_secs(60),
        ..DemoOptions::default()
    };

    // Payments do not answer: the order's payment step times out and the saga compensates.
    let timed_out = run(shop.clone(), &one_order).await.unwrap();
    let timed_out = &timed_out.outcomes[0];
    assert_eq!(timed_out.reason.as_deref(), Some("ProcessingError"));
    // Payments answer again: the next order ships.
    assert!(app.release("payments"));
    let shipped = run(shop.clone(), &one_order).await.unwrap();
    assert!(shipped.unexpected.is_empty(), "{:?}", shipped.unexpected);
    let shipped = &shipped.outcomes[0];
    assert_eq!(shipped.status, "Shipped");

    // Let the last relays and consumers settle before the spans are read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    telemetry.flush_spans();
    let spans = exported.get_finished_spans().unwrap();
    let saga_spans = |order: Uuid| -> Vec<&SpanData> {
        let key = order.to_string();
        spans
            .iter()
            .filter(|s| attribute(s, "key").as_deref() == Some(key.as_str()))
            .collect()
    };

    // The shipped order: every decision of its saga, and every hop, in one trace.
    let decisions = saga_spans(shipped.order_id);
    assert!(decisions.len() >= 4, "{} saga decisions", decisions.len());
    let trace_id = decisions[0].span_context.trace_id();
    assert!(
        decisions
            .iter()
            .all(|s| s.span_context.trace_id() == trace_id),
        "every decision of the order in one trace"
    );
    let trace = Trace::of(&spans, trace_id);
    trace.assert_unbroken("the shipped order");
    let names = trace.names();
    for topic in [
        "orders",
        "inventory-commands",
        "inventory",
        "payments-commands",
        "payments",
        "shipments-commands",
        "shipments",
    ] {
        // The relay names the message's topic; the app's publisher prefixes it.
        for name in [
            format!("publish {topic}"),
            format!("process {prefix}{topic}"),
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    // The timed-out order: the deadline's decision and its compensation keep the trace
    // and the correlation id of the request that placed the order.
    let decisions = saga_spans(timed_out.order_id);
    let fired = decisions
        .iter()
        .find(|s| attribute(s, "message_type").as_deref() == Some(es_saga::DEADLINE_FIRED))
        .expect("a decision on the fired deadline");
    let trace = Trace::of(&spans, fired.span_context.trace_id());
    trace.assert_unbroken("the timed-out order");
    let conversations: BTreeMap<String, usize> = trace
        .spans
        .values()
        .filter_map(|s| attribute(s, "messaging.message.conversation_id"))
        .fold(BTreeMap::new(), |mut counts, id| {
            *counts.entry(id).or_default() += 1;
            counts
        });
    assert_eq!(
        conversations.len(),
        1,
        "one correlation id across the order's messages: {conversations:?}"
    );
    let compensation = trace
        .spans
        .values()
        .filter(|s| s.name == format!("process {prefix}inventory-commands").as_str())
        .find(|s| trace.descends(s, fired.span_context.span_id()))
        .expect("the stock release the deadline decided on, handled in the same trace");
    assert!(attribute(compensation, "messaging.message.conversation_id").is_some());

    // An incoming traceparent is honoured: the request's span joins the caller's trace.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = axum::http::Request::get("/health")
        .header("traceparent", caller)
        .body(axum::body::Body::empty())
        .unwrap();
    let answered = tower::ServiceExt::oneshot(app.public_router(), request)
        .await
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    telemetry.flush_spans();
    let spans = exported.get_finished_spans().unwrap();
    let health = spans
        .iter()
        .find(|s| s.name == "GET /health")
        .expect("the request's span");
    assert_eq!(
        (health.span_context.trace_id(), health.parent_span_id),
        (
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        )
    );

    // The metrics count what happened.
    let status = ecommerce::ops::status(&app.operations()).await;
    let reply = shop
        .call(Listener::Internal(0), Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let metrics = reply.body.as_str().unwrap().to_owned();
    let published: u64 = status.relays.iter().map(|r| r.published).sum();
    assert_eq!(
        sample(&metrics, "es_relay_published_total", &[]) as u64,
        published,
        "messages relayed"
    );
    let handled: u64 = status.consumers.iter().map(|c| c.handled).sum();
    let counted_ok = sample(&metrics, "es_consumer_handled_total", &["result=\"ok\""])
        + sample(
            &metrics,
            "es_consumer_handled_total",
            &["result=\"duplicate\""],
        );
    assert_eq!(counted_ok as u64, handled, "messages handled");
    assert_eq!(
        sample(
            &metrics,
            "es_consumer_handled_total",
            &["result=\"dead_lettered\""]
        ) as usize,
        status.dead_letters.len(),
        "dead letters"
    );
    let client = deadpool_postgres::Pool::clone(&pool(&url))
        .get()
        .await
        .unwrap();
    let schemas = client
        .query(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
            &[&format!("es_test_trace_{run_id}_%")],
        )
        .await
        .unwrap();
    let mut events = 0_i64;
    for row in schemas {
        let schema: String = row.get(0);
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM \"{schema}\".events"), &[])
            .await
            .map(|row| row.get(0))
            .unwrap_or(0);
        events += count;
    }
    assert!(events > 0);
    assert_eq!(
        sample(&metrics, "es_append_events_total", &[]) as i64,
        events,
        "events appended"
    );
    assert!(
        sample(
            &metrics,
            "es_saga_decisions_total",
            &["outcome=\"committed\""]
        ) >= 8.0
    );
    assert!(sample(&metrics, "es_deadlines_fired_total", &[]) >= 1.0);
    // The gauges measured in the background: the orders view's lag, the consumers' lag.
    for gauge in [
        "es_projection_lag_events{projection=",
        "es_consumer_lag{",
        "es_outbox_backlog{relay=",
        "es_relay_lag_seconds{relay=",
    ] {
        assert!(metrics.contains(gauge), "{gauge} missing from:\n{metrics}");
    }
    // Each order was placed by confirming its quote.
    assert_eq!(
        sample(
            &metrics,
            "http_server_request_duration_seconds_count",
            &[
                "http_route=\"/api/v2/orders/quote/{id}\"",
                "http_request_method=\"POST\""
            ]
        ),
        2.0,
        "{metrics}"
    );
    app.runtime().shutdown().await;
    telemetry.shutdown();
}

fn pool(url: &str) -> deadpool_postgres::Pool {
    es_postgres::PgConfig::new(url).pool().unwrap()
}
