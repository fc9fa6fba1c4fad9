//! `PgTransaction`: atomic multi-stream appends with outbox rows, rollback on drop, the
//! lock-first rule, and conflicts that do not abort the transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use es_core::{
    AppendRequest, AppendStatus, EventStore, ExpectedVersion, OutboxMessage, OutboxSource,
    Position, StoreError, StreamId, Version,
};
use es_postgres::{PgEventStore, PgTransaction};
use serde_json::json;
use tokio_postgres::Client;
use uuid::Uuid;

fn request(stream: &StreamId, expected: ExpectedVersion, events: usize) -> AppendRequest {
    AppendRequest::new(stream.clone(), expected)
        .with_stream_type("tx")
        .with_events((0..events as i64).map(common::event))
}

async fn outbox_rows(client: &Client, store: &PgEventStore, message_id: Uuid) -> i64 {
    client
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".outbox WHERE message_id = $1",
                store.schema()
            ),
            &[&message_id],
        )
        .await
        .unwrap()
        .get(0)
}

async fn assert_refused_as_not_locked_first(transaction: &mut PgTransaction, stream: &StreamId) {
    let error = transaction
        .append(request(stream, ExpectedVersion::NoStream, 1))
        .await
        .expect_err("an append to an unnamed stream after the transaction got an id");
    match &error {
        StoreError::StreamNotLocked(refused) => assert_eq!(refused, stream),
        _ => panic!("expected StoreError::StreamNotLocked, got {error:?}"),
    }
    assert!(
        error.to_string().contains(stream.as_str()),
        "the error names the stream: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_streams_and_an_outbox_message_commit_together() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let debit = common::stream("debit");
    let credit = common::stream("credit");
    let message = OutboxMessage::new("Transferred", debit.as_str(), json!({ "amount": 5 }));
    let message_id = message.message_id;

    let mut transaction = store.transaction([&debit, &credit]).await.expect("begin");
    let first = transaction
        .append(request(&debit, ExpectedVersion::NoStream, 2))
        .await
        .expect("append to the first stream");
    let second = transaction
        .append(request(&credit, ExpectedVersion::NoStream, 3).with_outbox([message]))
        .await
        .expect("append to the second stream with an outbox message");
    assert_eq!(first.status, AppendStatus::Appended);
    assert_eq!(first.last_version, Version::new(2));
    assert_eq!(second.last_version, Version::new(3));
    assert_eq!(
        first.positions[0].transaction(),
        second.positions[0].transaction(),
        "one transaction id for both appends"
    );

    // Nothing is visible from other connections before the commit.
    assert_eq!(store.stream_version(&debit).await.unwrap(), Version::ZERO);
    assert_eq!(store.stream_version(&credit).await.unwrap(), Version::ZERO);
    assert!(common::read_stream(&store, &debit).await.is_empty());
    assert_eq!(outbox_rows(&observer, &store, message_id).await, 0);
    let early = store
        .read_log(Position::START, &es_core::LogFilter::all(), 100)
        .await
        .unwrap();
    assert!(early.events.is_empty(), "the log shows uncommitted events");
    assert!(early.checkpoint < first.positions[0]);

    transaction.commit().await.expect("commit");

    assert_eq!(store.stream_version(&debit).await.unwrap(), Version::new(2));
    assert_eq!(
        store.stream_version(&credit).await.unwrap(),
        Version::new(3)
    );
    assert_eq!(common::read_stream(&store, &credit).await.len(), 3);
    assert_eq!(outbox_rows(&observer, &store, message_id).await, 1);
    let (log, _) = common::read_log_until(&store, 5, 100, Duration::from_secs(30)).await;
    assert_eq!(log.len(), 5);
    common::assert_streams_in_version_order(&log);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let batch = store.read_outbox(Position::START, 100).await.unwrap();
        if let Some(stored) = batch.messages.first() {
            assert_eq!(batch.messages.len(), 1);
            assert_eq!(stored.message.message_id, message_id);
            assert_eq!(
                stored.position.transaction(),
                first.positions[0].transaction(),
                "the outbox row was written by the same transaction"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox message never became readable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_transaction_rolls_back_and_releases_its_locks() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let stream = common::stream("dropped");
    let message = OutboxMessage::new("Dropped", stream.as_str(), json!({}));
    let message_id = message.message_id;
    {
        let mut transaction = store.transaction([&stream]).await.expect("begin");
        transaction
            .append(request(&stream, ExpectedVersion::NoStream, 4).with_outbox([message]))
            .await
            .expect("append");
        // Dropped here without commit.
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), Version::ZERO);
    assert!(common::read_stream(&store, &stream).await.is_empty());
    assert_eq!(outbox_rows(&observer, &store, message_id).await, 0);

    // The stream's lock went with the rolled-back transaction, and the pool keeps working.
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        store.append(request(&stream, ExpectedVersion::NoStream, 1)),
    )
    .await
    .expect("the dropped transaction's stream lock is released")
    .expect("append after the rollback");
    assert_eq!(outcome.last_version, Version::new(1));
    for _ in 0..20 {
        let other = common::stream("after-drop");
        store
            .append(request(&other, ExpectedVersion::NoStream, 1))
            .await
            .expect("the pool keeps working");
    }

    // An explicit rollback behaves the same and the connection is reusable.
    let mut transaction = store.transaction([&stream]).await.expect("begin");
    transaction
        .append(request(&stream, ExpectedVersion::Exact(Version::new(1)), 2))
        .await
        .unwrap();
    transaction.rollback().await.expect("rollback");
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        Version::new(1)
    );
}

/// A transaction's caller can be dropped while BEGIN and its stream locks are in flight (its
/// task aborted, as a crashing consumer loop's is). Its connection must not go back to the
/// pool then: there its transaction would stay open and take the lock it was waiting for, and
/// every later transaction on that stream would wait for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_while_it_waits_for_its_locks_leaves_no_lock_behind() {
    let store = common::fresh_store().await;
    let observer = common::raw_client().await;
    let stream = common::stream("begin-dropped");
    let holder = store.transaction([&stream]).await.expect("begin");
    let waiting = tokio::spawn({
        let (store, stream) = (store.clone(), stream.clone());
        async move { store.transaction([&stream]).await.map(drop) }
    });
    // The second transaction waits for the lock the first holds; its task is aborted then.
    let pid = common::wait_for_lock_wait(&observer, store.schema(), "lock_streams").await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    holder.rollback().await.expect("rollback");
    // The aborted one's backend got the lock once the holder let go; with its connection
    // closed it ends, and the lock with it.
    let started = std::time::Instant::now();
    loop {
        let alive: bool = observer
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if !alive {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the aborted transaction's backend {pid} still holds its connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another pool takes the stream's lock at once (on the aborted one's pool, the leaked
    // connection itself could have been handed out, holding the lock already).
    let other = es_postgres::PgEventStore::connect(
        &es_postgres::PgConfig::new(common::database_url())
            .schema(store.schema())
            .pool_size(1),
    )
    .unwrap();
    let transaction = tokio::time::timeout(Duration::from_secs(5), other.transaction([&stream]))
        .await
        .expect("the stream's lock is free")
        .expect("begin");
    transaction.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_stream_is_refused_once_the_transaction_has_an_id() {
    let store = common::fresh_store().await;
    let named = common::stream("named");
    let unnamed = common::stream("unnamed");

    // The transaction id assigned by a function call.
    let mut transaction = store.transaction([&named]).await.expect("begin");
    transaction
        .client()
        .execute("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
    assert_refused_as_not_locked_first(&mut transaction, &unnamed).await;
    let outcome = transaction
        .append(request(&named, ExpectedVersion::NoStream, 2))
        .await
        .expect("a named stream takes appends after the id was assigned");
    assert_eq!(outcome.last_version, Version::new(2));
    transaction.commit().await.expect("commit");
    assert_eq!(store.stream_version(&named).await.unwrap(), Version::new(2));
    assert_eq!(store.stream_version(&unnamed).await.unwrap(), Version::ZERO);

    // The id assigned by a write of the caller's own (a read model written before the append).
    let setup = common::raw_client().await;
    let table = format!("\"{}\".read_model", store.schema());
    setup
        .batch_execute(&format!(
            "CREATE TABLE {table} (id text PRIMARY KEY, n int NOT NULL)"
        ))
        .await
        .unwrap();
    let mut transaction = store.transaction([&named]).await.expect("begin");
    transaction
        .client()
        .execute(&format!("INSERT INTO {table} (id, n) VALUES ('x', 1)"), &[])
        .await
        .unwrap();
    assert_refused_as_not_locked_first(&mut transaction, &unnamed).await;
    transaction
        .append(request(&named, ExpectedVersion::Exact(Version::new(2)), 1))
        .await
        .expect("the named stream still takes appends");
    transaction
        .commit()
        .await
        .expect("the refusal did not abort the transaction");
    assert_eq!(store.stream_version(&named).await.unwrap(), Version::new(3));
    let rows: i64 = setup
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "the caller's row committed with the append");

    // A temporary table assigns an id too.
    let mut transaction = store.transaction([&named]).await.expect("begin");
    transaction
        .client()
        .batch_execute("CREATE TEMP TABLE scratch (x int) ON COMMIT DROP")
        .await
        .unwrap();
    assert_refused_as_not_locked_first(&mut transaction, &unnamed).await;
    transaction.rollback().await.unwrap();

    // The first append of a transaction that has no id yet may lock an unnamed stream itself,
    // but its insert assigns the id, so a second unnamed stream is refused.
    let other = common::stream("unnamed-2");
    let mut transaction = store.transaction([&named]).await.expect("begin");
    transaction
        .append(request(&unnamed, ExpectedVersion::NoStream, 1))
        .await
        .expect("no transaction id yet: the append locks the stream first");
    assert_refused_as_not_locked_first(&mut transaction, &other).await;
    transaction.commit().await.unwrap();
    assert_eq!(
        store.stream_version(&unnamed).await.unwrap(),
        Version::new(1)
    );
    assert_eq!(store.stream_version(&other).await.unwrap(), Version::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_inside_a_transaction_does_not_abort_it() {
    let store = common::fresh_store().await;
    let stream = common::stream("conflicted");
    let elsewhere = common::stream("elsewhere");
    store
        .append(request(&elsewhere, ExpectedVersion::NoStream, 1))
        .await
        .unwrap();
    let stored_elsewhere = common::read_stream(&store, &elsewhere).await;

    let mut transaction = store
        .transaction([&stream, &elsewhere])
        .await
        .expect("begin");
    let retried = request(&stream, ExpectedVersion::NoStream, 2);
    transaction
        .append(retried.clone())
        .await
        .expect("first append");

    let error = transaction
        .append(request(&stream, ExpectedVersion::NoStream, 1))
        .await
        .expect_err("a second NoStream append conflicts");
    let conflict = error.as_conflict().expect("a typed conflict");
    assert_eq!(conflict.actual, Version::new(2));

    let error = transaction
        .append(request(&stream, ExpectedVersion::Exact(Version::new(7)), 1))
        .await
        .expect_err("a wrong exact version conflicts");
    assert!(matches!(error, StoreError::Conflict(_)), "{error:?}");

    // An idempotent retry and an id stored in another stream: no unique violation either.
    let again = transaction.append(retried).await.expect("retry");
    assert_eq!(again.status, AppendStatus::AlreadyAppended);
    let mut reused = request(&stream, ExpectedVersion::Exact(Version::new(2)), 0);
    reused.events.push(es_core::NewEvent {
        metadata: stored_elsewhere[0].metadata.clone(),
        ..common::event(0)
    });
    let error = transaction
        .append(reused)
        .await
        .expect_err("an id stored in another stream");
    assert!(
        matches!(error, StoreError::DuplicateEventId { .. }),
        "{error:?}"
    );

    let outcome = transaction
        .append(request(&stream, ExpectedVersion::Exact(Version::new(2)), 1))
        .await
        .expect("the transaction is still usable after conflicts");
    assert_eq!(outcome.last_version, Version::new(3));
    transaction
        .client()
        .query_one("SELECT 1", &[])
        .await
        .expect("the transaction is not aborted");
    transaction.commit().await.expect("commit");

    let events = common::read_stream(&store, &stream).await;
    let versions: Vec<u64> = events.iter().map(|e| e.version.get()).collect();
    assert_eq!(versions, [1, 2, 3]);
}
