//! Repository behaviour beyond the store contract: client-held versions, conflict retries,
//! the in-memory read model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use es_core::memory::{MemoryEventStore, MemoryReadModel};
use es_core::testing::{Tally, TallyCommand};
use es_core::{
    CommandContext, EventStore, LogFilter, OutboxMessage, OutboxSource, Position, Projection,
    ProjectionError, RecordedEvent, Repository, RepositoryError, StreamId, Version,
};

#[tokio::test]
async fn execute_expecting_refuses_a_stale_version() {
    let tallies = Repository::<Tally, _>::new(MemoryEventStore::new());
    let id = StreamId::new("tally-1").unwrap();
    let context = CommandContext::new();
    tallies
        .execute(&id, &TallyCommand::Add(1), &context)
        .await
        .unwrap();
    let stale = tallies
        .execute_expecting(&id, Version::ZERO, &TallyCommand::Add(2), &context)
        .await;
    match stale {
        Err(RepositoryError::Conflict(conflict)) => assert_eq!(conflict.actual, Version::new(1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let done = tallies
        .execute_expecting(&id, Version::new(1), &TallyCommand::Add(2), &context)
        .await
        .unwrap();
    assert_eq!((done.state.total, done.version), (3, Version::new(2)));
}

#[tokio::test]
async fn execute_loaded_decides_on_the_loaded_state_and_refuses_it_once_stale() {
    let tallies = Repository::<Tally, _>::new(MemoryEventStore::new()).with_conflict_retries(5);
    let id = StreamId::new("tally-loaded").unwrap();
    let context = CommandContext::new();
    let loaded = tallies.load(&id).await.unwrap();
    let stale = loaded.clone();
    let done = tallies
        .execute_loaded(&id, loaded, &TallyCommand::Add(2), &context)
        .await
        .unwrap();
    assert_eq!((done.state.total, done.version), (2, Version::new(1)));
    // The stream moved since `stale` was read: refused, not retried (the retries above are
    // for `execute`), and nothing is written.
    match tallies
        .execute_loaded(&id, stale, &TallyCommand::Add(5), &context)
        .await
    {
        Err(RepositoryError::Conflict(conflict)) => assert_eq!(conflict.actual, Version::new(1)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = tallies.load(&id).await.unwrap();
    assert_eq!((now.state.total, now.version), (2, Version::new(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_retries_let_every_concurrent_command_through() {
    let tallies =
        Arc::new(Repository::<Tally, _>::new(MemoryEventStore::new()).with_conflict_retries(50));
    let id = StreamId::new("tally-race").unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (tallies, id) = (Arc::clone(&tallies), id.clone());
            tokio::spawn(async move {
                tallies
                    .execute(&id, &TallyCommand::Add(n), &CommandContext::new())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let loaded = tallies.load(&id).await.unwrap();
    assert_eq!(
        (loaded.state.total, loaded.version),
        ((0..16).sum(), Version::new(16))
    );
}

/// Counts events per stream; fails on a chosen amount until allowed.
#[derive(Debug, Default)]
struct Counts {
    poison: i64,
    healed: AtomicBool,
}

#[async_trait::async_trait]
impl Projection<HashMap<String, u64>> for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    fn filter(&self) -> LogFilter {
        LogFilter::all().event_types(["TallyAdded"])
    }
    async fn apply(
        &self,
        model: &mut HashMap<String, u64>,
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        if event.data["amount"] == self.poison && !self.healed.load(Ordering::SeqCst) {
            return Err(ProjectionError::apply("poison"));
        }
        *model.entry(event.stream_id.to_string()).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_applies_each_event_once_and_retries_a_failed_one() {
    let store = MemoryEventStore::new();
    let tallies = Repository::<Tally, _>::new(store.clone());
    let id = StreamId::new("tally-model").unwrap();
    for amount in 1..=5 {
        tallies
            .execute(&id, &TallyCommand::Add(amount), &CommandContext::new())
            .await
            .unwrap();
    }
    let model = MemoryReadModel::<HashMap<String, u64>>::default();
    let projection = Counts {
        poison: 4,
        healed: AtomicBool::new(false),
    };
    let failed = model.run(&store, &projection).await;
    assert!(
        matches!(failed, Err(ProjectionError::Apply(_))),
        "{failed:?}"
    );
    assert_eq!(
        model.read(|m| m.get("tally-model").copied()).await,
        Some(3),
        "stopped before the poison event"
    );
    projection.healed.store(true, Ordering::SeqCst);
    let running = tokio::spawn({
        let model = model.clone();
        async move {
            let _ = model.run(&store, &projection).await;
        }
    });
    let last = tallies
        .execute(&id, &TallyCommand::Add(6), &CommandContext::new())
        .await
        .unwrap();
    assert!(
        model
            .wait_for(last.positions[0], Duration::from_secs(5))
            .await
    );
    assert_eq!(
        model.read(|m| m["tally-model"]).await,
        6,
        "every event applied exactly once"
    );
    running.abort();
}

#[tokio::test]
async fn an_outbox_message_that_cannot_be_built_fails_the_command_and_writes_nothing() {
    let store = MemoryEventStore::new();
    let tallies = Repository::<Tally, _>::new(store.clone()).with_fallible_outbox(
        |_stream, state: &Tally, _events| {
            if state.total > 5 {
                // A payload that does not serialize (a map with non-string keys).
                let unserializable: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
                serde_json::to_value(unserializable).map(|_| Vec::new())
            } else {
                let payload = serde_json::json!({ "total": state.total });
                Ok(vec![OutboxMessage::new("TallyChanged", "t", payload)])
            }
        },
    );
    let id = StreamId::new("tally-outbox").unwrap();
    let context = CommandContext::new();
    tallies
        .execute(&id, &TallyCommand::Add(1), &context)
        .await
        .unwrap();
    match tallies.execute(&id, &TallyCommand::Add(9), &context).await {
        Err(RepositoryError::Encode(error)) => {
            assert!(error.to_string().contains("JSON"), "{error}");
        }
        other => panic!("expected an encoding failure, got {other:?}"),
    }
    assert_eq!(store.stream_version(&id).await.unwrap(), Version::new(1));
    let outbox = store.read_outbox(Position::START, 10).await.unwrap();
    assert_eq!(outbox.messages.len(), 1, "only the first command's message");
}
