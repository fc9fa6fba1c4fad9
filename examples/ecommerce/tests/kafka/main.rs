//! The app on PostgreSQL and the project's Kafka-protocol broker: 200 orders end to end, with
//! the relays and consumers crashing midway, with every message delivered twice, and with the
//! broker frozen for 10 s. Each test runs on a broker of its own, one test at a time (they
//! are `alone_*` and hold the suite's lock exclusively): each drives the whole workflow and
//! one freezes its broker.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// The demo's load generator, shared with the `ecommerce` binary (it is not part of the
/// library's API).
#[path = "../../src/demo/mod.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod demo;

mod broker;
#[path = "../common/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod privacy;
mod split;
#[path = "../../../../es-postgres/tests/common/test_lock.rs"]
mod test_lock;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use demo::shop::{InProcess, Listener, Remote, Shop};
use demo::{DemoOptions, DemoReport, run};
use ecommerce::app::{App, AppConfig, KafkaSettings, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::failures::FailureRules;
use uuid::Uuid;

/// The database URL; from the first call the test holds the suite's lock shared, unless it
/// called `test_lock::alone()` before (as every test here does).
fn database_url() -> String {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run `scripts/test`, or start PostgreSQL and export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    });
    test_lock::hold_shared();
    url
}

/// Which way the workflow's messages travel between the contexts of the one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The durable local route (the default).
    Local,
    /// Kafka, every one of them (`WorkflowConfig::through_broker`).
    Broker,
}

async fn app(bootstrap: &str, duplicate_delivery: bool, via: Via) -> App {
    app_named(
        bootstrap,
        duplicate_delivery,
        via,
        &Uuid::new_v4().simple().to_string(),
    )
    .await
}

/// The app on schemas `es_test_shop_{run}_*` and topics `shop-{run}-*`.
async fn app_named(bootstrap: &str, duplicate_delivery: bool, via: Via, run: &str) -> App {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let backend = Backend::postgres(&database_url(), 16, &format!("es_test_shop_{run}")).unwrap();
    App::start(AppConfig {
        backend,
        workflow: WorkflowConfig {
            failures: FailureRules::demo(),
            duplicate_delivery,
            deadline_poll: Duration::from_millis(100),
            through_broker: via == Via::Broker,
            ..WorkflowConfig::default()
        },
        kafka: Some(KafkaSettings {
            // `TEST_RDKAFKA_DEBUG=cgrp,fetch` (with `RUST_LOG=librdkafka=debug`) logs what
            // librdkafka's group and fetchers do, to diagnose a stalled run.
            config: match std::env::var("TEST_RDKAFKA_DEBUG") {
                Ok(debug) => es_kafka::KafkaConfig::new(bootstrap).set("debug", debug),
                Err(_) => es_kafka::KafkaConfig::new(bootstrap),
            },
            topic_prefix: format!("shop-{run}-"),
        }),
        ..AppConfig::embedded()
    })
    .await
    .unwrap_or_else(|e| panic!("the app did not start on PostgreSQL and {bootstrap}: {e}"))
}

/// The database's sessions that are not idle (in a transaction, running, or waiting for a
/// lock), one per line: what a stalled run's handlers wait for.
async fn database_activity() -> String {
    let client = match es_postgres::connect(&database_url()).await {
        Ok(client) => client,
        Err(error) => return format!("(the database did not answer: {error})"),
    };
    let rows = client
        .query(
            "SELECT pid, coalesce(state, ''), \
                    coalesce(wait_event_type || ':' || wait_event, ''), \
                    coalesce(extract(epoch FROM now() - xact_start)::float8, 0), \
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 160) \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND (state <> 'idle' OR wait_event_type = 'Lock')",
            &[],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => return format!("(pg_stat_activity could not be read: {error})"),
    };
    rows.iter()
        .map(|row| {
            format!(
                "{} {} {} in a transaction for {:.1} s: {}",
                row.get::<_, i32>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, f64>(3),
                row.get::<_, String>(4)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn options(orders: usize) -> DemoOptions {
    DemoOptions {
        orders,
        settle: Duration::from_secs(120),
        ..DemoOptions::default()
    }
}

fn assert_settled(report: &DemoReport, orders: usize) {
    assert_eq!(report.outcomes.len(), orders);
    assert!(
        report.unexpected.is_empty(),
        "{:#?}\nthe workflow's status: {}",
        report.unexpected,
        serde_json::to_string_pretty(&report.status).unwrap()
    );
    assert!(
        report.status.invariants_hold,
        "{:#?}",
        report.status.violations
    );
    assert!(
        report.status.dead_letters.is_empty(),
        "{:#?}",
        report.status.dead_letters
    );
    // Idle: the daemon-kept read model has applied everything, every group's lag was
    // measured on the broker, and no partition is paused.
    let view = &report.status.projections[0];
    assert_eq!(
        (view.name.as_str(), view.state.as_str(), view.lag_events),
        ("orders-view", "running", 0),
        "{view:?}"
    );
    assert!(
        report
            .status
            .consumers
            .iter()
            .all(|c| c.lag.is_some() && c.lag_error.is_none()),
        "{:#?}",
        report.status.consumers
    );
    assert!(report.status.paused_partitions.is_empty());
    assert!(report.status.paused_partitions_error.is_none());
    for reason in [
        "OutOfStock",
        "CreditLimitReached",
        "PaymentFailed",
        "ShipmentFailed",
    ] {
        assert!(
            report.status.by_reason.contains_key(reason),
            "{reason}: {:?}",
            report.status.by_reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_two_hundred_orders_on_postgres_and_kafka() {
    test_lock::alone();
    // Metrics, to count the units of work that ran again.
    let _telemetry =
        es_telemetry::Telemetry::init(es_telemetry::TelemetryConfig::new("ecommerce-kafka-test"))
            .unwrap();
    let broker = broker::PrivateBroker::start();
    let app = app(&broker.bootstrap_servers(), false, Via::Local).await;
    // Everything pushed live to this instance's subscribers while the orders run.
    let pushed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut live = app.books().subscribe();
    let listener = {
        let pushed = pushed.clone();
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(notification) => pushed.lock().unwrap().push(notification),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    Err(lagged) => panic!("the live feed fell behind: {lagged}"),
                }
            }
        })
    };
    let report = run(Arc::new(InProcess::new(&app)), &options(200))
        .await
        .unwrap();
    assert_settled(&report, 200);

    // Stock is a stream per product and an order's reservation locks its products first: no
    // unit of work ran again, after a conflict or to lock a stream found late (releases name
    // their products).
    let metrics = es_telemetry::render_metrics().expect("telemetry is set up");
    let reruns = |reason: &str| {
        metrics
            .lines()
            .filter(|line| line.starts_with("es_unit_of_work_reruns_total{"))
            .filter(|line| line.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            + 0.0
    };
    assert!(
        metrics.contains("es_consumer_handled_total"),
        "the framework's metrics are exported"
    );
    let (conflicts, locks) = (reruns("conflict"), reruns("lock"));
    eprintln!("units of work run again: {conflicts} after a conflict, {locks} to lock a stream");
    assert_eq!(
        (conflicts, locks),
        (0.0, 0.0),
        "units of work ran again (after conflicts, to lock streams)"
    );

    // Every status change in the daemon-kept feed was pushed live once, in order, to its own
    // customer (the feed is what a reconnecting client replays).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut customers: Vec<_> = app
        .books()
        .orders()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.customer_id)
        .collect();
    customers.sort();
    customers.dedup();
    let mut feed = Vec::new();
    for customer in customers {
        feed.extend(app.books().notifications(customer, 0).await.unwrap());
    }
    feed.sort_by_key(|n| n.id);
    assert!(feed.len() >= 200 * 2, "{} notifications", feed.len());
    assert!(!listener.is_finished(), "the listener stopped early");
    listener.abort();
    let pushed = pushed.lock().unwrap().clone();
    assert_eq!(
        pushed, feed,
        "each committed notification pushed once, in order"
    );
    app.runtime().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_every_message_delivered_twice_changes_nothing() {
    test_lock::alone();
    let broker = broker::PrivateBroker::start();
    let app = app(&broker.bootstrap_servers(), true, Via::Local).await;
    let report = run(Arc::new(InProcess::new(&app)), &options(100))
        .await
        .unwrap();
    assert_settled(&report, 100);
    app.runtime().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_relays_and_consumers_crash_midway_and_resume() {
    crash_midway_and_resume(Via::Broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_relays_and_consumers_crash_midway_and_resume_on_the_local_route() {
    crash_midway_and_resume(Via::Local).await;
}

/// 200 orders, the workflow crashing (its services aborted mid-message, as a crash would)
/// once orders flow, then stopped and started gracefully: every order ends as its kind says.
async fn crash_midway_and_resume(via: Via) {
    test_lock::alone();
    let broker = broker::PrivateBroker::start();
    let app = Arc::new(app(&broker.bootstrap_servers(), false, via).await);
    let shop = Arc::new(InProcess::new(&app));
    let demo = tokio::spawn(async move { run(shop, &options(200)).await });
    let terminal = |app: Arc<App>| async move {
        app.books()
            .orders()
            .await
            .unwrap()
            .iter()
            .filter(|o| o.status.is_terminal())
            .count()
    };
    // Crash midway, then (once orders flow again) stop and start gracefully.
    for crash in [true, false] {
        let done = terminal(app.clone()).await;
        let started = std::time::Instant::now();
        while terminal(app.clone()).await < done + 30 {
            if started.elapsed() > Duration::from_secs(90) {
                let status = ecommerce::ops::status(&app.operations()).await;
                panic!(
                    "orders stopped ending; the workflow's status: {}\nthe database's busy sessions:\n{}",
                    serde_json::to_string_pretty(&status).unwrap(),
                    database_activity().await
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::timeout(Duration::from_secs(60), app.restart_workflow(crash))
            .await
            .unwrap_or_else(|_| panic!("restarting the workflow (crash: {crash}) took over 60 s"))
            .unwrap();
    }
    let report = demo.await.unwrap().unwrap();
    assert_settled(&report, 200);
    app.runtime().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_frozen_broker_delays_orders_and_loses_none() {
    test_lock::alone();
    let private = broker::PrivateBroker::start();
    let app = Arc::new(app(&private.bootstrap_servers(), false, Via::Broker).await);
    let shop = Arc::new(InProcess::new(&app));
    let demo = tokio::spawn(async move { run(shop, &options(200)).await });
    let started = std::time::Instant::now();
    while app.books().orders().await.unwrap().len() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "orders stopped coming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    private.pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    private.resume();
    let report = demo.await.unwrap().unwrap();
    assert_settled(&report, 200);
    app.runtime().shutdown().await;
}

/// `ecommerce serve` on PostgreSQL and the broker, killed when dropped.
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Polls `/ready` until it answers 200; returns when it did.
async fn ready(shop: &Remote, within: Duration) -> chrono::DateTime<chrono::Utc> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = shop
            .call(Listener::Public, Method::GET, "/ready", None, None)
            .await;
        if matches!(reply, Ok(ref reply) if reply.status == StatusCode::OK) {
            return chrono::Utc::now();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready within {within:?}: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_ten_fresh_starts_each_complete_their_first_order_within_five_seconds_of_ready() {
    test_lock::alone();
    let url = database_url();
    // One broker for the ten starts: from the second on, it is a broker earlier runs used.
    let broker = broker::PrivateBroker::start();
    let mut measured = Vec::new();
    for start in 0..10 {
        let fresh = Uuid::new_v4().simple().to_string();
        let (public, internal) = (free_port(), free_port());
        let launched = std::time::Instant::now();
        let _served = Served(
            std::process::Command::new(env!("CARGO_BIN_EXE_ecommerce"))
                .args([
                    "serve",
                    "--public-addr",
                    &format!("127.0.0.1:{public}"),
                    "--internal-addr",
                    &format!("127.0.0.1:{internal}"),
                ])
                .env("DATABASE_URL", &url)
                .env("ECOMMERCE_SCHEMA_PREFIX", format!("es_test_fresh_{fresh}"))
                .env("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap_servers())
                .env("ECOMMERCE_TOPIC_PREFIX", format!("fresh-{fresh}-"))
                // Through the broker: each start joins the workflow's consumer group.
                .env("ECOMMERCE_THROUGH_BROKER", "true")
                .env_remove("ECOMMERCE_PRODUCTION")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let shop = Remote::new(
            &format!("http://127.0.0.1:{public}"),
            &[format!("http://127.0.0.1:{internal}")],
        );
        let ready_at = ready(&shop, Duration::from_secs(60)).await;
        let to_ready = launched.elapsed();
        let report = run(
            Arc::new(shop),
            &DemoOptions {
                customers: 1,
                orders: 1,
                settle: Duration::from_secs(30),
                ..DemoOptions::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("start {start}: {error}"));
        assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
        let (placed, ended) = report.outcomes[0].span.expect("the order has a history");
        let after_ready = (ended - ready_at).to_std().unwrap_or_default();
        let order = (ended - placed).to_std().unwrap_or_default();
        eprintln!(
            "start {start}: ready after {to_ready:?}; first order ended {after_ready:?} after ready ({order:?} from its placement)"
        );
        measured.push(after_ready);
    }
    let late: Vec<_> = measured
        .iter()
        .enumerate()
        .filter(|(_, took)| **took > Duration::from_secs(5))
        .collect();
    assert!(
        late.is_empty(),
        "first orders later than 5 s after ready: {late:?}"
    );
}

/// The threads of this process.
fn threads() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

/// 80 anonymous `/ready` calls at once ask the broker once, on the one long-lived client:
/// the process's threads do not grow with the callers (a client per call took 55 threads to
/// 254).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_ready_calls_at_once_share_one_broker_client() {
    let bootstrap = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    let app = app(&bootstrap, false, Via::Local).await;
    let public = app.public_router();
    let get_ready = || {
        let public = public.clone();
        async move {
            let request = axum::http::Request::get("/ready")
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(public, request)
                .await
                .unwrap()
                .status()
        }
    };
    let started = std::time::Instant::now();
    while get_ready().await != StatusCode::OK {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = threads();
    let statuses = futures::future::join_all((0..80).map(|_| get_ready())).await;
    let after = threads();
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        after <= before + 4,
        "threads grew from {before} to {after} for 80 /ready calls"
    );
    app.runtime().shutdown().await;
}

/// A context held back on the local route (as if it were down): its commands wait, handed
/// over and counted in its group's lag, the relay's checkpoint before them; released, it
/// handles them and the order ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_context_on_the_local_route_gets_its_commands_once_released() {
    let bootstrap = es_kafka::bootstrap_servers().unwrap_or_else(|error| panic!("{error}"));
    let run_id = Uuid::new_v4().simple().to_string();
    let backend = Backend::postgres(&database_url(), 8, &format!("es_test_held_{run_id}")).unwrap();
    let app = App::start(AppConfig {
        backend,
        workflow: WorkflowConfig {
            failures: FailureRules::demo(),
            held: &["payments"],
            ..WorkflowConfig::default()
        },
        kafka: Some(KafkaSettings {
            config: es_kafka::KafkaConfig::new(&bootstrap),
            topic_prefix: format!("held-{run_id}-"),
        }),
        ..AppConfig::embedded()
    })
    .await
    .unwrap();
    let shop = Arc::new(InProcess::new(&app));
    let one_order = DemoOptions {
        customers: 1,
        orders: 1,
        settle: Duration::from_secs(30),
        ..DemoOptions::default()
    };
    let placing = tokio::spawn(async move { run(shop, &one_order).await });
    // The payment command waits for the payments group.
    let started = std::time::Instant::now();
    loop {
        let lags = app.runtime().consumer_lag().await;
        if lags.get("payments") == Some(&Ok(Some(1))) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the payment command never waited for the held group: {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let orders = app.books().orders().await.unwrap();
    assert_eq!(orders.len(), 1);
    assert!(!orders[0].status.is_terminal(), "{:?}", orders[0].status);
    assert!(app.release("payments"));
    let report = placing.await.unwrap().unwrap();
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(
        report.status.invariants_hold,
        "{:?}",
        report.status.violations
    );
    let lags = app.runtime().consumer_lag().await;
    assert_eq!(lags.get("payments"), Some(&Ok(Some(0))), "{lags:?}");
    app.runtime().shutdown().await;
}
