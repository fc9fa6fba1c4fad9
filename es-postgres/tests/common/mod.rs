//! Test support: a fresh, migrated schema per test on the real PostgreSQL.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod test_lock;

use es_postgres::{PgConfig, PgEventStore};

/// The database URL, or a panic saying how to start PostgreSQL. Every way of reaching the
/// database here goes through it, so from the first call the test holds the suite's lock
/// shared (see [`test_lock`]); `alone_*` tests call [`alone`] first.
pub fn database_url() -> String {
    let url = es_postgres::database_url().unwrap_or_else(|error| panic!("{error}"));
    test_lock::hold_shared();
    url
}

/// Makes the test hold the suite's lock exclusively until it ends: the first line of every
/// `alone_*` test (see [`test_lock::alone`]).
pub fn alone() {
    test_lock::alone();
}

/// A unique schema name; `scripts/test` drops every `es_test_*` schema when the run ends.
pub fn schema_name() -> String {
    format!("es_test_{}", uuid::Uuid::new_v4().simple())
}

/// A store in a fresh, migrated schema.
pub async fn fresh_store() -> PgEventStore {
    fresh_store_with(|config| config).await
}

/// A store in a fresh, migrated schema, with the configuration adjusted by `adjust`.
pub async fn fresh_store_with(adjust: impl FnOnce(PgConfig) -> PgConfig) -> PgEventStore {
    let config = adjust(
        PgConfig::new(database_url())
            .schema(schema_name())
            .pool_size(10),
    );
    let store = PgEventStore::connect(&config).unwrap_or_else(|error| panic!("{error}"));
    store.migrate().await.unwrap_or_else(|error| {
        panic!(
            "cannot migrate a test schema: {error}; is PostgreSQL running? `scripts/test` starts it"
        )
    });
    store
}

/// A unique stream id starting with `prefix`.
pub fn stream(prefix: &str) -> es_core::StreamId {
    es_core::StreamId::new(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()))
        .expect("a valid stream id")
}

/// A small event with a fresh id, whose data carries `n`.
pub fn event(n: i64) -> es_core::NewEvent {
    es_core::NewEvent {
        event_type: "TallyAdded".to_owned(),
        schema_version: 1,
        data: serde_json::json!({ "amount": n }),
        metadata: es_core::CommandContext::new().metadata(&es_core::SystemClock),
    }
}

/// A connection of its own, outside the store's pool.
pub async fn raw_client() -> tokio_postgres::Client {
    es_postgres::connect(&database_url())
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// Every event of `stream`, first first.
pub async fn read_stream(
    store: &PgEventStore,
    stream: &es_core::StreamId,
) -> Vec<es_core::RecordedEvent> {
    use es_core::EventStore;
    use futures::TryStreamExt;
    store
        .read_stream(stream, es_core::StreamRead::forward())
        .try_collect()
        .await
        .expect("read a stream")
}

/// The global log from the start, in batches of `batch`, until it holds `expected` events
/// (polling while other transactions in the cluster hold the fence back); panics after
/// `timeout`. Returns the events and the checkpoint reached.
pub async fn read_log_until(
    store: &PgEventStore,
    expected: usize,
    batch: usize,
    timeout: std::time::Duration,
) -> (Vec<es_core::RecordedEvent>, es_core::Position) {
    use es_core::EventStore;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    let mut position = es_core::Position::START;
    loop {
        let read = store
            .read_log(position, &es_core::LogFilter::all(), batch)
            .await
            .expect("read the global log");
        assert!(read.checkpoint >= position, "a checkpoint never moves back");
        if let Some(last) = read.events.last() {
            assert!(
                read.checkpoint >= last.position,
                "the checkpoint covers the batch"
            );
        }
        events.extend(read.events);
        position = read.checkpoint;
        if events.len() >= expected && read.reached_end {
            return (events, position);
        }
        if read.reached_end {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the global log showed {} of {expected} events within {timeout:?}",
                events.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// Asserts that each stream appears in version order (1, 2, 3, ...) and that positions rise.
pub fn assert_streams_in_version_order(events: &[es_core::RecordedEvent]) {
    let mut last: std::collections::HashMap<&es_core::StreamId, u64> =
        std::collections::HashMap::new();
    for event in events {
        let previous = last
            .insert(&event.stream_id, event.version.get())
            .unwrap_or(0);
        assert_eq!(
            event.version.get(),
            previous + 1,
            "stream {} out of version order in the global log at {}",
            event.stream_id,
            event.position
        );
    }
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "log positions must rise: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

/// Waits until a backend of `schema` waits for an advisory lock while running `function`;
/// returns that backend's pid.
pub async fn wait_for_lock_wait(
    client: &tokio_postgres::Client,
    schema: &str,
    function: &str,
) -> i32 {
    let pattern = format!("%\"{schema}\".{function}%");
    for _ in 0..500 {
        let waiting = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE $1",
                &[&pattern],
            )
            .await
            .unwrap();
        if let Some(row) = waiting {
            return row.get(0);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nothing of schema {schema} waited on a stream lock in {function} within 5 s");
}
