//! Shared set-up for the criterion benchmarks.
//!
//! Each benchmark runs beside a raw floor measured in the same run, alternating the two
//! (framework, floor, framework, floor), because absolute times on shared machines drift:
//! appends against a plain multi-row `INSERT`, and later stream loads, global scans, the
//! projection daemon, the outbox relay and the ordering workflow. Every run prints a table of
//! events per second and the ratio to the floor; `docs/benchmarks.md` records them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use criterion::BenchmarkId;
use criterion::measurement::WallTime;

use es_postgres::{PgConfig, PgEventStore};

/// The database for benchmarks: `DATABASE_URL`, or a panic saying how to start one.
///
/// # Panics
/// When `DATABASE_URL` is unset.
#[allow(clippy::panic)]
pub fn database_url() -> String {
    es_postgres::database_url().unwrap_or_else(|error| panic!("{error}"))
}

/// A freshly created, migrated schema `schema` (dropped first if it exists), on a pool of
/// `pool_size` connections whose sessions run with `synchronous_commit` as given.
///
/// # Panics
/// When PostgreSQL cannot be reached or migrated.
#[allow(clippy::panic)]
pub async fn fresh_store(schema: &str, pool_size: usize, synchronous_commit: bool) -> PgEventStore {
    let url = database_url();
    let admin = es_postgres::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap_or_else(|error| panic!("cannot drop the bench schema: {error}"));
    let setting = if synchronous_commit { "on" } else { "off" };
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20synchronous_commit%3D{setting}");
    let config = PgConfig::new(url).schema(schema).pool_size(pool_size);
    let store = PgEventStore::connect(&config).unwrap_or_else(|error| panic!("{error}"));
    store
        .migrate()
        .await
        .unwrap_or_else(|error| panic!("cannot migrate the bench schema: {error}"));
    store
}

/// Throughput samples of one run, by case and side, and the table they make.
#[derive(Debug, Default)]
pub struct Report {
    samples: Mutex<BTreeMap<(String, &'static str), Vec<f64>>>,
}

impl Report {
    /// Records one measurement of `units` done in `seconds`.
    pub fn record(&self, case: &str, side: &'static str, units: f64, seconds: f64) {
        if seconds <= 0.0 {
            return;
        }
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        samples
            .entry((case.to_owned(), side))
            .or_default()
            .push(units / seconds);
    }

    /// A markdown table: per case, the median rate of each side and framework ÷ floor.
    pub fn table(&self, unit: &str) -> String {
        let samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cases: Vec<&String> = samples.keys().map(|(case, _)| case).collect();
        cases.dedup();
        let mut out = format!(
            "| case | framework {unit}/s | floor {unit}/s | ratio |\n|---|---:|---:|---:|\n"
        );
        for case in cases {
            let median = |side| samples.get(&(case.clone(), side)).map(|v| median(v));
            let framework = median("framework");
            let floor = median("floor");
            let ratio = match (framework, floor) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "-".to_owned(),
            };
            let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
            let _ = writeln!(
                out,
                "| {case} | {} | {} | {ratio} |",
                show(framework),
                show(floor)
            );
        }
        out
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Measures `framework` and `floor` alternately (`rounds` times each, in that order) in
/// `group`, recording each sample in `report` under `case`. Each closure runs `iters`
/// iterations and returns their wall time; one iteration does `units` units of work.
pub fn alternate(
    group: &mut criterion::BenchmarkGroup<'_, WallTime>,
    report: &Report,
    case: &str,
    units: u64,
    mut framework: impl FnMut(u64) -> Duration,
    mut floor: impl FnMut(u64) -> Duration,
) {
    for round in 1..=2 {
        group.bench_function(BenchmarkId::new("framework", round), |b| {
            b.iter_custom(|iters| {
                let elapsed = framework(iters);
                report.record(
                    case,
                    "framework",
                    (iters * units) as f64,
                    elapsed.as_secs_f64(),
                );
                elapsed
            })
        });
        group.bench_function(BenchmarkId::new("floor", round), |b| {
            b.iter_custom(|iters| {
                let elapsed = floor(iters);
                report.record(case, "floor", (iters * units) as f64, elapsed.as_secs_f64());
                elapsed
            })
        });
    }
}

/// The `p`-quantile (0.0 to 1.0) of `sorted` (ascending); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let last = sorted.len().saturating_sub(1);
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let index = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

/// A markdown table of latencies (ascending): count, p50, p99 and the maximum, in ms.
pub fn latency_table(title: &str, sorted: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "| {title} | p50 | p99 | max |\n|---|---:|---:|---:|\n| {} messages | {:.1} ms | {:.1} ms | {:.1} ms |",
        sorted.len(),
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.99)),
        ms(sorted.last().copied().unwrap_or_default()),
    )
}
