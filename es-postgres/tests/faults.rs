//! Faults: a backend terminated in the middle of a transaction or of an append writes nothing,
//! and the pool goes on serving (the dead connection is not handed to the next caller).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use es_core::{AppendRequest, AppendStatus, EventStore, ExpectedVersion, StoreError, Version};
use es_postgres::PgEventStore;
use tokio_postgres::Client;

/// A terminated backend's failure reaches the client either as the server's FATAL message or
/// as a closed connection, depending on timing; rounds repeat the fault to meet both (a COMMIT
/// gets the FATAL reply in only some rounds).
const COMMIT_ROUNDS: usize = 60;
const APPEND_ROUNDS: usize = 6;

async fn count_rows(client: &Client, store: &PgEventStore, stream: &es_core::StreamId) -> i64 {
    client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".events WHERE stream_id = $1",
                store.schema()
            ),
            &[&stream.as_str()],
        )
        .await
        .unwrap()
        .get(0)
}

/// Appends to fresh streams, more at once than the pool holds connections, so every pooled
/// connection is used.
async fn assert_pool_serves(store: &PgEventStore) {
    let streams: Vec<_> = (0..20).map(|_| common::stream("after")).collect();
    let appends = streams.iter().map(|s| {
        store.append(
            AppendRequest::new(s.clone(), ExpectedVersion::NoStream)
                .with_stream_type("after")
                .with_events([common::event(1)]),
        )
    });
    for outcome in futures::future::join_all(appends).await {
        assert_eq!(
            outcome.expect("append after the fault").status,
            AppendStatus::Appended
        );
    }
    for s in &streams {
        assert_eq!(store.stream_version(s).await.unwrap(), Version::new(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_backend_is_terminated_commits_nothing_and_the_pool_recovers() {
    let store = common::fresh_store().await;
    let killer = common::raw_client().await;

    for round in 0..COMMIT_ROUNDS {
        let stream = common::stream("killed");
        let mut transaction = store.transaction([&stream]).await.expect("begin");
        let outcome = transaction
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                    .with_stream_type("killed")
                    .with_events((0..100).map(common::event)),
            )
            .await
            .expect("append 100 events inside the transaction");
        assert_eq!(outcome.last_version, Version::new(100));
        let pid: i32 = transaction
            .client()
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let terminated: bool = killer
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(terminated, "pg_terminate_backend({pid}) failed");

        let error = tokio::time::timeout(Duration::from_secs(30), transaction.commit())
            .await
            .expect("the commit returns")
            .expect_err("a commit on a terminated backend fails");
        assert!(
            matches!(error, StoreError::Backend(_)),
            "unexpected error: {error}"
        );

        // The very next use of the pool must not be handed the dead connection.
        let version = store.stream_version(&stream).await.unwrap_or_else(|error| {
            panic!(
                "round {round}: the first call after a failed commit got a dead pooled connection: {error:?}"
            )
        });
        assert_eq!(
            version,
            Version::ZERO,
            "nothing of the transaction was written"
        );
        assert!(common::read_stream(&store, &stream).await.is_empty());
        assert_eq!(count_rows(&killer, &store, &stream).await, 0);

        // The stream's lock died with the backend: the stream takes appends again.
        let outcome = store
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                    .with_stream_type("killed")
                    .with_events((0..3).map(common::event)),
            )
            .await
            .expect("the killed stream takes appends again");
        assert_eq!(outcome.last_version, Version::new(3));
        assert_eq!(common::read_stream(&store, &stream).await.len(), 3);
    }
    assert_pool_serves(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_backend_is_terminated_writes_nothing_and_the_pool_recovers() {
    let store = common::fresh_store().await;
    let locker = common::raw_client().await;
    let killer = common::raw_client().await;
    let schema = store.schema().to_owned();

    for round in 0..APPEND_ROUNDS {
        let stream = common::stream("blocked");
        // Hold the stream's lock (a session lock: no transaction id, the fence is not held)
        // so the append waits inside the append function.
        locker
            .execute(
                &format!("SELECT pg_advisory_lock(\"{schema}\".stream_lock_key($1))"),
                &[&stream.as_str()],
            )
            .await
            .unwrap();
        let append = tokio::spawn({
            let store = store.clone();
            let stream = stream.clone();
            async move {
                store
                    .append(
                        AppendRequest::new(stream, ExpectedVersion::NoStream)
                            .with_stream_type("blocked")
                            .with_events((0..10).map(common::event)),
                    )
                    .await
            }
        });
        let pid = common::wait_for_lock_wait(&killer, &schema, "append_events").await;
        let terminated: bool = killer
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .unwrap()
            .get(0);
        assert!(terminated);
        let error = tokio::time::timeout(Duration::from_secs(30), append)
            .await
            .expect("the append returns")
            .unwrap()
            .expect_err("an append on a terminated backend fails");
        assert!(
            matches!(error, StoreError::Backend(_)),
            "unexpected error: {error}"
        );
        locker
            .execute(
                &format!("SELECT pg_advisory_unlock(\"{schema}\".stream_lock_key($1))"),
                &[&stream.as_str()],
            )
            .await
            .unwrap();

        let version = store.stream_version(&stream).await.unwrap_or_else(|error| {
            panic!(
                "round {round}: the first call after a failed append got a dead pooled connection: {error:?}"
            )
        });
        assert_eq!(version, Version::ZERO, "nothing of the append was written");
        assert_eq!(count_rows(&killer, &store, &stream).await, 0);
    }
    assert_pool_serves(&store).await;
}
