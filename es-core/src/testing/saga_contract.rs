//! The saga store contract: every backend's tests run these properties against a fresh store
//! each (see [`saga_contract_tests!`](crate::saga_contract_tests)).

use futures::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use super::deadline_contract::{base_time, claim, seconds};
use crate::ids::Position;
use crate::outbox::{OutboxMessage, OutboxSource};
use crate::saga::{
    DeadlineStore, SagaCommit, SagaCommitOutcome, SagaInstance, SagaStore, SagaStoreError,
};

/// What a store must implement to run the saga contract: saga state, the deadlines commits set,
/// and the outbox commits write to.
pub trait SagaContractStore: SagaStore + DeadlineStore + OutboxSource {}

impl<S: SagaStore + DeadlineStore + OutboxSource> SagaContractStore for S {}

fn saga_name(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn message(key: &str) -> OutboxMessage {
    OutboxMessage::new("ChargePayment", key, json!({ "key": key }))
}

async fn commit<S: SagaStore>(store: &S, commit: SagaCommit) -> SagaCommitOutcome {
    store.commit(commit).await.expect("saga commit")
}

async fn load<S: SagaStore>(store: &S, saga: &str, key: &str) -> Option<SagaInstance> {
    store.load(saga, key).await.expect("load saga")
}

/// The ids of every message in the outbox.
async fn outbox_ids<S: OutboxSource>(store: &S) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut after = Position::START;
    loop {
        let batch = store.read_outbox(after, 100).await.expect("read outbox");
        if let Some(last) = batch.messages.last() {
            after = last.position;
        }
        ids.extend(
            batch
                .messages
                .iter()
                .map(|stored| stored.message.message_id),
        );
        if batch.reached_end {
            return ids;
        }
    }
}

/// The outbox's message ids once every id in `wanted` is readable. Backends read the outbox
/// gap-safely, so a message may become readable only when older transactions elsewhere end.
async fn outbox_ids_with<S: OutboxSource>(store: &S, wanted: &[Uuid]) -> Vec<Uuid> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ids = outbox_ids(store).await;
        if wanted.iter().all(|id| ids.contains(id)) {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox messages {wanted:?} never became readable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Commits a marker message in a saga instance of its own and returns the outbox once the
/// marker is readable: anything committed before it is readable too, so an absent message
/// was never written.
async fn outbox_ids_after_marker<S: SagaContractStore>(store: &S, saga: &str) -> Vec<Uuid> {
    let marker = message("marker");
    let id = marker.message_id;
    commit(
        store,
        SagaCommit::new(saga, Uuid::now_v7().to_string(), 0, json!("marker")).with_outbox(marker),
    )
    .await;
    outbox_ids_with(store, &[id]).await
}

fn assert_conflict(result: &Result<SagaCommitOutcome, SagaStoreError>, expected: u64, actual: u64) {
    match result {
        Err(SagaStoreError::Conflict {
            expected: conflict_expected,
            actual: conflict_actual,
            ..
        }) => assert_eq!((*conflict_expected, *conflict_actual), (expected, actual)),
        other => panic!("expected a conflict ({expected} vs {actual}), got {other:?}"),
    }
}

/// Concurrent commits at the same expected version, for a new instance and for an existing
/// one: exactly one wins, the others get `Conflict` with the actual version and write nothing.
pub async fn concurrent_commits_have_one_winner<S: SagaContractStore>(store: S) {
    let saga = saga_name("race");
    for expected in [0, 1] {
        let attempts: Vec<SagaCommit> = (0..4)
            .map(|n| {
                SagaCommit::new(&saga, "order-1", expected, json!({ "attempt": n }))
                    .with_outbox(message("order-1"))
                    .with_inbox(&saga, Uuid::now_v7())
            })
            .collect();
        let results = join_all(attempts.iter().map(|c| store.commit(c.clone()))).await;
        let winners: Vec<&SagaCommit> = attempts
            .iter()
            .zip(&results)
            .filter(|(_, result)| result.is_ok())
            .map(|(attempt, _)| attempt)
            .collect();
        assert_eq!(winners.len(), 1, "exactly one commit wins: {results:?}");
        for result in &results {
            if result.is_ok() {
                assert_eq!(
                    result.as_ref().ok(),
                    Some(&SagaCommitOutcome::Committed {
                        version: expected + 1
                    })
                );
            } else {
                assert_conflict(result, expected, expected + 1);
            }
        }
        let stored = load(&store, &saga, "order-1").await.expect("stored");
        assert_eq!(stored.state, winners[0].state);
        let outbox = outbox_ids_with(&store, &[winners[0].outbox[0].message_id]).await;
        for attempt in &attempts {
            let written = outbox.contains(&attempt.outbox[0].message_id);
            assert_eq!(written, std::ptr::eq(attempt, winners[0]));
        }
    }
}

/// A commit that conflicts writes nothing: no outbox message, no deadline, and its inbox
/// record is not kept (the same message commits later).
pub async fn conflicting_commit_writes_nothing<S: SagaContractStore>(store: S) {
    let saga = saga_name("conflict");
    let now = base_time();
    commit(&store, SagaCommit::new(&saga, "order-1", 0, json!(1))).await;
    let message_id = Uuid::now_v7();
    let stale = SagaCommit::new(&saga, "order-1", 0, json!("stale"))
        .with_outbox(message("order-1"))
        .with_inbox(&saga, message_id)
        .set_deadline("awaiting-payment", now - seconds(1), json!({}));
    assert_conflict(&store.commit(stale.clone()).await, 0, 1);
    assert_eq!(
        load(&store, &saga, "order-1")
            .await
            .expect("stored")
            .version,
        1
    );
    assert!(
        !outbox_ids_after_marker(&store, &saga)
            .await
            .contains(&stale.outbox[0].message_id)
    );
    assert_eq!(claim(&store, now, &saga).await, vec![]);
    let retry = SagaCommit::new(&saga, "order-1", 1, json!(2)).with_inbox(&saga, message_id);
    assert_eq!(
        commit(&store, retry).await,
        SagaCommitOutcome::Committed { version: 2 },
        "the conflicting commit's inbox record was rolled back"
    );
}

/// `load` returns nothing for an unknown instance and the latest commit otherwise.
pub async fn load_returns_latest<S: SagaContractStore>(store: S) {
    let saga = saga_name("load");
    assert_eq!(load(&store, &saga, "order-1").await, None);
    for version in 0..3 {
        let state = json!({ "step": version });
        let last = version == 2;
        let outcome = commit(
            &store,
            SagaCommit::new(&saga, "order-1", version, state).completed(last),
        )
        .await;
        assert_eq!(
            outcome,
            SagaCommitOutcome::Committed {
                version: version + 1
            }
        );
    }
    let latest = load(&store, &saga, "order-1").await.expect("stored");
    assert_eq!(
        (latest.saga.as_str(), latest.key.as_str()),
        (saga.as_str(), "order-1")
    );
    assert_eq!(latest.version, 3);
    assert_eq!(latest.state, json!({ "step": 2 }));
    assert!(latest.completed);
    assert_eq!(load(&store, &saga, "order-2").await, None);
}

/// A commit whose inbox record exists is a `Duplicate` (even at a stale version) and writes
/// nothing: state, outbox and deadlines are unchanged.
pub async fn duplicate_writes_nothing<S: SagaContractStore>(store: S) {
    let saga = saga_name("duplicate");
    let now = base_time();
    let message_id = Uuid::now_v7();
    let first = SagaCommit::new(&saga, "order-1", 0, json!("first"))
        .with_outbox(message("order-1"))
        .with_inbox(&saga, message_id);
    commit(&store, first).await;
    for expected in [1, 0] {
        let again = SagaCommit::new(&saga, "order-1", expected, json!("again"))
            .completed(true)
            .with_outbox(message("order-1"))
            .with_inbox(&saga, message_id)
            .set_deadline("awaiting-payment", now - seconds(1), json!({}));
        assert_eq!(
            commit(&store, again.clone()).await,
            SagaCommitOutcome::Duplicate
        );
        let stored = load(&store, &saga, "order-1").await.expect("stored");
        assert_eq!(
            (stored.version, stored.state, stored.completed),
            (1, json!("first"), false)
        );
        assert!(
            !outbox_ids_after_marker(&store, &saga)
                .await
                .contains(&again.outbox[0].message_id)
        );
        assert_eq!(claim(&store, now, &saga).await, vec![]);
    }
    let other_subscriber = SagaCommit::new(&saga, "order-1", 1, json!("other"))
        .with_inbox(saga_name("other"), message_id);
    assert_eq!(
        commit(&store, other_subscriber).await,
        SagaCommitOutcome::Committed { version: 2 }
    );
}

/// A commit's outbox messages are readable from the outbox, in order.
pub async fn outbox_messages_are_written<S: SagaContractStore>(store: S) {
    let saga = saga_name("outbox");
    let messages = vec![message("order-1"), message("order-1"), message("order-1")];
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    commit(
        &store,
        SagaCommit::new(&saga, "order-1", 0, json!(1)).with_outbox_messages(messages),
    )
    .await;
    let outbox = outbox_ids_with(&store, &ids).await;
    let written: Vec<Uuid> = outbox.into_iter().filter(|id| ids.contains(id)).collect();
    assert_eq!(written, ids);
}

/// `history` returns every committed version, oldest first.
pub async fn history_in_order<S: SagaContractStore>(store: S) {
    let saga = saga_name("history");
    let history = |key| store.history(&saga, key);
    assert_eq!(history("order-1").await.expect("history"), vec![]);
    let states = [json!("placed"), json!("paid"), json!("shipped")];
    for (version, state) in (0..).zip(&states) {
        commit(
            &store,
            SagaCommit::new(&saga, "order-1", version, state.clone()),
        )
        .await;
    }
    commit(
        &store,
        SagaCommit::new(&saga, "order-2", 0, json!("placed")),
    )
    .await;
    let history = history("order-1").await.expect("history");
    let versions: Vec<(u64, Value)> = history
        .into_iter()
        .map(|instance| (instance.version, instance.state))
        .collect();
    assert_eq!(
        versions,
        vec![
            (1, states[0].clone()),
            (2, states[1].clone()),
            (3, states[2].clone())
        ]
    );
}

/// Commits set deadlines (replacing a step's earlier one) and cancel them by step.
pub async fn commits_set_and_cancel_deadlines<S: SagaContractStore>(store: S) {
    let saga = saga_name("deadlines");
    let now = base_time();
    let first = SagaCommit::new(&saga, "order-1", 0, json!(1))
        .set_deadline("awaiting-payment", now - seconds(2), json!({ "n": 1 }))
        .set_deadline("awaiting-stock", now - seconds(1), json!({ "n": 1 }));
    commit(&store, first.clone()).await;
    assert_eq!(claim(&store, now, &saga).await, first.set_deadlines);
    let second = SagaCommit::new(&saga, "order-1", 1, json!(2))
        .cancel_deadline("awaiting-payment")
        .set_deadline("awaiting-stock", now, json!({ "n": 2 }));
    commit(&store, second.clone()).await;
    let claimed = claim(&store, now, &saga).await;
    assert_eq!(
        claimed, second.set_deadlines,
        "the replaced step fires once more, the cancelled one never"
    );
    assert!(store.complete(claimed[0].id).await.expect("complete"));
    assert_eq!(claim(&store, now + seconds(3600), &saga).await, vec![]);
}

/// `list` returns the latest state of each instance of a saga, by key, filtered by completion.
pub async fn list_filters_by_completion<S: SagaContractStore>(store: S) {
    let saga = saga_name("list");
    commit(&store, SagaCommit::new(&saga, "order-1", 0, json!(1))).await;
    commit(&store, SagaCommit::new(&saga, "order-2", 0, json!(1))).await;
    commit(
        &store,
        SagaCommit::new(&saga, "order-2", 1, json!(2)).completed(true),
    )
    .await;
    commit(
        &store,
        SagaCommit::new(saga_name("other"), "order-3", 0, json!(1)),
    )
    .await;
    let keys = |instances: Vec<SagaInstance>| {
        instances
            .into_iter()
            .map(|i| (i.key, i.version))
            .collect::<Vec<_>>()
    };
    let list = |completed| store.list(&saga, completed);
    assert_eq!(
        keys(list(None).await.expect("list")),
        vec![("order-1".to_owned(), 1), ("order-2".to_owned(), 2)]
    );
    assert_eq!(
        keys(list(Some(true)).await.expect("list completed")),
        vec![("order-2".to_owned(), 2)]
    );
    assert_eq!(
        keys(list(Some(false)).await.expect("list running")),
        vec![("order-1".to_owned(), 1)]
    );
}

/// Runs every property, each on a fresh store from `new_store`.
pub async fn run_all<S, F, Fut>(new_store: F)
where
    S: SagaContractStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    concurrent_commits_have_one_winner(new_store().await).await;
    conflicting_commit_writes_nothing(new_store().await).await;
    load_returns_latest(new_store().await).await;
    duplicate_writes_nothing(new_store().await).await;
    outbox_messages_are_written(new_store().await).await;
    history_in_order(new_store().await).await;
    commits_set_and_cancel_deadlines(new_store().await).await;
    list_filters_by_completion(new_store().await).await;
}

/// Generates one `#[tokio::test]` per saga-contract property; `$new_store` is an expression
/// evaluating to a future of a fresh store, evaluated once per test.
///
/// ```text
/// es_core::saga_contract_tests!(fresh_pg_saga_store());
/// ```
#[macro_export]
macro_rules! saga_contract_tests {
    ($new_store:expr) => {
        $crate::saga_contract_tests!(@each $new_store;
            concurrent_commits_have_one_winner,
            conflicting_commit_writes_nothing,
            load_returns_latest,
            duplicate_writes_nothing,
            outbox_messages_are_written,
            history_in_order,
            commits_set_and_cancel_deadlines,
            list_filters_by_completion
        );
    };
    (@each $new_store:expr; $($property:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $property() {
                $crate::testing::saga_contract::$property($new_store.await).await;
            }
        )+
    };
}
