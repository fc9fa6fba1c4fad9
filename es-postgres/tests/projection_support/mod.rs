//! Test support: a tally projection that records every application, so tests can check that
//! each event was applied exactly once.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use es_core::{
    AppendRequest, EventStore, ExpectedVersion, LogFilter, Position, Projection, ProjectionError,
    RecordedEvent, StreamId,
};
use es_postgres::{DaemonOptions, PgEventStore, PgProjectionTx};

/// Counts events per stream in `tally_counts_v<n>` and logs each application in
/// `tally_applied_v<n>` (no unique key: a double application shows up as a duplicate).
#[derive(Debug, Clone)]
pub struct Tally {
    pub name: String,
    pub version: u32,
    /// While set, events whose data has `"poison": true` fail.
    pub poisoned: Arc<AtomicBool>,
    /// Sleep this long per event (to catch a batch mid-way).
    pub per_event: Duration,
    /// Sleep per event only when writing this version (to slow a rebuild).
    pub slow_version: Option<u32>,
}

impl Tally {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: 1,
            poisoned: Arc::new(AtomicBool::new(true)),
            per_event: Duration::ZERO,
            slow_version: None,
        }
    }

    pub fn slow(mut self, per_event: Duration, only_version: Option<u32>) -> Self {
        self.per_event = per_event;
        self.slow_version = only_version;
        self
    }
}

#[async_trait::async_trait]
impl Projection<PgProjectionTx> for Tally {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["TallyAdded"])
    }

    fn version(&self) -> u32 {
        self.version
    }

    async fn prepare(&self, tx: &mut PgProjectionTx) -> Result<(), ProjectionError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (stream_id text PRIMARY KEY, n bigint NOT NULL, total bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {} (projection text NOT NULL, stream_id text NOT NULL, version bigint NOT NULL, position bigint NOT NULL);",
            tx.table(&format!("{}_counts", self.name)),
            tx.table(&format!("{}_applied", self.name)),
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
        if self.per_event > Duration::ZERO && self.slow_version.is_none_or(|v| v == tx.version()) {
            tokio::time::sleep(self.per_event).await;
        }
        if self.poisoned.load(Ordering::SeqCst) && event.data["poison"] == true {
            return Err(ProjectionError::apply(format!(
                "cannot tally event {} of {}",
                event.version, event.stream_id
            )));
        }
        let amount = event.data["amount"].as_i64().unwrap_or(0);
        let counts = tx.table(&format!("{}_counts", self.name));
        let applied = tx.table(&format!("{}_applied", self.name));
        let sql = format!(
            "WITH logged AS (INSERT INTO {applied} VALUES ($1, $2, $3, $4))
             INSERT INTO {counts} VALUES ($2, 1, $5)
             ON CONFLICT (stream_id) DO UPDATE SET n = {counts}.n + 1, total = {counts}.total + $5"
        );
        let version = event.version.get() as i64;
        let position = event.position.sequence() as i64;
        tx.client()
            .execute(
                &sql,
                &[
                    &self.name,
                    &event.stream_id.as_str(),
                    &version,
                    &position,
                    &amount,
                ],
            )
            .await
            .map_err(ProjectionError::apply)?;
        Ok(())
    }
}

/// Fast polling and elections for tests.
pub fn fast_options() -> DaemonOptions {
    DaemonOptions {
        standby_poll: Duration::from_millis(100),
        leader_check: Duration::from_millis(100),
        retry_delay: Duration::from_millis(100),
        max_poll: Duration::from_millis(100),
        ..DaemonOptions::default()
    }
}

/// An event for the tally: `amount` n, poisoned when asked.
pub fn tally_event(n: i64, poison: bool) -> es_core::NewEvent {
    es_core::NewEvent {
        event_type: "TallyAdded".to_owned(),
        schema_version: 1,
        data: serde_json::json!({ "amount": n, "poison": poison }),
        metadata: es_core::CommandContext::new().metadata(&es_core::SystemClock),
    }
}

/// Appends `count` events to `streams` streams named after `prefix`, round robin, one event per
/// append; returns the last position.
pub async fn append_round_robin(
    store: &PgEventStore,
    prefix: &str,
    streams: usize,
    count: usize,
) -> Position {
    let ids: Vec<StreamId> = (0..streams)
        .map(|s| StreamId::new(format!("{prefix}-{s}")).unwrap())
        .collect();
    let mut last = Position::START;
    for n in 0..count {
        let outcome = store
            .append(
                AppendRequest::new(ids[n % streams].clone(), ExpectedVersion::Any)
                    .with_stream_type("tally")
                    .with_events([tally_event(n as i64, false)]),
            )
            .await
            .unwrap();
        last = outcome.positions[0];
    }
    last
}

/// (rows, distinct positions, sum of counts) of `name`'s version `version`.
pub async fn applied(store: &PgEventStore, name: &str, version: u32) -> (i64, i64, i64) {
    let client = store.pool().get().await.unwrap();
    let schema = store.schema();
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM \"{schema}\".\"{name}_applied_v{version}\"),
                        (SELECT count(DISTINCT position) FROM \"{schema}\".\"{name}_applied_v{version}\"),
                        (SELECT coalesce(sum(n), 0)::bigint FROM \"{schema}\".\"{name}_counts_v{version}\")"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The counts table of `version`, sorted.
pub async fn counts(store: &PgEventStore, name: &str, version: u32) -> Vec<(String, i64, i64)> {
    let client = store.pool().get().await.unwrap();
    let schema = store.schema();
    client
        .query(
            &format!(
                "SELECT stream_id, n, total FROM \"{schema}\".\"{name}_counts_v{version}\" ORDER BY stream_id"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
