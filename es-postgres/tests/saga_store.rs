//! The es-core deadline contract against PostgreSQL, and what only the PostgreSQL saga store
//! does. (The saga contract runs in `saga_contract.rs`, one property at a time.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use es_core::{
    Deadline, DeadlineStore, Inbox, OutboxMessage, OutboxSource, Position, SagaCommit,
    SagaCommitOutcome, SagaStore, StoredOutboxMessage,
};
use es_postgres::PgSagaStore;
use serde_json::json;
use uuid::Uuid;

async fn fresh() -> PgSagaStore {
    common::fresh_store().await.saga_store()
}

mod deadlines {
    es_core::deadline_contract_tests!(super::fresh());
}

const LEASE: Duration = Duration::from_secs(30);

fn whole_seconds_now() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap()
}

/// The outbox messages once `count` are readable (the reader stops at the fence of
/// transactions still running anywhere in the cluster).
async fn outbox_once(store: &PgSagaStore, count: usize) -> Vec<StoredOutboxMessage> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let batch = store.read_outbox(Position::START, 1000).await.unwrap();
        if batch.messages.len() >= count || tokio::time::Instant::now() > give_up {
            return batch.messages;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_record_in_the_inbox_and_write_whole_outbox_rows() {
    let store = fresh().await;
    let message_id = Uuid::now_v7();
    let sent = OutboxMessage::new("ChargePayment", "order-7", json!({ "amount": 42 }))
        .with_topic("payments")
        .with_source("order", "order-7")
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    let commit = SagaCommit::new("fulfilment", "order-7", 0, json!({ "step": "paying" }))
        .with_inbox("fulfilment", message_id)
        .with_outbox(sent.clone());
    assert_eq!(
        store.commit(commit).await.unwrap(),
        SagaCommitOutcome::Committed { version: 1 }
    );

    let inbox = store.inbox();
    let mut tx = inbox.begin().await.unwrap();
    assert!(
        !inbox
            .record(&mut tx, "fulfilment", message_id)
            .await
            .unwrap(),
        "a consumer sees the saga's inbox record"
    );
    let outbox = outbox_once(&store, 1).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].message, sent, "every column round-trips");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_set_twice_in_one_commit_keeps_the_last() {
    let store = fresh().await;
    let now = whole_seconds_now();
    let commit = SagaCommit::new("fulfilment", "order-1", 0, json!(1))
        .set_deadline(
            "awaiting-payment",
            now - TimeDelta::seconds(2),
            json!({ "n": 1 }),
        )
        .set_deadline(
            "awaiting-payment",
            now - TimeDelta::seconds(1),
            json!({ "n": 2 }),
        );
    store.commit(commit.clone()).await.unwrap();
    assert_eq!(
        store.claim_due(now, LEASE, 10).await.unwrap(),
        vec![commit.set_deadlines[1].clone()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_deadline_scheduled_again_fires_again() {
    let store = fresh().await;
    let now = whole_seconds_now();
    let deadline = Deadline::new("fulfilment", "order-1", "remind", now, json!({}));
    store.schedule(deadline.clone()).await.unwrap();
    assert_eq!(
        store.claim_due(now, LEASE, 10).await.unwrap(),
        vec![deadline.clone()]
    );
    assert!(store.complete(deadline.id).await.unwrap());
    let later = Deadline {
        due_at: now + TimeDelta::seconds(60),
        ..deadline.clone()
    };
    store.schedule(later.clone()).await.unwrap();
    assert_eq!(
        store
            .claim_due(now + TimeDelta::seconds(59), LEASE, 10)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store
            .claim_due(now + TimeDelta::seconds(60), LEASE, 10)
            .await
            .unwrap(),
        vec![later]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedulers_claim_disjoint_deadlines() {
    let store = fresh().await;
    let now = whole_seconds_now();
    for n in 0..40 {
        let step = format!("step-{n}");
        let due = now - TimeDelta::seconds(n);
        store
            .schedule(Deadline::new("fulfilment", "order-1", step, due, json!(n)))
            .await
            .unwrap();
    }
    let schedulers = (0..4).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store.claim_due(now, LEASE, 3).await.unwrap();
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|deadline| deadline.id));
            }
        })
    });
    let mut all: Vec<Uuid> = Vec::new();
    for claimed in futures::future::join_all(schedulers).await {
        all.extend(claimed.unwrap());
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (40, 40),
        "each deadline is claimed exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_stamped_by_the_given_clock() {
    let at = whole_seconds_now() - TimeDelta::days(3);
    let store = fresh().await.with_clock(es_core::ManualClock::new(at));
    store
        .commit(SagaCommit::new("fulfilment", "order-1", 0, json!(1)))
        .await
        .unwrap();
    let stored = store.load("fulfilment", "order-1").await.unwrap().unwrap();
    assert_eq!(stored.updated_at, at);
    assert_eq!(
        store.history("fulfilment", "order-1").await.unwrap(),
        vec![stored]
    );
}
