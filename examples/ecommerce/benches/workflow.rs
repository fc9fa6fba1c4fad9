//! The whole system, measured: the app on PostgreSQL and the project's broker with its shipped
//! defaults, beside the embedded app (memory store, in-memory bus) as the floor.
//!
//! `cargo bench -p ecommerce --bench workflow` (with `DATABASE_URL` set and the broker
//! installed: `scripts/broker install`). For each wiring it reports:
//!
//! - **at rest**: CPU of the app, the broker and PostgreSQL over `WORKFLOW_IDLE_SECS` (30) with
//!   no traffic, as a share of one core, and PostgreSQL's transactions per second;
//! - **one at a time**: 20 orders by one customer after another, place → final status p50/p99,
//!   and the median of each hop (placed → processed → paid → shipped, from the order's events);
//! - **paced**: `WORKFLOW_RATE` (40) orders per second for 200 orders, p50/p99, and the CPU
//!   each process used meanwhile;
//! - **saturation**: 200 orders, 8 customers at a time (the demo's defaults), throughput,
//!   p50/p99, the CPU each process used meanwhile, and the median of each hop (where the
//!   orders queue).
//!
//! Every run also checks the demo's invariants: a run that loses anything fails. To compare
//! settings with the same command, `KAFKA_CONFIG_*` variables reach librdkafka as in the app,
//! `ECOMMERCE_CONSUMERS` sets the members of the workflow's consumer group and
//! `ECOMMERCE_PARTITIONS` the partitions of each topic, and `ECOMMERCE_THROUGH_BROKER=true`
//! sends every message through the broker (by default the process's own topics take the
//! durable local route).

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

#[path = "../src/demo/mod.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod demo;

#[path = "../tests/kafka/broker.rs"]
#[allow(dead_code)]
mod broker;

#[path = "../../../es-postgres/tests/common/test_lock.rs"]
mod test_lock;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use demo::shop::InProcess;
use demo::{DemoOptions, DemoReport};
use ecommerce::app::{App, AppConfig, KafkaSettings, WorkflowConfig};
use ecommerce::backend::Backend;
use ecommerce::failures::FailureRules;
use uuid::Uuid;

/// CPU time of one process, in clock ticks (user + system), from `/proc/<pid>/stat`.
fn ticks_of(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| ticks_of(&stat))
        .unwrap_or(0)
}

/// CPU ticks of every PostgreSQL process (the postmaster, its workers and every backend).
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat.contains("(postgres)"))
        .filter_map(|stat| ticks_of(&stat))
        .sum()
}

/// Clock ticks per second.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Committed and rolled-back transactions of the whole cluster so far.
async fn transactions(pg: &tokio_postgres::Client) -> i64 {
    pg.query_one(
        "SELECT sum(xact_commit + xact_rollback)::bigint FROM pg_stat_database",
        &[],
    )
    .await
    .map(|row| row.get(0))
    .unwrap_or(0)
}

/// CPU of the app, the broker and PostgreSQL, and PostgreSQL's transactions, over a span.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    app: f64,
    broker: f64,
    postgres: f64,
    transactions_per_second: f64,
}

struct Meter {
    broker: Option<u32>,
    pg: tokio_postgres::Client,
    hz: f64,
    started: Instant,
    app: u64,
    broker_ticks: u64,
    postgres: u64,
    transactions: i64,
}

impl Meter {
    async fn start(broker: Option<u32>, pg: tokio_postgres::Client) -> Self {
        let transactions = transactions(&pg).await;
        Self {
            broker_ticks: broker.map_or(0, ticks),
            broker,
            hz: clock_ticks(),
            started: Instant::now(),
            app: ticks(std::process::id()),
            postgres: postgres_ticks(),
            transactions,
            pg,
        }
    }

    /// Shares of one core, and transactions per second, since the start.
    async fn read(self) -> Usage {
        let seconds = self.started.elapsed().as_secs_f64();
        let share = |now: u64, then: u64| now.saturating_sub(then) as f64 / self.hz / seconds;
        let transactions = transactions(&self.pg).await;
        Usage {
            app: share(ticks(std::process::id()), self.app),
            broker: self
                .broker
                .map_or(0.0, |pid| share(ticks(pid), self.broker_ticks)),
            postgres: share(postgres_ticks(), self.postgres),
            transactions_per_second: (transactions - self.transactions) as f64 / seconds,
        }
    }
}

async fn pg_client() -> tokio_postgres::Client {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: start PostgreSQL and export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test",
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {url}: {e}"));
    tokio::spawn(connection);
    client
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one wiring measured.
struct Figures {
    rest: Usage,
    single: demo::Timing,
    hops: Vec<(String, f64)>,
    paced: demo::Timing,
    paced_usage: Usage,
    rate: f64,
    saturation: demo::Timing,
    /// The median of each step at saturation (where the queueing is).
    saturation_hops: Vec<(String, f64)>,
    busy: Usage,
}

fn options(orders: usize, customers: usize, concurrency: usize) -> DemoOptions {
    DemoOptions {
        orders,
        customers,
        concurrency,
        settle: Duration::from_secs(180),
        ..DemoOptions::default()
    }
}

fn checked(report: &DemoReport, what: &str) -> demo::Timing {
    assert!(
        report.passed(),
        "{what}: {:?} {:?}",
        report.unexpected,
        report.status.violations
    );
    report.timing().expect("orders ran")
}

/// The median time of each step of orders that shipped, from the step before it.
fn hops(report: &DemoReport) -> Vec<(String, f64)> {
    let mut steps: BTreeMap<usize, (String, Vec<f64>)> = BTreeMap::new();
    for outcome in report.outcomes.iter().filter(|o| o.status == "Shipped") {
        for (n, pair) in outcome.timeline.windows(2).enumerate() {
            let ms = (pair[1].1 - pair[0].1).as_seconds_f64() * 1000.0;
            let name = format!("{} → {}", pair[0].0, pair[1].0);
            steps
                .entry(n)
                .or_insert_with(|| (name, Vec::new()))
                .1
                .push(ms);
        }
    }
    steps
        .into_values()
        .map(|(name, mut ms)| {
            ms.sort_by(f64::total_cmp);
            (name, ms[ms.len() / 2])
        })
        .collect()
}

async fn measure(name: &str, app: &App, broker: Option<u32>) -> Figures {
    let shop = Arc::new(InProcess::new(app));
    // Warm up: every consumer has its partitions once an order went through.
    let warm = demo::run(shop.clone(), &options(6, 2, 2)).await.unwrap();
    checked(&warm, "warm-up");
    tokio::time::sleep(Duration::from_secs(5)).await;

    let idle = Duration::from_secs_f64(env_number("WORKFLOW_IDLE_SECS", 30.0));
    println!("{name}: at rest for {idle:?}");
    let meter = Meter::start(broker, pg_client().await).await;
    tokio::time::sleep(idle).await;
    let rest = meter.read().await;

    println!("{name}: one order at a time");
    let single = demo::run(shop.clone(), &options(20, 4, 1)).await.unwrap();
    let single_hops = hops(&single);
    let single = checked(&single, "one at a time");

    let rate = env_number("WORKFLOW_RATE", 40.0);
    println!("{name}: {rate} orders/s");
    let mut paced = options(200, 40, 40);
    paced.rate = Some(rate);
    let meter = Meter::start(broker, pg_client().await).await;
    let paced = demo::run(shop.clone(), &paced).await.unwrap();
    let paced_usage = meter.read().await;
    let paced = checked(&paced, "paced");

    println!("{name}: saturation");
    let meter = Meter::start(broker, pg_client().await).await;
    let saturation = demo::run(shop, &options(200, 20, 8)).await.unwrap();
    let busy = meter.read().await;
    let saturation_hops = hops(&saturation);
    let saturation = checked(&saturation, "saturation");
    Figures {
        rest,
        single,
        hops: single_hops,
        paced,
        paced_usage,
        rate,
        saturation,
        saturation_hops,
        busy,
    }
}

fn print(name: &str, f: &Figures) {
    let pct = |share: f64| share * 100.0;
    println!("\n## {name}");
    println!(
        "at rest: app {:.1}%, broker {:.1}%, PostgreSQL {:.1}% of a core (together {:.1}%); PostgreSQL {:.1} transactions/s",
        pct(f.rest.app),
        pct(f.rest.broker),
        pct(f.rest.postgres),
        pct(f.rest.app + f.rest.broker + f.rest.postgres),
        f.rest.transactions_per_second
    );
    println!(
        "one at a time: p50 {:.0} ms, p99 {:.0} ms",
        f.single.p50_ms, f.single.p99_ms
    );
    for (hop, ms) in &f.hops {
        println!("  {hop}: {ms:.0} ms");
    }
    println!(
        "paced at {} orders/s: {:.1} orders/s, p50 {:.0} ms, p99 {:.0} ms; CPU: app {:.0}%, broker {:.0}%, PostgreSQL {:.0}% of a core",
        f.rate,
        f.paced.orders_per_second,
        f.paced.p50_ms,
        f.paced.p99_ms,
        pct(f.paced_usage.app),
        pct(f.paced_usage.broker),
        pct(f.paced_usage.postgres)
    );
    println!(
        "saturation (200 orders, 8 at a time): {:.1} orders/s, p50 {:.0} ms, p99 {:.0} ms; CPU: app {:.0}%, broker {:.0}%, PostgreSQL {:.0}% of a core; {:.0} transactions/s",
        f.saturation.orders_per_second,
        f.saturation.p50_ms,
        f.saturation.p99_ms,
        pct(f.busy.app),
        pct(f.busy.broker),
        pct(f.busy.postgres),
        f.busy.transactions_per_second
    );
    for (hop, ms) in &f.saturation_hops {
        println!("  {hop}: {ms:.0} ms");
    }
}

/// The private broker's address, with every `KAFKA_CONFIG_*` variable as a librdkafka setting
/// (as the app reads them), so settings can be compared with the same command.
fn kafka_config(bootstrap: &str) -> es_kafka::KafkaConfig {
    std::env::vars().fold(
        es_kafka::KafkaConfig::new(bootstrap),
        |config, (name, value)| match name.strip_prefix(es_kafka::SETTINGS_ENV_PREFIX) {
            Some(setting) => config.set(setting.to_lowercase().replace('_', "."), value),
            None => config,
        },
    )
}

fn main() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = std::env::var("DATABASE_URL").unwrap_or_default();
        let run = Uuid::new_v4().simple().to_string();
        let mut workflow = WorkflowConfig {
            failures: FailureRules::demo(),
            ..WorkflowConfig::default()
        };
        if let Some(members) = std::env::var("ECOMMERCE_CONSUMERS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            workflow.consumers = members;
        }
        if let Some(partitions) = std::env::var("ECOMMERCE_PARTITIONS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            workflow.partitions = partitions;
        }

        if let Ok(through) = std::env::var("ECOMMERCE_THROUGH_BROKER") {
            workflow.through_broker = matches!(through.as_str(), "true" | "1");
        }

        let embedded = App::start(AppConfig {
            workflow,
            ..AppConfig::embedded()
        })
        .await
        .unwrap();
        let floor = measure("embedded", &embedded, None).await;
        embedded.runtime().shutdown().await;
        drop(embedded);

        test_lock::hold_shared();
        let broker = broker::PrivateBroker::start();
        let backend = Backend::postgres(&url, 16, &format!("es_bench_shop_{run}")).unwrap();
        let app = App::start(AppConfig {
            backend,
            workflow,
            kafka: Some(KafkaSettings {
                config: kafka_config(&broker.bootstrap_servers()),
                topic_prefix: format!("bench-{run}-"),
            }),
            ..AppConfig::embedded()
        })
        .await
        .unwrap();
        let real = measure("postgres+broker", &app, Some(broker.pid())).await;
        app.runtime().shutdown().await;
        drop(app);
        drop_schemas(&url, &format!("es_bench_shop_{run}")).await;

        print("embedded (floor)", &floor);
        print("PostgreSQL + broker", &real);
    });
}

/// Drops the schemas the run made (`{prefix}_*`): left behind, hundreds of them slow the
/// catalog, and with it every later run.
async fn drop_schemas(url: &str, prefix: &str) {
    let client = es_postgres::connect(url).await.unwrap();
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
            &[&format!("{prefix}_")],
        )
        .await
        .unwrap();
    for row in rows {
        let schema: String = row.get(0);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .unwrap();
    }
}
