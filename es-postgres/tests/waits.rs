//! Transactions that wait on each other through the inbox. Each test holds a transaction open
//! for a while (a deadlock takes the server's `deadlock_timeout`, 1 s by default), which holds
//! back every gap-safe reader in the cluster meanwhile, so they run alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use es_core::{Inbox, InboxError, SagaCommit, SagaCommitOutcome, SagaStore};
use serde_json::json;
use uuid::Uuid;

const HOLD: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_wait_cycle_is_a_deadlock_not_a_hang() {
    common::alone();
    let inbox = common::fresh_store().await.inbox();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut first = inbox.begin().await.unwrap();
    let mut second = inbox.begin().await.unwrap();
    assert!(inbox.record(&mut first, "s", a).await.unwrap());
    assert!(inbox.record(&mut second, "s", b).await.unwrap());
    let first_waits = async {
        let new = inbox.record(&mut first, "s", b).await;
        (new, first)
    };
    let second_closes_the_cycle = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let result = inbox.record(&mut second, "s", a).await;
        (result, second)
    };
    let ((first_result, first), (second_result, second)) =
        tokio::time::timeout(Duration::from_secs(30), async {
            futures::join!(first_waits, second_closes_the_cycle)
        })
        .await
        .expect("the server breaks the cycle");
    // The server picks the victim: exactly one of the two.
    let (victim, survivor, survivor_new) = match (first_result, second_result) {
        (Err(InboxError::Deadlock { message_id, .. }), Ok(new)) => {
            assert_eq!(message_id, b);
            (first, second, new)
        }
        (Ok(new), Err(InboxError::Deadlock { message_id, .. })) => {
            assert_eq!(message_id, a);
            (second, first, new)
        }
        other => panic!("expected one deadlock victim, got {other:?}"),
    };
    assert!(survivor_new, "the victim rolled back, releasing its record");
    let mut victim = victim;
    assert!(matches!(
        inbox.record(&mut victim, "s", Uuid::now_v7()).await,
        Err(InboxError::Aborted)
    ));
    assert!(matches!(
        inbox.commit(victim).await,
        Err(InboxError::Aborted)
    ));
    inbox.commit(survivor).await.unwrap();
}

/// A consumer holds `message_id` in an open transaction while a saga commit with the same
/// inbox record starts; checks that the commit waits, then ends the consumer's transaction.
async fn saga_commit_while_consumer_holds(commit_consumer: bool) -> SagaCommitOutcome {
    let sagas = common::fresh_store().await.saga_store();
    let inbox = sagas.inbox();
    let message_id = Uuid::now_v7();
    let mut held = inbox.begin().await.unwrap();
    assert!(
        inbox
            .record(&mut held, "fulfilment", message_id)
            .await
            .unwrap()
    );
    let done = AtomicBool::new(false);
    let commit = async {
        let commit = SagaCommit::new("fulfilment", "order-1", 0, json!({}))
            .with_inbox("fulfilment", message_id);
        let outcome = sagas.commit(commit).await.unwrap();
        done.store(true, Ordering::SeqCst);
        outcome
    };
    let release = async {
        tokio::time::sleep(HOLD).await;
        assert!(
            !done.load(Ordering::SeqCst),
            "the saga commit waits for the consumer"
        );
        if commit_consumer {
            inbox.commit(held).await.unwrap();
        } else {
            drop(held);
        }
    };
    let (outcome, ()) = futures::join!(commit, release);
    let stored = sagas.load("fulfilment", "order-1").await.unwrap();
    assert_eq!(stored.is_some(), outcome != SagaCommitOutcome::Duplicate);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_saga_commit_waiting_on_a_consumer_that_commits_is_a_duplicate() {
    common::alone();
    assert_eq!(
        saga_commit_while_consumer_holds(true).await,
        SagaCommitOutcome::Duplicate
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_saga_commit_waiting_on_a_consumer_that_rolls_back_commits() {
    common::alone();
    assert_eq!(
        saga_commit_while_consumer_holds(false).await,
        SagaCommitOutcome::Committed { version: 1 }
    );
}
