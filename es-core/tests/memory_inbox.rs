//! The inbox contract against the in-memory inbox, and what only the in-memory inbox does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use es_core::memory::MemoryInbox;
use es_core::{Inbox, InboxError};
use uuid::Uuid;

async fn fresh() -> MemoryInbox {
    MemoryInbox::new()
}

es_core::inbox_contract_tests!(fresh());

#[tokio::test]
async fn run_all_properties() {
    es_core::testing::inbox_contract::run_all(fresh).await;
}

#[tokio::test]
async fn staged_actions_run_on_commit_only() {
    let inbox = MemoryInbox::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let stage = |tx: &mut es_core::memory::MemoryTransaction| {
        let runs = Arc::clone(&runs);
        tx.on_commit(move || {
            runs.fetch_add(1, Ordering::SeqCst);
        });
    };
    let mut rolled_back = inbox.begin().await.unwrap();
    stage(&mut rolled_back);
    drop(rolled_back);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let mut committed = inbox.begin().await.unwrap();
    stage(&mut committed);
    stage(&mut committed);
    inbox.commit(committed).await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_wait_cycle_is_a_deadlock_not_a_hang() {
    let inbox = MemoryInbox::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut first = inbox.begin().await.unwrap();
    let mut second = inbox.begin().await.unwrap();
    assert!(inbox.record(&mut first, "s", a).await.unwrap());
    assert!(inbox.record(&mut second, "s", b).await.unwrap());
    let first_waits = async {
        let new = inbox.record(&mut first, "s", b).await.unwrap();
        inbox.commit(first).await.unwrap();
        new
    };
    let second_closes_the_cycle = async {
        tokio::task::yield_now().await;
        let result = inbox.record(&mut second, "s", a).await;
        assert!(
            matches!(result, Err(InboxError::Deadlock { .. })),
            "{result:?}"
        );
        assert!(matches!(
            inbox.record(&mut second, "s", a).await,
            Err(InboxError::Aborted)
        ));
        assert!(matches!(
            inbox.commit(second).await,
            Err(InboxError::Aborted)
        ));
    };
    let (first_new, ()) = futures::join!(first_waits, second_closes_the_cycle);
    assert!(
        first_new,
        "the deadlocked transaction rolled back, releasing b"
    );
}

#[tokio::test]
async fn a_transaction_of_another_inbox_is_refused() {
    let (inbox, other) = (MemoryInbox::new(), MemoryInbox::new());
    let mut tx = other.begin().await.unwrap();
    let result = inbox.record(&mut tx, "s", Uuid::now_v7()).await;
    assert!(matches!(result, Err(InboxError::Backend(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn threads_racing_on_many_pairs_have_one_winner_each() {
    let inbox = MemoryInbox::new();
    let ids: Arc<Vec<Uuid>> = Arc::new((0..200).map(|_| Uuid::now_v7()).collect());
    let workers = (0..4).map(|_| {
        let (inbox, ids) = (inbox.clone(), Arc::clone(&ids));
        tokio::spawn(async move {
            let mut wins = 0_usize;
            for (n, id) in ids.iter().enumerate() {
                let mut tx = inbox.begin().await.unwrap();
                let new = inbox.record(&mut tx, "s", *id).await.unwrap();
                tokio::task::yield_now().await;
                if n % 3 == 0 {
                    drop(tx);
                } else {
                    inbox.commit(tx).await.unwrap();
                    wins += usize::from(new);
                }
            }
            wins
        })
    });
    let all = futures::future::join_all(workers);
    let results = tokio::time::timeout(std::time::Duration::from_secs(30), all)
        .await
        .expect("no waiter is left hanging");
    let wins: usize = results.into_iter().map(Result::unwrap).sum();
    let committed_ids = (0..200).filter(|n| n % 3 != 0).count();
    assert_eq!(wins, committed_ids);
}
