//! The saga and deadline contracts against the in-memory saga store, and its sharing of inbox
//! and outbox.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::memory::{MemoryInbox, MemoryOutbox, MemorySagaStore};
use es_core::{Inbox, SagaCommit, SagaCommitOutcome, SagaStore};
use serde_json::json;
use uuid::Uuid;

async fn fresh() -> MemorySagaStore {
    MemorySagaStore::new()
}

mod saga {
    es_core::saga_contract_tests!(super::fresh());
}

mod deadlines {
    es_core::deadline_contract_tests!(super::fresh());
}

#[tokio::test]
async fn run_all_properties() {
    es_core::testing::saga_contract::run_all(fresh).await;
    es_core::testing::deadline_contract::run_all(fresh).await;
}

#[tokio::test]
async fn commits_share_the_given_inbox_and_outbox() {
    let (inbox, outbox) = (MemoryInbox::new(), MemoryOutbox::new());
    let store = MemorySagaStore::new()
        .with_inbox(inbox.clone())
        .with_outbox(outbox.clone());
    let message_id = Uuid::now_v7();
    let commit = SagaCommit::new("fulfilment", "order-1", 0, json!({}))
        .with_inbox("fulfilment", message_id)
        .with_outbox(es_core::OutboxMessage::new(
            "ChargePayment",
            "order-1",
            json!({}),
        ));
    let sent = commit.outbox[0].message_id;
    assert_eq!(
        store.commit(commit).await.unwrap(),
        SagaCommitOutcome::Committed { version: 1 }
    );
    let mut tx = inbox.begin().await.unwrap();
    assert!(
        !inbox
            .record(&mut tx, "fulfilment", message_id)
            .await
            .unwrap()
    );
    let messages = outbox.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].message.message_id, sent);
}

#[tokio::test]
async fn a_commit_waits_for_a_consumer_holding_its_inbox_record() {
    let store = MemorySagaStore::new();
    let message_id = Uuid::now_v7();
    let mut held = store.inbox().begin().await.unwrap();
    assert!(
        store
            .inbox()
            .record(&mut held, "fulfilment", message_id)
            .await
            .unwrap()
    );
    let commit =
        SagaCommit::new("fulfilment", "order-1", 0, json!({})).with_inbox("fulfilment", message_id);
    let saga_commit = store.commit(commit);
    let release = async {
        tokio::task::yield_now().await;
        store.inbox().commit(held).await.unwrap();
    };
    let (outcome, ()) = futures::join!(saga_commit, release);
    assert_eq!(outcome.unwrap(), SagaCommitOutcome::Duplicate);
    assert_eq!(store.load("fulfilment", "order-1").await.unwrap(), None);
}
