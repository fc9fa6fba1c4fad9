//! Reads: loading a 1,000-event stream and scanning 1,000,000 events in global order, each
//! against raw tokio-postgres doing the same in the same run, alternating.
//!
//! `cargo bench --bench read` (needs `DATABASE_URL`). The first run fills the schema
//! `es_bench_read` (about a minute); later runs reuse it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use es_benches::{Report, alternate, database_url};
use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, LogFilter, NewEvent, Position,
    StreamId, StreamRead, SystemClock,
};
use es_postgres::{PgConfig, PgEventStore};
use futures::TryStreamExt;
use serde_json::{Value, json};

const SCHEMA: &str = "es_bench_read";
const SCAN: i64 = 1_000_000;
const STREAM: usize = 1_000;
const BATCH: usize = 1_000;

async fn prepare() -> (PgEventStore, StreamId) {
    let config = PgConfig::new(database_url()).schema(SCHEMA).pool_size(4);
    let store = PgEventStore::connect(&config).unwrap();
    store.migrate().await.unwrap();
    let client = store.pool().get().await.unwrap();
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{SCHEMA}\".events"), &[])
        .await
        .unwrap()
        .get(0);
    let stream = StreamId::new("bench-stream-1000").unwrap();
    if count < SCAN + STREAM as i64 {
        client
            .batch_execute(&format!(
                "TRUNCATE \"{SCHEMA}\".events, \"{SCHEMA}\".streams"
            ))
            .await
            .unwrap();
        let context = CommandContext::new();
        let events: Vec<NewEvent> = (0..STREAM)
            .map(|n| NewEvent {
                event_type: "ItemAdded".into(),
                schema_version: 1,
                data: json!({ "sku": format!("SKU-{n:05}"), "quantity": n % 7 + 1, "unitPrice": "19.99" }),
                metadata: context.metadata(&SystemClock),
            })
            .collect();
        store
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                    .with_stream_type("cart")
                    .with_events(events),
            )
            .await
            .unwrap();
        // 1,000,000 more events over 10,000 streams, 10,000 rows per transaction.
        for chunk in 0..(SCAN / 10_000) {
            client
                .batch_execute(&format!(
                    "INSERT INTO \"{SCHEMA}\".events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata)
                     SELECT 'cart-' || (g % 10000), 'cart', 1 + g / 10000, gen_random_uuid(), 'ItemAdded', 1,
                            jsonb_build_object('sku', 'SKU-' || lpad((g % 20000)::text, 5, '0'), 'quantity', g % 7 + 1, 'unitPrice', '19.99'),
                            jsonb_build_object('eventId', gen_random_uuid(), 'correlationId', gen_random_uuid(), 'timestamp', '2026-11-25T12:00:00.000000Z', 'actor', 'bench')
                     FROM generate_series({start}, {end}) AS g",
                    start = chunk * 10_000,
                    end = chunk * 10_000 + 9_999,
                ))
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!("VACUUM ANALYZE \"{SCHEMA}\".events"))
            .await
            .unwrap();
    }
    (store, stream)
}

type RawEvent = (
    i64,
    String,
    i64,
    String,
    i32,
    Value,
    Value,
    chrono::DateTime<chrono::Utc>,
);

/// Every column the framework returns, decoded as plain values.
fn decode_row(row: &tokio_postgres::Row) -> RawEvent {
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
    )
}

async fn framework_load(store: &PgEventStore, stream: &StreamId) -> usize {
    let events: Vec<_> = store
        .read_stream(stream, StreamRead::forward())
        .try_collect()
        .await
        .unwrap();
    events.len()
}

async fn raw_load(store: &PgEventStore, stream: &StreamId) -> usize {
    let client = store.pool().get().await.unwrap();
    let statement = client
        .prepare_cached(&format!(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, recorded_at
             FROM \"{SCHEMA}\".events WHERE stream_id = $1 ORDER BY version"
        ))
        .await
        .unwrap();
    let rows = client.query(&statement, &[&stream.as_str()]).await.unwrap();
    rows.iter().map(decode_row).count()
}

async fn framework_scan(store: &PgEventStore) -> usize {
    let mut after = Position::START;
    let mut seen = 0;
    loop {
        let batch = store
            .read_log(after, &LogFilter::all(), BATCH)
            .await
            .unwrap();
        seen += batch.events.len();
        after = batch.checkpoint;
        if batch.reached_end {
            return seen;
        }
    }
}

async fn raw_scan(store: &PgEventStore) -> usize {
    let client = store.pool().get().await.unwrap();
    let statement = client
        .prepare_cached(&format!(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, recorded_at
             FROM \"{SCHEMA}\".events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .await
        .unwrap();
    let mut after = 0_i64;
    let mut seen = 0;
    loop {
        let rows = client
            .query(&statement, &[&after, &(BATCH as i64)])
            .await
            .unwrap();
        for row in &rows {
            after = decode_row(row).0;
        }
        seen += rows.len();
        if rows.len() < BATCH {
            return seen;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (store, stream) = runtime.block_on(prepare());
    let report = Report::default();
    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    let mut group = criterion.benchmark_group("read/stream-1000");
    group.throughput(Throughput::Elements(STREAM as u64));
    let timed = |load: &dyn Fn() -> usize, iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            assert_eq!(load(), STREAM);
        }
        start.elapsed()
    };
    alternate(
        &mut group,
        &report,
        "load a 1,000-event stream",
        STREAM as u64,
        |iters| timed(&|| runtime.block_on(framework_load(&store, &stream)), iters),
        |iters| timed(&|| runtime.block_on(raw_load(&store, &stream)), iters),
    );
    group.finish();

    let total = SCAN as usize + STREAM;
    let mut group = criterion.benchmark_group("read/global-scan-1m");
    group.throughput(Throughput::Elements(total as u64));
    let timed = |scan: &dyn Fn() -> usize, iters: u64| {
        let start = Instant::now();
        for _ in 0..iters {
            assert_eq!(scan(), total);
        }
        start.elapsed()
    };
    alternate(
        &mut group,
        &report,
        "scan 1,000,000 events in global order",
        total as u64,
        |iters| timed(&|| runtime.block_on(framework_scan(&store)), iters),
        |iters| timed(&|| runtime.block_on(raw_scan(&store)), iters),
    );
    group.finish();
    criterion.final_summary();
    println!("\n{}", report.table("events"));
}
