//! Conflicts on demand in the in-memory store: a concurrent writer interleaved before a write
//! makes it conflict, so retries and re-runs are tested without a real race.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::memory::MemoryEventStore;
use es_core::testing::{Tally, TallyCommand};
use es_core::{
    AggregateHandler, AppendRequest, CommandContext, Delivery, EventStore, ExpectedVersion,
    HandlerRegistry, InvalidStreamId, MessageHandler, MessageType, NewEvent, OutboxMessage,
    Repository, RepositoryError, StoreError, StoreTransaction, StreamId, SystemClock,
    TransactionalStore, UnitOfWork, Version,
};
use serde_json::json;

fn tally_added(amount: i64) -> NewEvent {
    NewEvent {
        event_type: "TallyAdded".to_owned(),
        schema_version: 1,
        data: json!({ "amount": amount }),
        metadata: CommandContext::new().metadata(&SystemClock),
    }
}

/// Another writer adds `amount` to `stream` just before the next write to it.
fn interleave_add(store: &MemoryEventStore, stream: &StreamId, amount: i64) {
    store.interleave(
        AppendRequest::new(stream.clone(), ExpectedVersion::Any)
            .with_stream_type("tally")
            .with_events([tally_added(amount)]),
    );
}

#[tokio::test]
async fn an_interleaved_writer_makes_a_plain_append_conflict() {
    let store = MemoryEventStore::new();
    let id = StreamId::new("tally-1").unwrap();
    interleave_add(&store, &id, 1);
    let error = store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([tally_added(2)]),
        )
        .await
        .unwrap_err();
    let conflict = error.as_conflict().expect("a conflict");
    assert_eq!(conflict.actual, Version::new(1));
    assert_eq!(store.stream_version(&id).await.unwrap(), Version::new(1));
}

#[tokio::test]
async fn repository_retries_decide_again_on_the_moved_stream() {
    let store = MemoryEventStore::new();
    let id = StreamId::new("tally-1").unwrap();
    let tallies = Repository::<Tally, _>::new(store.clone());
    interleave_add(&store, &id, 10);
    let refused = tallies
        .execute(&id, &TallyCommand::Add(1), &CommandContext::new())
        .await;
    assert!(
        matches!(refused, Err(RepositoryError::Conflict(_))),
        "{refused:?}"
    );

    interleave_add(&store, &id, 10);
    let retried = tallies
        .clone()
        .with_conflict_retries(1)
        .execute(&id, &TallyCommand::Add(1), &CommandContext::new())
        .await
        .expect("the retry decides on the moved stream");
    assert_eq!(
        (retried.state.total, retried.version),
        (21, Version::new(3))
    );
}

#[tokio::test]
async fn a_unit_of_work_conflicting_at_commit_runs_again_from_the_start() {
    let store = MemoryEventStore::new();
    let id = StreamId::new("tally-1").unwrap();
    let tallies = Repository::<Tally, _>::new(store.clone());
    let done = UnitOfWork::new(&store)
        .lock([&id])
        .conflict_retries(1)
        .run(|mut tx| {
            let (id, tallies, store) = (id.clone(), &tallies, &store);
            async move {
                let executed = tallies
                    .execute_in(&mut tx, &id, &TallyCommand::Add(5), &CommandContext::new())
                    .await?;
                if executed.version == Version::new(1) {
                    // The first run decided on an empty stream; a writer gets in before it commits.
                    interleave_add(store, &id, 100);
                }
                Ok::<_, RepositoryError<_>>((tx, executed.state.total))
            }
        })
        .await
        .expect("the second run commits");
    assert_eq!(
        done.runs, 2,
        "the conflict at commit ran the whole unit again"
    );
    assert_eq!(
        done.value, 105,
        "the second run decided on the moved stream"
    );
    assert_eq!(store.stream_version(&id).await.unwrap(), Version::new(2));
}

#[tokio::test]
async fn a_commit_that_conflicts_writes_nothing_of_the_transaction() {
    let store = MemoryEventStore::new();
    let (a, b) = (StreamId::new("a-1").unwrap(), StreamId::new("b-1").unwrap());
    let mut tx = store.begin(&[a.clone(), b.clone()]).await.unwrap();
    tx.append(
        AppendRequest::new(a.clone(), ExpectedVersion::NoStream).with_events([tally_added(1)]),
    )
    .await
    .unwrap();
    tx.append(
        AppendRequest::new(b.clone(), ExpectedVersion::NoStream).with_events([tally_added(1)]),
    )
    .await
    .unwrap();
    tx.record_handled("s", uuid::Uuid::now_v7()).await.unwrap();
    interleave_add(&store, &b, 7);
    let error = tx.commit().await.unwrap_err();
    assert!(
        matches!(error, StoreError::Conflict(ref c) if c.stream == b),
        "{error:?}"
    );
    assert_eq!(store.stream_version(&a).await.unwrap(), Version::ZERO);
    assert_eq!(store.stream_version(&b).await.unwrap(), Version::new(1));
}

#[derive(serde::Deserialize)]
struct Add {
    amount: i64,
}

impl MessageType for Add {
    const MESSAGE_TYPE: &'static str = "Add";
}

struct AddToOne;

impl AggregateHandler for AddToOne {
    type Message = Add;
    type Aggregate = Tally;

    fn stream(&self, _: &Add) -> Result<StreamId, InvalidStreamId> {
        StreamId::new("tally-1")
    }

    fn command(&self, add: &Add) -> TallyCommand {
        TallyCommand::Add(add.amount)
    }
}

fn delivery(amount: i64) -> Delivery {
    Delivery {
        topic: "adds".into(),
        partition: 0,
        offset: 0,
        attempt: 1,
        message: OutboxMessage::new("Add", "tally-1", json!({ "amount": amount })),
    }
}

#[tokio::test]
async fn a_handled_message_that_conflicts_runs_its_command_again_once() {
    let store = MemoryEventStore::new();
    let id = StreamId::new("tally-1").unwrap();
    let tallies = Repository::<Tally, _>::new(store.clone());
    let handlers = HandlerRegistry::new().on::<Add>(tallies.message_handler("adds", AddToOne));
    interleave_add(&store, &id, 100);
    let message = delivery(1);
    handlers
        .handle(&message)
        .await
        .expect("handled after a re-run");
    handlers
        .handle(&message)
        .await
        .expect("duplicate acknowledged");
    let loaded = tallies.load(&id).await.unwrap();
    assert_eq!((loaded.state.total, loaded.version), (101, Version::new(2)));
}

#[tokio::test]
async fn conflicts_past_the_retries_are_handed_back_as_transient() {
    let store = MemoryEventStore::new();
    let id = StreamId::new("tally-1").unwrap();
    let tallies = Repository::<Tally, _>::new(store.clone());
    let handler = tallies
        .message_handler("adds", AddToOne)
        .with_conflict_retries(1);
    interleave_add(&store, &id, 1);
    interleave_add(&store, &id, 1);
    // Each run's write commits one interleaved append first: two runs, two conflicts.
    let error = handler.handle(&delivery(1)).await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    assert!(
        matches!(error, es_core::HandlerError::Conflict(_)),
        "{error:?}"
    );
    let loaded = tallies.load(&id).await.unwrap();
    assert_eq!(loaded.state.total, 2, "nothing of the handler was written");
    handler
        .handle(&delivery(1))
        .await
        .expect("the retry by the consumer loop applies it");
}
