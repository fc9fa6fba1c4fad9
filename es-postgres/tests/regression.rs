//! Transaction ids that went backwards (a dump restored into a new cluster): readers of the
//! global log and of the outbox refuse to read on instead of skipping events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{EventStore, LogFilter, OutboxSource, Position, StoreError};
use es_postgres::{PgError, PgEventStore};
use tokio_postgres::Client;

/// A transaction id far beyond the server's next one, as a log restored from a busier cluster
/// would hold.
async fn future_xid(client: &Client) -> u64 {
    let next: i64 = client
        .query_one(
            "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text)::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let future = 4_000_000_000_u64.max(next as u64 + 1_000_000_000);
    assert!(future > next as u64);
    future
}

fn assert_regression(error: &StoreError, xid: u64) {
    match PgError::find(error) {
        Some(PgError::TransactionIdRegression { stored, server }) => {
            assert_eq!(*stored, xid, "the error reports the stored id");
            assert!(server < stored);
        }
        _ => panic!("expected PgError::TransactionIdRegression, got {error:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("refuse") && message.contains("rather than skip"),
        "the message says readers refuse rather than skip: {message}"
    );
}

async fn insert_future_event(client: &Client, store: &PgEventStore, xid: u64) {
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".events (transaction_id, stream_id, stream_type, version, event_id,
                     event_type, schema_version, data, metadata)
                 VALUES ($1::text::xid8, 'restored-1', 'restored', 1, gen_random_uuid(),
                     'Restored', 1, '{{}}', $2)",
                store.schema()
            ),
            &[&xid.to_string(), &serde_json::to_value(common::event(0).metadata).unwrap()],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_log_refuses_to_read_past_a_transaction_id_regression() {
    let store = common::fresh_store().await;
    let client = common::raw_client().await;
    let xid = future_xid(&client).await;
    insert_future_event(&client, &store, xid).await;

    let error = store
        .read_log(Position::START, &LogFilter::all(), 100)
        .await
        .expect_err("reading a log with ids ahead of the server");
    assert_regression(&error, xid);
    let error = store
        .read_log(
            Position::START,
            &LogFilter::all().stream_types(["something-else"]),
            100,
        )
        .await
        .expect_err("a filtered reader refuses too");
    assert_regression(&error, xid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_ahead_of_the_server_is_refused() {
    let store = common::fresh_store().await;
    let client = common::raw_client().await;
    let xid = future_xid(&client).await;
    let error = store
        .read_log(Position::new(xid, 1), &LogFilter::all(), 100)
        .await
        .expect_err("a checkpoint from a busier cluster");
    assert_regression(&error, xid);
    let error = store
        .read_outbox(Position::new(xid, 1), 100)
        .await
        .expect_err("an outbox checkpoint from a busier cluster");
    assert_regression(&error, xid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_refuses_to_read_past_a_transaction_id_regression() {
    let store = common::fresh_store().await;
    let client = common::raw_client().await;
    let xid = future_xid(&client).await;
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".outbox (transaction_id, message_id, message_type, schema_version,
                     partition_key, occurred_at, headers, payload)
                 VALUES ($1::text::xid8, gen_random_uuid(), 'Restored', 1, 'k', now(), '{{}}', '{{}}')",
                store.schema()
            ),
            &[&xid.to_string()],
        )
        .await
        .unwrap();

    let error = store
        .read_outbox(Position::START, 100)
        .await
        .expect_err("reading an outbox with ids ahead of the server");
    assert_regression(&error, xid);
}
