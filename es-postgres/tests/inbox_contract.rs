//! The es-core inbox contract against PostgreSQL, and what only the PostgreSQL inbox does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{AppendRequest, EventStore, ExpectedVersion, Inbox, InboxError, StreamId, Version};
use es_postgres::PgInbox;
use uuid::Uuid;

async fn fresh() -> PgInbox {
    common::fresh_store().await.inbox()
}

es_core::inbox_contract_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_a_failed_statement_aborted_neither_records_nor_commits() {
    let inbox = fresh().await;
    let message_id = Uuid::now_v7();
    let mut tx = inbox.begin().await.unwrap();
    assert!(inbox.record(&mut tx, "billing", message_id).await.unwrap());
    assert!(tx.client().execute("SELECT 1 / 0", &[]).await.is_err());
    let again = inbox.record(&mut tx, "billing", Uuid::now_v7()).await;
    assert!(matches!(again, Err(InboxError::Aborted)), "{again:?}");
    let committed = inbox.commit(tx).await;
    assert!(
        matches!(committed, Err(InboxError::Aborted)),
        "a bare COMMIT would have rolled back silently: {committed:?}"
    );
    let mut tx = inbox.begin().await.unwrap();
    assert!(
        inbox.record(&mut tx, "billing", message_id).await.unwrap(),
        "nothing of the aborted transaction was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_commit_and_roll_back_with_the_appends_of_their_transaction() {
    let store = common::fresh_store().await;
    let inbox = store.inbox();
    let stream = StreamId::new(format!("order-{}", Uuid::new_v4().simple())).unwrap();
    let message_id = Uuid::now_v7();
    let event = || es_core::NewEvent {
        event_type: "OrderPaid".to_owned(),
        schema_version: 1,
        data: serde_json::json!({ "paid": true }),
        metadata: es_core::CommandContext::new().metadata(&es_core::SystemClock),
    };

    let mut tx = store.transaction([&stream]).await.unwrap();
    tx.append(AppendRequest::new(stream.clone(), ExpectedVersion::NoStream).with_events([event()]))
        .await
        .unwrap();
    assert!(inbox.record(&mut tx, "payments", message_id).await.unwrap());
    drop(tx);
    assert_eq!(store.stream_version(&stream).await.unwrap(), Version::ZERO);

    let mut tx = store.transaction([&stream]).await.unwrap();
    tx.append(AppendRequest::new(stream.clone(), ExpectedVersion::NoStream).with_events([event()]))
        .await
        .unwrap();
    assert!(
        inbox.record(&mut tx, "payments", message_id).await.unwrap(),
        "the rolled-back record was not kept"
    );
    inbox.commit(tx).await.unwrap();
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        Version::new(1)
    );
    let mut tx = inbox.begin().await.unwrap();
    assert!(!inbox.record(&mut tx, "payments", message_id).await.unwrap());
}
