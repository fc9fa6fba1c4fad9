//! The es-core checkpoint contract against PostgreSQL, and checkpoints written in a caller's
//! transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use es_core::{CheckpointError, CheckpointStore, Position, TransactionalStore};
use es_postgres::PgCheckpointStore;

async fn fresh() -> PgCheckpointStore {
    common::fresh_store().await.checkpoints()
}

es_core::checkpoint_contract_tests!(fresh());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_written_in_a_transaction_commits_with_it() {
    let store = common::fresh_store().await;
    let checkpoints = store.checkpoints();
    let (first, second) = (Position::new(5, 50), Position::new(6, 60));

    let mut tx = store.begin(&[]).await.unwrap();
    checkpoints
        .compare_and_set_in(&mut tx, "projection", None, first)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        checkpoints.load_checkpoint("projection").await.unwrap(),
        None
    );

    let mut tx = store.begin(&[]).await.unwrap();
    checkpoints
        .compare_and_set_in(&mut tx, "projection", None, first)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        checkpoints.load_checkpoint("projection").await.unwrap(),
        Some(first)
    );

    let mut tx = store.begin(&[]).await.unwrap();
    let stale = checkpoints
        .compare_and_set_in(&mut tx, "projection", None, second)
        .await;
    assert!(matches!(
        stale,
        Err(CheckpointError::Stale { actual: Some(actual), .. }) if actual == first
    ));
    tx.client()
        .execute("SELECT 1", &[])
        .await
        .expect("a stale write does not abort the transaction");
    tx.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_beyond_bigint_are_refused() {
    let checkpoints = fresh().await;
    let result = checkpoints
        .compare_and_set_checkpoint("relay", None, Position::new(u64::MAX, 1))
        .await;
    assert!(
        matches!(result, Err(CheckpointError::Backend(_))),
        "{result:?}"
    );
    assert_eq!(checkpoints.load_checkpoint("relay").await.unwrap(), None);
}
