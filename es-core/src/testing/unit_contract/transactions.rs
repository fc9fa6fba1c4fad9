//! Store transactions and the unit of work.

use std::sync::atomic::{AtomicU32, Ordering};

use super::{UnitContractStore, outbox_messages};
use crate::error::StoreError;
use crate::ids::{ExpectedVersion, Version};
use crate::metadata::CommandContext;
use crate::outbox::OutboxMessage;
use crate::repository::{Repository, RepositoryError};
use crate::store::{AppendRequest, StreamRead};
use crate::testing::fixture::{NegativeAmount, Tally, TallyCommand};
use crate::testing::store_contract::{event, events, stream};
use crate::transaction::StoreTransaction;
use crate::unit::UnitOfWork;

/// Appends to two streams, an outbox message and a record of a handled message commit
/// together, and none of them is visible before the commit.
pub async fn multi_stream_transaction_commits_together<S: UnitContractStore>(store: S) {
    let (debit, credit) = (stream("debit"), stream("credit"));
    let message = OutboxMessage::new("Transferred", debit.as_str(), serde_json::json!({}));
    let message_id = uuid::Uuid::now_v7();
    let mut tx = store
        .begin(&[debit.clone(), credit.clone()])
        .await
        .expect("begin");
    let after_debit = tx
        .append(
            AppendRequest::new(debit.clone(), ExpectedVersion::NoStream).with_events(events(0..2)),
        )
        .await
        .expect("debit");
    assert_eq!(after_debit, Version::new(2));
    tx.append(
        AppendRequest::new(credit.clone(), ExpectedVersion::NoStream)
            .with_events(events(0..1))
            .with_outbox([message.clone()]),
    )
    .await
    .expect("credit");
    assert!(
        tx.record_handled("transfers", message_id)
            .await
            .expect("record")
    );
    assert_eq!(
        store.stream_version(&debit).await.expect("version"),
        Version::ZERO,
        "nothing is visible before the commit"
    );
    let committed = tx.commit().await.expect("commit");
    assert_eq!(committed.positions.len(), 3, "every event's position");
    assert_eq!(
        store.stream_version(&debit).await.expect("version"),
        Version::new(2)
    );
    assert_eq!(
        store.stream_version(&credit).await.expect("version"),
        Version::new(1)
    );
    let outbox = outbox_messages(&store, 1).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].message_id, message.message_id);
    let mut check = store.begin(&[]).await.expect("begin");
    assert!(
        check
            .is_handled("transfers", message_id)
            .await
            .expect("read")
    );
    assert!(!check.is_handled("other", message_id).await.expect("read"));
}

/// A transaction dropped without a commit leaves nothing behind.
pub async fn dropped_transaction_writes_nothing<S: UnitContractStore>(store: S) {
    let (first, second) = (stream("dropped-a"), stream("dropped-b"));
    let message_id = uuid::Uuid::now_v7();
    {
        let mut tx = store
            .begin(&[first.clone(), second.clone()])
            .await
            .expect("begin");
        for id in [&first, &second] {
            tx.append(
                AppendRequest::new(id.clone(), ExpectedVersion::Any).with_events(events(0..1)),
            )
            .await
            .expect("append");
        }
        assert!(
            tx.record_handled("dropper", message_id)
                .await
                .expect("record")
        );
    }
    for id in [&first, &second] {
        assert_eq!(
            store.stream_version(id).await.expect("version"),
            Version::ZERO
        );
    }
    let mut tx = store.begin(&[]).await.expect("begin");
    assert!(!tx.is_handled("dropper", message_id).await.expect("read"));
    assert!(
        tx.record_handled("dropper", message_id)
            .await
            .expect("record"),
        "the dropped record is gone"
    );
}

/// A unit of work that appended to one stream and then failed (on a conflict with no retry
/// left, or with its own error) writes nothing at all.
pub async fn multi_stream_unit_rolls_back_entirely<S: UnitContractStore>(store: S) {
    let (first, second) = (stream("all-a"), stream("all-b"));
    store
        .append(
            AppendRequest::new(second.clone(), ExpectedVersion::NoStream).with_events(events(0..1)),
        )
        .await
        .expect("second exists");
    let failed = UnitOfWork::new(&store)
        .lock([&first, &second])
        .run(|mut tx| {
            let (first, second) = (first.clone(), second.clone());
            async move {
                tx.append(
                    AppendRequest::new(first, ExpectedVersion::NoStream).with_events(events(0..3)),
                )
                .await?;
                tx.append(
                    AppendRequest::new(second, ExpectedVersion::NoStream).with_events(events(0..1)),
                )
                .await?;
                Ok::<_, StoreError>((tx, ()))
            }
        })
        .await;
    assert!(
        matches!(&failed, Err(StoreError::Conflict(c)) if c.stream == second),
        "the second append conflicts: {failed:?}"
    );
    assert_eq!(
        store.stream_version(&first).await.expect("version"),
        Version::ZERO
    );

    let repository = Repository::<Tally, S>::new(store.clone());
    let refused = UnitOfWork::new(&store)
        .lock([&first, &second])
        .run(|mut tx| {
            let (first, second, repository) = (first.clone(), second.clone(), &repository);
            async move {
                let context = CommandContext::new();
                repository
                    .execute_in(&mut tx, &first, &TallyCommand::Add(5), &context)
                    .await?;
                repository
                    .execute_in(&mut tx, &second, &TallyCommand::Add(-5), &context)
                    .await?;
                Ok::<_, RepositoryError<NegativeAmount>>((tx, ()))
            }
        })
        .await;
    assert!(matches!(
        refused,
        Err(RepositoryError::Rejected(NegativeAmount(-5)))
    ));
    assert_eq!(
        store.stream_version(&first).await.expect("version"),
        Version::ZERO,
        "the first command rolled back with the second's rejection"
    );
    assert_eq!(
        store.stream_version(&second).await.expect("version"),
        Version::new(1)
    );
}

/// A transaction's first append may go to a stream it did not name; after a write, an append to
/// another unnamed stream is refused with `StreamNotLocked`, and a unit of work runs again with
/// that stream locked first and commits everything once.
pub async fn late_stream_is_refused_then_locked_by_a_rerun<S: UnitContractStore>(store: S) {
    let (named, first, late) = (stream("named"), stream("first"), stream("late"));
    let mut tx = store
        .begin(std::slice::from_ref(&named))
        .await
        .expect("begin");
    tx.append(
        AppendRequest::new(first.clone(), ExpectedVersion::NoStream).with_events(events(0..1)),
    )
    .await
    .expect("a first write may lock its own stream");
    let refused = tx
        .append(
            AppendRequest::new(late.clone(), ExpectedVersion::NoStream).with_events(events(0..1)),
        )
        .await;
    assert!(
        matches!(&refused, Err(StoreError::StreamNotLocked(s)) if *s == late),
        "an append to an unlocked stream after a write: {refused:?}"
    );
    drop(tx);

    let runs = AtomicU32::new(0);
    let done = UnitOfWork::new(&store)
        .lock([&named])
        .run(|mut tx| {
            let (named, late, runs) = (named.clone(), late.clone(), &runs);
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                tx.append(
                    AppendRequest::new(named, ExpectedVersion::NoStream).with_events(events(0..1)),
                )
                .await?;
                tx.append(
                    AppendRequest::new(late, ExpectedVersion::NoStream).with_events(events(0..2)),
                )
                .await?;
                Ok::<_, StoreError>((tx, "done"))
            }
        })
        .await
        .expect("the unit runs again with the late stream locked");
    assert_eq!((done.value, done.runs), ("done", 2));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(
        store.stream_version(&named).await.expect("version"),
        Version::new(1)
    );
    assert_eq!(
        store.stream_version(&late).await.expect("version"),
        Version::new(2)
    );
}

/// Reads inside a transaction see its own appends, through the repository too.
pub async fn transaction_reads_its_own_writes<S: UnitContractStore>(store: S) {
    let id = stream("own");
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([event(2)]))
        .await
        .expect("append");
    let repository = Repository::<Tally, S>::new(store.clone());
    let mut tx = store.begin(std::slice::from_ref(&id)).await.expect("begin");
    let executed = repository
        .execute_in(&mut tx, &id, &TallyCommand::Add(3), &CommandContext::new())
        .await
        .expect("execute");
    assert_eq!(
        (executed.state.total, executed.version),
        (5, Version::new(2))
    );
    let seen = tx
        .read_stream(&id, StreamRead::forward())
        .await
        .expect("read");
    assert_eq!(seen.len(), 2, "the transaction sees its own event");
    let backward = tx
        .read_stream(&id, StreamRead::backward().limit(1))
        .await
        .expect("read");
    assert_eq!(backward[0].version, Version::new(2));
    let loaded = repository.load_in(&mut tx, &id).await.expect("load");
    assert_eq!(loaded.state.total, 5);
    assert_eq!(
        repository.load(&id).await.expect("load").state.total,
        2,
        "others do not see it yet"
    );
    tx.commit().await.expect("commit");
    assert_eq!(repository.load(&id).await.expect("load").state.total, 5);
}

/// A unit of work whose decision was made on a version another writer moved past conflicts,
/// runs again from the start, and commits once.
pub async fn conflicting_unit_runs_again<S: UnitContractStore>(store: S) {
    let id = stream("moved");
    let runs = AtomicU32::new(0);
    let done = UnitOfWork::new(&store)
        .conflict_retries(2)
        .run(|mut tx| {
            let (id, store, runs) = (id.clone(), &store, &runs);
            async move {
                let version = store.stream_version(&id).await?;
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Another writer commits between this unit's read and its append.
                    store
                        .append(
                            AppendRequest::new(id.clone(), ExpectedVersion::Any)
                                .with_events(events(0..1)),
                        )
                        .await?;
                }
                let expected = ExpectedVersion::from_current(version);
                let after = tx
                    .append(AppendRequest::new(id, expected).with_events(events(0..1)))
                    .await?;
                Ok::<_, StoreError>((tx, after))
            }
        })
        .await
        .expect("the second run commits");
    assert_eq!(done.runs, 2);
    assert_eq!(done.value, Version::new(2));
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(2)
    );
}
