//! The projection daemon on a stored log, against a hand-written loop doing the same work in
//! the same run, alternating: (a) a counting projection, (b) a read model upserted once per
//! event; and the rebuild of (a) into a new version.
//!
//! `cargo bench --bench projection` (needs `DATABASE_URL`). The first run fills the schema
//! `es_bench_projection` with `ES_BENCH_EVENTS` events (default 1,000,000; about a minute);
//! later runs reuse it. `ES_BENCH_ROUNDS` (default 2) sets how many times each side runs;
//! `ES_BENCH_CASES=count` runs only the counting projection and the rebuild.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use es_benches::{Report, database_url};
use es_core::{LogFilter, Position, Projection, ProjectionError, RecordedEvent};
use es_postgres::{PgConfig, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions};
use serde_json::Value;

const SCHEMA: &str = "es_bench_projection";
const BATCH: usize = 1_000;

fn env_number(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store, filled with `events` events over 10,000 streams; the last event's position.
async fn prepare(events: i64) -> (PgEventStore, Position) {
    let config = PgConfig::new(database_url()).schema(SCHEMA).pool_size(4);
    let store = PgEventStore::connect(&config).unwrap();
    store.migrate().await.unwrap();
    let client = store.pool().get().await.unwrap();
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{SCHEMA}\".events"), &[])
        .await
        .unwrap()
        .get(0);
    if count != events {
        client
            .batch_execute(&format!(
                "TRUNCATE \"{SCHEMA}\".events, \"{SCHEMA}\".streams, \"{SCHEMA}\".checkpoints, \"{SCHEMA}\".projections"
            ))
            .await
            .unwrap();
        let chunk = 10_000;
        for start in (0..events).step_by(chunk as usize) {
            let end = (start + chunk).min(events) - 1;
            client
                .batch_execute(&format!(
                    "INSERT INTO \"{SCHEMA}\".events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata)
                     SELECT 'cart-' || (g % 10000), 'cart', 1 + g / 10000, gen_random_uuid(), 'ItemAdded', 1,
                            jsonb_build_object('sku', 'SKU-' || lpad((g % 20000)::text, 5, '0'), 'quantity', g % 7 + 1, 'unitPrice', '19.99'),
                            jsonb_build_object('eventId', gen_random_uuid(), 'correlationId', gen_random_uuid(), 'timestamp', '2026-11-25T12:00:00.000000Z', 'actor', 'bench')
                     FROM generate_series({start}, {end}) AS g"
                ))
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!("VACUUM ANALYZE \"{SCHEMA}\".events"))
            .await
            .unwrap();
    }
    let row = client
        .query_one(
            &format!(
                "SELECT (transaction_id::text)::bigint, position FROM \"{SCHEMA}\".events
                 ORDER BY transaction_id DESC, position DESC LIMIT 1"
            ),
            &[],
        )
        .await
        .unwrap();
    let last = Position::new(row.get::<_, i64>(0) as u64, row.get::<_, i64>(1) as u64);
    (store, last)
}

/// (a) Counts events: one statement per batch.
#[derive(Debug)]
struct Counting(String);

/// (b) Per cart: events and quantity, one upsert per event.
#[derive(Debug)]
struct Carts(String);

fn counting_sql(tx: &PgProjectionTx) -> String {
    let table = tx.table("bench_counts");
    format!(
        "INSERT INTO {table} VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET n = {table}.n + $2"
    )
}

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for Counting {
    fn name(&self) -> &str {
        &self.0
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, n bigint NOT NULL)",
            tx.table("bench_counts")
        );
        tx.client()
            .batch_execute(&sql)
            .await
            .map_err(ProjectionError::apply)
    }
    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(e)).await
    }
    async fn apply_batch(
        &self,
        tx: &mut PgProjectionTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let sql = counting_sql(tx);
        tx.client()
            .execute(&sql, &[&self.0, &(events.len() as i64)])
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }
}

fn carts_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} VALUES ($1, 1, $2) ON CONFLICT (stream_id) \
         DO UPDATE SET n = {table}.n + 1, quantity = {table}.quantity + $2"
    )
}

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for Carts {
    fn name(&self) -> &str {
        &self.0
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }
    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (stream_id text PRIMARY KEY, n bigint NOT NULL, quantity bigint NOT NULL)",
            tx.table(&self.0.replace('-', "_"))
        );
        tx.client()
            .batch_execute(&sql)
            .await
            .map_err(ProjectionError::apply)
    }
    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        e: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, std::slice::from_ref(e)).await
    }
    async fn apply_batch(
        &self,
        tx: &mut PgProjectionTx,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let sql = carts_sql(&tx.table(&self.0.replace('-', "_")));
        let statement = tx
            .client()
            .prepare(&sql)
            .await
            .map_err(ProjectionError::apply)?;
        for event in events {
            let quantity = event.data["quantity"].as_i64().unwrap_or(0);
            tx.client()
                .execute(&statement, &[&event.stream_id.as_str(), &quantity])
                .await
                .map_err(ProjectionError::apply)?;
        }
        Ok(())
    }
}

/// Runs `projection` from the start of the log until it has applied `last`; the seconds taken.
async fn framework(
    store: &PgEventStore,
    projection: impl Projection<PgProjectionTx> + 'static,
    last: Position,
) -> (f64, ProjectionDaemon) {
    let name = projection.name().to_owned();
    let daemon = ProjectionDaemon::new(store)
        .register(projection, ProjectionOptions::default().batch_size(BATCH))
        .unwrap();
    let start = Instant::now();
    daemon.start().unwrap();
    assert!(
        daemon
            .wait_for(&name, last, Duration::from_secs(3600))
            .await
            .unwrap()
    );
    (start.elapsed().as_secs_f64(), daemon)
}

/// The floor: select a batch by position, decode, write the read model, write a checkpoint,
/// commit; no framework.
async fn floor(store: &PgEventStore, name: &str, upsert: bool) -> (f64, u64) {
    let mut client = store.pool().get().await.unwrap();
    let table = format!("\"{SCHEMA}\".\"floor_{}\"", name.replace('-', "_"));
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (stream_id text PRIMARY KEY, n bigint NOT NULL, quantity bigint NOT NULL)"
        ))
        .await
        .unwrap();
    let start = Instant::now();
    let select = client
        .prepare(&format!(
            "SELECT position, stream_id, version, event_type, schema_version, data, metadata, recorded_at
             FROM \"{SCHEMA}\".events WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .await
        .unwrap();
    let write = client.prepare(&carts_sql(&table)).await.unwrap();
    let count = client
        .prepare(&format!(
            "INSERT INTO {table} VALUES ('all', $1, 0) ON CONFLICT (stream_id) DO UPDATE SET n = {table}.n + $1"
        ))
        .await
        .unwrap();
    let checkpoint = client
        .prepare(&format!(
            "INSERT INTO \"{SCHEMA}\".checkpoints (name, transaction_id, sequence) VALUES ($1, 0, $2)
             ON CONFLICT (name) DO UPDATE SET sequence = $2, updated_at = now()"
        ))
        .await
        .unwrap();
    let (mut after, mut seen) = (0_i64, 0_u64);
    loop {
        let tx = client.transaction().await.unwrap();
        let rows = tx.query(&select, &[&after, &(BATCH as i64)]).await.unwrap();
        for row in &rows {
            after = row.get(0);
            let stream: String = row.get(1);
            let (_, _, _, data, _, _): (
                i64,
                String,
                i32,
                Value,
                Value,
                chrono::DateTime<chrono::Utc>,
            ) = (
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
                row.get(6),
                row.get(7),
            );
            if upsert {
                let quantity = data["quantity"].as_i64().unwrap_or(0);
                tx.execute(&write, &[&stream, &quantity]).await.unwrap();
            }
        }
        if !upsert {
            tx.execute(&count, &[&(rows.len() as i64)]).await.unwrap();
        }
        tx.execute(&checkpoint, &[&format!("floor-{name}"), &after])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        seen += rows.len() as u64;
        if rows.len() < BATCH {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    (elapsed, seen)
}

async fn drop_tables(store: &PgEventStore, name: &str) {
    let client = store.pool().get().await.unwrap();
    let base = name.replace('-', "_");
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS \"{SCHEMA}\".\"{base}_v1\"; DROP TABLE IF EXISTS \"{SCHEMA}\".\"{base}_v2\""
        ))
        .await
        .unwrap();
}

async fn run(events: i64, rounds: i64) {
    let (store, last) = prepare(events).await;
    let report = Report::default();
    let total = events as f64;
    let counting = format!("count {events} events");
    let upserting = format!("upsert per event, {events} events");
    let mut rebuilds = Vec::new();
    for round in 0..rounds {
        let name = format!("count-{}-{round}", std::process::id());
        let (seconds, daemon) = framework(&store, Counting(name.clone()), last).await;
        report.record(&counting, "framework", total, seconds);
        let start = Instant::now();
        let version = daemon.rebuild(&name).await.unwrap();
        while daemon.active_version(&name).await.unwrap() < version {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rebuilds.push(start.elapsed().as_secs_f64());
        daemon.shutdown().await;

        let (seconds, seen) = floor(&store, &name, false).await;
        assert_eq!(seen as i64, events);
        report.record(&counting, "floor", total, seconds);

        if std::env::var("ES_BENCH_CASES").is_ok_and(|cases| cases == "count") {
            continue;
        }
        let name = format!("carts-{}-{round}", std::process::id());
        let (seconds, daemon) = framework(&store, Carts(name.clone()), last).await;
        daemon.shutdown().await;
        drop_tables(&store, &name).await;
        report.record(&upserting, "framework", total, seconds);
        let (seconds, seen) = floor(&store, &name, true).await;
        assert_eq!(seen as i64, events);
        report.record(&upserting, "floor", total, seconds);
        println!("round {round} done");
    }
    println!("\n{}", report.table("events"));
    let best = rebuilds.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "rebuild of {events} events through the counting projection: {best:.1} s (best of {}), {:.0} events/s",
        rebuilds.len(),
        total / best
    );
}

fn main() {
    let events = env_number("ES_BENCH_EVENTS", 1_000_000);
    let rounds = env_number("ES_BENCH_ROUNDS", 2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(events, rounds));
}
