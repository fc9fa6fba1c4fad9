//! Soft and hard deletion.

use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use serde_json::json;

use super::{ContractStore, event, events, stream};
use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::ids::{ExpectedVersion, Position, Version};
use crate::metadata::CommandContext;
use crate::outbox::OutboxMessage;
use crate::repository::{Repository, RepositoryError};
use crate::snapshot::Snapshot;
use crate::store::{AppendRequest, DeleteMode, LogFilter, StreamRead, TOMBSTONE_EVENT_TYPE};
use crate::testing::fixture::{Tally, TallyCommand};

/// A soft delete appends a tombstone after checking the expected version; the events stay
/// readable; appends and repository loads are refused with `StreamDeleted`.
pub async fn soft_delete_refuses_appends<S: ContractStore>(store: S) {
    let id = stream("soft");
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events(events(0..3)))
        .await
        .expect("append");
    let stale = store
        .delete_stream(
            &id,
            ExpectedVersion::Exact(Version::new(2)),
            DeleteMode::Soft,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict(ref c)) if c.actual == Version::new(3)),
        "{stale:?}"
    );
    let tombstone = store
        .delete_stream(
            &id,
            ExpectedVersion::Exact(Version::new(3)),
            DeleteMode::Soft,
        )
        .await
        .expect("soft delete")
        .expect("a tombstone position");
    let recorded: Vec<RecordedEvent> = store
        .read_stream(&id, StreamRead::forward())
        .try_collect()
        .await
        .expect("read");
    assert_eq!(recorded.len(), 4, "the events stay readable");
    assert_eq!(recorded[3].event_type, TOMBSTONE_EVENT_TYPE);
    assert_eq!(recorded[3].position, tombstone);
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(Version::new(4)),
    ] {
        let refused = store
            .append(AppendRequest::new(id.clone(), expected).with_events([event(9)]))
            .await;
        assert!(
            matches!(refused, Err(StoreError::StreamDeleted(ref s)) if *s == id),
            "{refused:?}"
        );
    }
    let again = store
        .delete_stream(&id, ExpectedVersion::Any, DeleteMode::Soft)
        .await;
    assert!(
        matches!(again, Err(StoreError::StreamDeleted(_))),
        "{again:?}"
    );
    let repository = Repository::<Tally, S>::new(store.clone());
    let loaded = repository
        .execute(&id, &TallyCommand::Add(1), &CommandContext::new())
        .await;
    assert!(
        matches!(
            loaded,
            Err(RepositoryError::Store(StoreError::StreamDeleted(_)))
        ),
        "{loaded:?}"
    );
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(4)
    );
}

/// A hard delete removes the stream's events, snapshot and outbox messages, and forgets the
/// stream; other streams are untouched.
pub async fn hard_delete_erases_everything<S: ContractStore>(store: S) {
    let id = stream("hard");
    let other = stream("keep");
    let message = OutboxMessage::new("TallyChanged", id.as_str(), json!({ "n": 1 }));
    let kept_message = OutboxMessage::new("TallyChanged", other.as_str(), json!({ "n": 2 }));
    store
        .append(
            AppendRequest::new(id.clone(), ExpectedVersion::NoStream)
                .with_events(events(0..3))
                .with_outbox([message.clone()]),
        )
        .await
        .expect("append");
    store
        .append(
            AppendRequest::new(other.clone(), ExpectedVersion::NoStream)
                .with_events(events(0..2))
                .with_outbox([kept_message.clone()]),
        )
        .await
        .expect("append other");
    store
        .save_snapshot(Snapshot {
            stream_id: id.clone(),
            version: Version::new(3),
            snapshot_version: 1,
            state: json!({ "total": 3, "applied": 3 }),
            taken_at: Utc::now(),
        })
        .await
        .expect("snapshot");
    let stale = store
        .delete_stream(
            &id,
            ExpectedVersion::Exact(Version::new(1)),
            DeleteMode::Hard,
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
    let deleted = store
        .delete_stream(&id, ExpectedVersion::Any, DeleteMode::Hard)
        .await
        .expect("hard delete");
    assert_eq!(deleted, None);

    let remaining: Vec<RecordedEvent> = store
        .read_stream(&id, StreamRead::forward())
        .try_collect()
        .await
        .expect("read");
    assert!(remaining.is_empty(), "no event of the stream remains");
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::ZERO
    );
    assert!(
        store.load_snapshot(&id).await.expect("snapshot").is_none(),
        "its snapshot is gone"
    );

    // Wait until the other stream's append is visible in the log and outbox, then check that
    // nothing of the erased stream is anywhere.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut log = Vec::new();
        let mut after = Position::START;
        loop {
            let batch = store
                .read_log(after, &LogFilter::all(), 1000)
                .await
                .expect("log");
            log.extend(batch.events);
            after = batch.checkpoint;
            if batch.reached_end {
                break;
            }
        }
        let outbox = store
            .read_outbox(Position::START, 100_000)
            .await
            .expect("outbox")
            .messages;
        let other_visible = log.iter().filter(|e| e.stream_id == other).count() == 2
            && outbox
                .iter()
                .any(|m| m.message.message_id == kept_message.message_id);
        if other_visible {
            assert!(
                log.iter().all(|e| e.stream_id != id),
                "the global log holds none of its events"
            );
            assert!(
                outbox
                    .iter()
                    .all(|m| m.message.message_id != message.message_id),
                "its outbox message is gone"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other stream never became visible"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([event(1)]))
        .await
        .expect("an erased stream id starts afresh");
}
