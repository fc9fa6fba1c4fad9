//! The two insert paths of `append_events`: a transaction's first write inserts plainly inside
//! a subtransaction that catches unique violations; later writes of the same transaction use
//! `ON CONFLICT`. Neither lets a unique violation reach the caller.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use es_core::{
    AppendRequest, AppendStatus, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId,
    Version,
};

fn request(stream: &StreamId, expected: ExpectedVersion, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest::new(stream.clone(), expected)
        .with_stream_type("paths")
        .with_events(events)
}

/// An id held by another transaction that has not committed yet: the append waits for it,
/// then reports the id as stored elsewhere once it commits, without aborting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_first_write_racing_an_uncommitted_duplicate_reports_it() {
    common::alone();
    let store = common::fresh_store().await;
    let first = common::stream("holder");
    let second = common::stream("racer");
    let shared = common::event(1);

    let mut holder = store.transaction([&first]).await.expect("begin");
    holder
        .append(request(
            &first,
            ExpectedVersion::NoStream,
            vec![shared.clone()],
        ))
        .await
        .expect("the holder appends");

    let racer = {
        let store = store.clone();
        let second = second.clone();
        let events = vec![common::event(2), shared.clone()];
        tokio::spawn(async move {
            store
                .append(request(&second, ExpectedVersion::NoStream, events))
                .await
        })
    };
    // Let the racer reach the unique index and wait there for the holder.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!racer.is_finished(), "the racer waits for the holder");
    holder.commit().await.expect("commit");

    let error = racer
        .await
        .expect("the racer task")
        .expect_err("the id is now stored in another stream");
    match error {
        StoreError::DuplicateEventId {
            event_id,
            existing_stream,
            ..
        } => {
            assert_eq!(event_id, shared.event_id());
            assert_eq!(existing_stream, first);
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert!(common::read_stream(&store, &second).await.is_empty());

    // Nothing of the refused call is left: the stream starts cleanly afterwards.
    let outcome = store
        .append(request(
            &second,
            ExpectedVersion::NoStream,
            vec![common::event(3)],
        ))
        .await
        .expect("a fresh append");
    assert_eq!(outcome.last_version, Version::new(1));
}

/// A transaction's first append, refused for a duplicate id, leaves the transaction usable,
/// and its later appends (the `ON CONFLICT` path) still work and still detect duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_write_leaves_the_transaction_usable() {
    let store = common::fresh_store().await;
    let elsewhere = common::stream("elsewhere");
    let stored = common::event(1);
    store
        .append(request(
            &elsewhere,
            ExpectedVersion::NoStream,
            vec![stored.clone()],
        ))
        .await
        .expect("stored elsewhere");

    let stream = common::stream("tx");
    let mut transaction = store.transaction([&stream]).await.expect("begin");
    let error = transaction
        .append(request(
            &stream,
            ExpectedVersion::NoStream,
            vec![common::event(2), stored.clone()],
        ))
        .await
        .expect_err("an id stored in another stream");
    assert!(
        matches!(error, StoreError::DuplicateEventId { .. }),
        "{error:?}"
    );
    let outcome = transaction
        .append(request(
            &stream,
            ExpectedVersion::NoStream,
            vec![common::event(3), common::event(4)],
        ))
        .await
        .expect("the transaction is still usable");
    assert_eq!(outcome.last_version, Version::new(2));
    let error = transaction
        .append(request(
            &stream,
            ExpectedVersion::Exact(Version::new(2)),
            vec![stored],
        ))
        .await
        .expect_err("the later path detects the duplicate too");
    assert!(
        matches!(error, StoreError::DuplicateEventId { .. }),
        "{error:?}"
    );
    transaction.commit().await.expect("commit");
    let versions: Vec<u64> = common::read_stream(&store, &stream)
        .await
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(versions, [1, 2]);
}

/// Many appends in one transaction: only the first opens a subtransaction, so the
/// transaction never holds more than one (past 64, every snapshot in the cluster would pay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_with_many_appends_opens_one_subtransaction() {
    let store = common::fresh_store().await;
    let streams: Vec<StreamId> = (0..80).map(|_| common::stream("many")).collect();
    let mut transaction = store.transaction(&streams).await.expect("begin");
    for stream in &streams {
        let outcome = transaction
            .append(request(
                stream,
                ExpectedVersion::NoStream,
                vec![common::event(1), common::event(2)],
            ))
            .await
            .expect("append");
        assert_eq!(outcome.status, AppendStatus::Appended);
    }
    // pg_stat_get_backend_subxact is PostgreSQL 16+; count the subtransaction ids this
    // transaction wrote instead: rows whose xmin differs from the top transaction's id.
    let row = transaction
        .client()
        .query_one(
            &format!(
                "SELECT count(DISTINCT xmin::text) FILTER (WHERE xmin::text <> (pg_current_xact_id()::text::bigint % 4294967296)::text)
                 FROM \"{}\".events WHERE stream_id = ANY ($1)",
                store.schema()
            ),
            &[&streams.iter().map(StreamId::as_str).collect::<Vec<_>>()],
        )
        .await
        .expect("count subtransactions");
    let subtransactions: i64 = row.get(0);
    assert_eq!(subtransactions, 1);
    transaction.commit().await.expect("commit");
}

fn versions_of(events: &[es_core::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.get()).collect()
}

/// An append that waits for a stream's lock reads the stream after the holder's commit: a
/// stale expected version is a conflict at the holder's version, and `Any` continues after
/// the holder's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waiting_for_the_lock_reads_the_holders_commit() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let stream = common::stream("waiter");
    store
        .append(request(
            &stream,
            ExpectedVersion::NoStream,
            vec![common::event(1)],
        ))
        .await
        .expect("create");

    for (expected, holder_from) in [
        (ExpectedVersion::Exact(Version::new(1)), 1),
        (ExpectedVersion::Any, 3),
    ] {
        let mut holder = store.transaction([&stream]).await.expect("begin");
        holder
            .append(request(
                &stream,
                ExpectedVersion::Exact(Version::new(holder_from)),
                vec![common::event(2), common::event(3)],
            ))
            .await
            .expect("the holder appends");
        let waiter_event = common::event(4);
        let waiter = tokio::spawn({
            let store = store.clone();
            let stream = stream.clone();
            let events = vec![waiter_event.clone()];
            async move { store.append(request(&stream, expected, events)).await }
        });
        common::wait_for_lock_wait(&observer, store.schema(), "append_events").await;
        holder.commit().await.expect("commit");
        let result = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter returns")
            .expect("the waiter task");
        match expected {
            ExpectedVersion::Any => {
                let outcome = result.expect("Any appends after the holder");
                assert_eq!(outcome.last_version, Version::new(6));
                assert_eq!(outcome.positions.len(), 1);
                let events = common::read_stream(&store, &stream).await;
                assert_eq!(versions_of(&events), [1, 2, 3, 4, 5, 6]);
                assert_eq!(events[5].event_id(), waiter_event.event_id());
            }
            _ => match result {
                Err(StoreError::Conflict(conflict)) => {
                    assert_eq!(conflict.actual, Version::new(3));
                }
                other => panic!("expected a Conflict at version 3, got {other:?}"),
            },
        }
    }
}
