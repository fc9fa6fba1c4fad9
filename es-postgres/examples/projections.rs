//! Operating projections from the command line.
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run -p es-postgres --example projections -- seed 10000
//! cargo run -p es-postgres --example projections -- list
//! cargo run -p es-postgres --example projections -- resume <name>
//! cargo run -p es-postgres --example projections -- rebuild <name>
//! ```
//!
//! The schema is `ES_PG_SCHEMA` (default `projections_demo`). `seed` appends demo events and
//! runs the demo projection `events-by-type` until it has caught up; `rebuild` starts a
//! rebuild and follows it with a progress bar (running the demo projection here when it is
//! the one named; another projection is rebuilt by whichever node leads it).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::error::Error;
use std::time::Duration;

use es_core::{
    AppendRequest, CommandContext, EventStore, ExpectedVersion, LogFilter, NewEvent, Position,
    Projection, ProjectionError, RecordedEvent, StreamId, SystemClock,
};
use es_postgres::{PgConfig, PgEventStore, PgProjectionTx, ProjectionDaemon, ProjectionOptions};
use indicatif::{ProgressBar, ProgressStyle};

/// Counts events by type, in `events_by_type_v<version>`.
#[derive(Debug)]
struct EventsByType;

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for EventsByType {
    fn name(&self) -> &str {
        "events-by-type"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all()
    }

    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (event_type text PRIMARY KEY, n bigint NOT NULL)",
            tx.table("events_by_type")
        );
        tx.client()
            .batch_execute(&sql)
            .await
            .map_err(ProjectionError::apply)
    }

    async fn apply(
        &self,
        tx: &mut PgProjectionTx,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let table = tx.table("events_by_type");
        let sql = format!(
            "INSERT INTO {table} VALUES ($1, 1) ON CONFLICT (event_type) DO UPDATE SET n = {table}.n + 1"
        );
        tx.client()
            .execute(&sql, &[&event.event_type])
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }
}

fn daemon(store: &PgEventStore) -> Result<ProjectionDaemon, Box<dyn Error>> {
    Ok(ProjectionDaemon::new(store).register(EventsByType, ProjectionOptions::default())?)
}

async fn list(store: &PgEventStore) -> Result<(), Box<dyn Error>> {
    println!(
        "{:<20} {:<10} {:>7} {:>10} {:>9}  detail",
        "name", "state", "version", "lag", "lag time"
    );
    for status in ProjectionDaemon::new(store).status().await? {
        let detail = match (&status.rebuild, &status.error) {
            (_, Some(error)) => format!("paused: {error}"),
            (Some(r), None) => format!("rebuilding v{}: {}/{}", r.version, r.done, r.total),
            (None, None) => String::new(),
        };
        println!(
            "{:<20} {:<10} {:>7} {:>10} {:>8.1}s  {detail}",
            status.name,
            status.state.as_str(),
            status.active_version,
            status.lag_events,
            status.lag_time.as_secs_f64(),
        );
    }
    Ok(())
}

async fn seed(store: &PgEventStore, count: usize) -> Result<(), Box<dyn Error>> {
    let context = CommandContext::new();
    let mut last = Position::START;
    for chunk in 0..count.div_ceil(100) {
        let events = (0..100.min(count - chunk * 100)).map(|n| NewEvent {
            event_type: ["Placed", "Paid", "Shipped"][n % 3].to_owned(),
            schema_version: 1,
            data: serde_json::json!({ "n": n }),
            metadata: context.metadata(&SystemClock),
        });
        let stream = StreamId::new(format!("demo-{}", uuid::Uuid::new_v4().simple()))?;
        let request = AppendRequest::new(stream, ExpectedVersion::NoStream).with_events(events);
        last = *store
            .append(request)
            .await?
            .positions
            .last()
            .unwrap_or(&last);
    }
    let daemon = daemon(store)?;
    daemon.start()?;
    let caught_up = daemon
        .wait_for("events-by-type", last, Duration::from_secs(600))
        .await?;
    daemon.shutdown().await;
    println!("appended {count} events; events-by-type caught up: {caught_up}");
    Ok(())
}

async fn rebuild(store: &PgEventStore, name: &str) -> Result<(), Box<dyn Error>> {
    let daemon = daemon(store)?;
    let version = daemon.rebuild(name).await?;
    if name == EventsByType.name() {
        daemon.start()?;
    }
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}",
    )?);
    bar.set_message(format!("{name} v{version}"));
    loop {
        let status = daemon.projection_status(name).await?;
        match status.rebuild {
            Some(progress) => {
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            }
            None if status.active_version >= version => break,
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_with_message(format!("{name} v{version} is active"));
    daemon.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut config = PgConfig::from_env()?;
    if std::env::var("ES_PG_SCHEMA").is_err() {
        config = config.schema("projections_demo");
    }
    let store = PgEventStore::connect(&config)?;
    store.migrate().await?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] | [] => list(&store).await,
        ["resume", name] => {
            ProjectionDaemon::new(&store).resume(name).await?;
            println!("resumed {name}");
            Ok(())
        }
        ["rebuild", name] => rebuild(&store, name).await,
        ["seed", count] => seed(&store, count.parse()?).await,
        _ => Err("usage: projections list | resume <name> | rebuild <name> | seed <count>".into()),
    }
}
