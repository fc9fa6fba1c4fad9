//! Saga steps per second on PostgreSQL: a step is one message handled by `SagaRunner` (load,
//! decide, commit state + one command + inbox record), against a floor of the same load and
//! commit made directly on `PgSagaStore` (no routing, decoding or decision), alternating.
//!
//! `cargo bench --bench saga` (needs `DATABASE_URL`). Prints criterion's report and a table of
//! steps/s and ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use es_benches::{Report, fresh_store};
use es_core::{OutboxMessage, SagaCommit, SagaStore};
use es_postgres::PgSagaStore;
use es_saga::{Decision, Input, Route, Saga, SagaRunner};
use serde_json::json;
use tokio::runtime::Runtime;
use uuid::Uuid;

const SCHEMA: &str = "es_bench_saga";

/// Counts the messages of its instance and sends one command for each.
struct Counter;

impl Saga for Counter {
    const NAME: &'static str = "bench-counter";
    type State = u64;
    type Error = std::convert::Infallible;

    fn route(&self, message: &OutboxMessage) -> Route {
        Route::Start(message.partition_key.clone())
    }

    fn handle(&self, state: u64, _input: &Input<'_>) -> Result<Decision<u64>, Self::Error> {
        Ok(Decision::new(state + 1).send(OutboxMessage::new(
            "Counted",
            "",
            json!({ "n": state + 1 }),
        )))
    }
}

/// `instances` tasks, each handling `iters` messages of an instance of its own.
async fn framework(
    runner: &SagaRunner<Counter, PgSagaStore>,
    instances: usize,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..instances)
        .map(|_| {
            let runner = runner.clone();
            tokio::spawn(async move {
                let key = Uuid::new_v4().simple().to_string();
                for _ in 0..iters {
                    runner
                        .handle(&OutboxMessage::new("Tick", key.clone(), json!({})))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// The same loads and commits, made directly on the store.
async fn floor(store: &PgSagaStore, instances: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..instances)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = Uuid::new_v4().simple().to_string();
                for n in 0..iters {
                    let version = store
                        .load("bench-floor", &key)
                        .await
                        .unwrap()
                        .map_or(0, |i| i.version);
                    let commit = SagaCommit::new(
                        "bench-floor",
                        key.clone(),
                        version,
                        json!({ "stateVersion": 1, "state": n + 1, "awaiting": {} }),
                    )
                    .with_inbox("bench-floor", Uuid::now_v7())
                    .with_outbox(OutboxMessage::new(
                        "Counted",
                        key.clone(),
                        json!({ "n": n + 1 }),
                    ));
                    store.commit(commit).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn bench_case(
    criterion: &mut Criterion,
    runtime: &Runtime,
    store: &PgSagaStore,
    report: &Report,
    instances: usize,
) {
    let runner = SagaRunner::new(Counter, store.clone());
    let case = format!("{instances} instances");
    let mut group = criterion.benchmark_group("saga_steps");
    group.throughput(Throughput::Elements(instances as u64));
    group.bench_function(BenchmarkId::new("framework", &case), |b| {
        b.iter_custom(|iters| {
            let elapsed = runtime.block_on(framework(&runner, instances, iters));
            report.record(
                &case,
                "framework",
                (instances as u64 * iters) as f64,
                elapsed.as_secs_f64(),
            );
            let floor_elapsed = runtime.block_on(floor(store, instances, iters));
            report.record(
                &case,
                "floor",
                (instances as u64 * iters) as f64,
                floor_elapsed.as_secs_f64(),
            );
            elapsed
        })
    });
    group.finish();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = Report::default();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let store = runtime.block_on(fresh_store(SCHEMA, 16, true)).saga_store();
    for instances in [1, 8] {
        bench_case(&mut criterion, &runtime, &store, &report, instances);
    }
    criterion.final_summary();
    println!("\n{}", report.table("steps"));
}
