//! Appends stay correct when the database's default isolation level is not READ COMMITTED
//! (`default_transaction_isolation` set on the server, the database, the role or the URL):
//! a stale snapshot must never turn a concurrent append into a unique violation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use es_core::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamId, Version};
use es_postgres::{PgConfig, PgEventStore};

/// A second store on `store`'s schema whose connections default to `isolation`.
fn store_with_isolation(store: &PgEventStore, isolation: &str) -> PgEventStore {
    let escaped = isolation.replace(' ', "%5C%20");
    let url = format!(
        "{}?options=-c%20default_transaction_isolation%3D{escaped}",
        common::database_url()
    );
    PgEventStore::connect(&PgConfig::new(url).schema(store.schema()).pool_size(4))
        .unwrap_or_else(|error| panic!("{error}"))
}

fn request(stream: &StreamId, expected: ExpectedVersion) -> AppendRequest {
    AppendRequest::new(stream.clone(), expected)
        .with_stream_type("isolation")
        .with_events([common::event(1)])
}

fn assert_conflict_at(result: Result<impl std::fmt::Debug, StoreError>, actual: u64) {
    match result {
        Err(StoreError::Conflict(conflict)) => assert_eq!(conflict.actual, Version::new(actual)),
        other => panic!("expected a Conflict at version {actual}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waiting_for_a_stream_lock_conflicts_under_repeatable_read() {
    for isolation in ["repeatable read", "serializable"] {
        let store = common::fresh_store().await;
        let strict = store_with_isolation(&store, isolation);
        let observer = common::raw_client().await;
        let stream = common::stream("rr");

        let mut first = store.transaction([&stream]).await.unwrap();
        first
            .append(request(&stream, ExpectedVersion::NoStream))
            .await
            .unwrap();
        // The second append starts (and, above READ COMMITTED, takes its snapshot) while the
        // first still holds the stream.
        let second = tokio::spawn({
            let strict = strict.clone();
            let stream = stream.clone();
            async move {
                strict
                    .append(request(&stream, ExpectedVersion::NoStream))
                    .await
            }
        });
        common::wait_for_lock_wait(&observer, store.schema(), "append_events").await;
        first.commit().await.unwrap();

        let result = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second append returns")
            .unwrap();
        assert_conflict_at(result, 1);
        assert_eq!(
            store.stream_version(&stream).await.unwrap(),
            Version::new(1)
        );
        let outcome = strict
            .append(request(&stream, ExpectedVersion::Exact(Version::new(1))))
            .await
            .unwrap_or_else(|error| panic!("{isolation}: an append at the right version: {error}"));
        assert_eq!(outcome.last_version, Version::new(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_waiting_for_a_stream_lock_conflicts_under_repeatable_read() {
    for isolation in ["repeatable read", "serializable"] {
        let store = common::fresh_store().await;
        let strict = store_with_isolation(&store, isolation);
        let observer = common::raw_client().await;
        let stream = common::stream("rr-tx");

        let mut first = store.transaction([&stream]).await.unwrap();
        first
            .append(request(&stream, ExpectedVersion::NoStream))
            .await
            .unwrap();
        let second = tokio::spawn({
            let strict = strict.clone();
            let stream = stream.clone();
            async move { strict.transaction([&stream]).await }
        });
        common::wait_for_lock_wait(&observer, store.schema(), "lock_streams").await;
        first.commit().await.unwrap();

        let mut second = tokio::time::timeout(Duration::from_secs(30), second)
            .await
            .expect("the second transaction begins")
            .unwrap()
            .expect("begin");
        assert_conflict_at(
            second
                .append(request(&stream, ExpectedVersion::NoStream))
                .await,
            1,
        );
        let outcome = second
            .append(request(&stream, ExpectedVersion::Exact(Version::new(1))))
            .await
            .unwrap_or_else(|error| {
                panic!("{isolation}: the transaction takes an append at the right version: {error}")
            });
        assert_eq!(outcome.last_version, Version::new(2));
        second.commit().await.unwrap();
        assert_eq!(
            store.stream_version(&stream).await.unwrap(),
            Version::new(2)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_see_only_conflicts_under_repeatable_read() {
    let store = common::fresh_store().await;
    let strict = store_with_isolation(&store, "repeatable read");
    let stream = common::stream("rr-race");
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let strict = strict.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut written = 0;
                while written < 50 {
                    let current = strict.stream_version(&stream).await.unwrap();
                    match strict
                        .append(request(&stream, ExpectedVersion::from_current(current)))
                        .await
                    {
                        Ok(_) => written += 1,
                        Err(StoreError::Conflict(_)) => {}
                        Err(other) => panic!("an append failed with {other:?}, not a conflict"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        Version::new(200)
    );
}
