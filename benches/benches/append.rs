//! Append throughput: the framework's one-round-trip append against a plain multi-row
//! `INSERT` of the same rows into the same table, alternating, in one run.
//!
//! `cargo bench --bench append` (needs `DATABASE_URL`; `scripts/test` shows how to start
//! PostgreSQL). Prints criterion's report and a table of events/s and ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use es_benches::{Report, alternate, fresh_store};
use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, NewEvent, StreamId, SystemClock,
    Version,
};
use es_postgres::PgEventStore;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

const SCHEMA: &str = "es_bench_append";

fn data(n: u64) -> Value {
    json!({ "sku": format!("SKU-{:05}", n % 20_000), "quantity": n % 7 + 1, "unitPrice": "19.99", "currency": "USD" })
}

fn events(size: usize, base: u64) -> Vec<NewEvent> {
    let context = CommandContext::new().with_actor("bench");
    (0..size as u64)
        .map(|i| NewEvent {
            event_type: "ItemAdded".to_owned(),
            schema_version: 1,
            data: data(base + i),
            metadata: context.metadata(&SystemClock),
        })
        .collect()
}

/// `writers` tasks, each appending `iters` batches of `size` events to a stream of its own.
async fn framework(store: &PgEventStore, writers: usize, size: usize, iters: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(format!("fw-{}", Uuid::new_v4().simple())).unwrap();
                let mut version = Version::ZERO;
                for i in 0..iters {
                    let request =
                        AppendRequest::new(stream.clone(), ExpectedVersion::from_current(version))
                            .with_stream_type("cart")
                            .with_events(events(size, i * size as u64));
                    version = store.append(request).await.unwrap().last_version;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// The floor: the same rows, one plain multi-row `INSERT` per transaction, same pool.
async fn floor(store: &PgEventStore, writers: usize, size: usize, iters: u64) -> Duration {
    let mut sql = format!(
        "INSERT INTO \"{SCHEMA}\".events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata) VALUES "
    );
    for row in 0..size {
        let p = row * 8;
        sql.push_str(&format!(
            "{}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            if row == 0 { "" } else { ", " },
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8
        ));
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let pool = store.pool().clone();
            let sql = sql.clone();
            tokio::spawn(async move {
                let stream = format!("fl-{}", Uuid::new_v4().simple());
                for i in 0..iters {
                    let batch = events(size, i * size as u64);
                    let rows: Vec<(i64, Uuid, Value)> = batch
                        .iter()
                        .enumerate()
                        .map(|(n, e)| {
                            let version = (i * size as u64 + n as u64 + 1) as i64;
                            (
                                version,
                                e.metadata.event_id.as_uuid(),
                                serde_json::to_value(&e.metadata).unwrap(),
                            )
                        })
                        .collect();
                    let schema_version = 1_i32;
                    let stream_type = "cart";
                    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(size * 8);
                    for (event, (version, id, metadata)) in batch.iter().zip(&rows) {
                        params.extend([
                            &stream as &(dyn ToSql + Sync),
                            &stream_type,
                            version,
                            id,
                            &event.event_type,
                            &schema_version,
                            &event.data,
                            metadata,
                        ]);
                    }
                    let client = pool.get().await.unwrap();
                    let statement = client.prepare_cached(&sql).await.unwrap();
                    client.execute(&statement, &params).await.unwrap();
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
    store: &PgEventStore,
    report: &Report,
    sync: bool,
    writers: usize,
    size: usize,
) {
    let sync_label = if sync { "on" } else { "off" };
    let case = format!("{size} ev/append, {writers} writer(s), synchronous_commit {sync_label}");
    let mut group =
        criterion.benchmark_group(format!("append/{size}ev-{writers}w-sync-{sync_label}"));
    group.throughput(Throughput::Elements((size * writers) as u64));
    alternate(
        &mut group,
        report,
        &case,
        (writers * size) as u64,
        |iters| runtime.block_on(framework(store, writers, size, iters)),
        |iters| runtime.block_on(floor(store, writers, size, iters)),
    );
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
    for sync in [true, false] {
        let store = runtime.block_on(fresh_store(SCHEMA, 16, sync));
        for writers in [1, 8] {
            for size in [1, 10, 100] {
                bench_case(
                    &mut criterion,
                    &runtime,
                    &store,
                    &report,
                    sync,
                    writers,
                    size,
                );
            }
        }
    }
    criterion.final_summary();
    println!("\n{}", report.table("events"));
}
