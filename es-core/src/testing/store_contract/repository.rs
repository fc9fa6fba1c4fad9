//! Typed reads through the repository: upcasting, snapshots, decode errors.

use chrono::Utc;
use serde_json::json;

use super::{ContractStore, stream};
use crate::clock::SystemClock;
use crate::event::{DomainEvent, EventType, NewEvent};
use crate::ids::{ExpectedVersion, Version};
use crate::metadata::CommandContext;
use crate::registry::EventRegistry;
use crate::repository::{Repository, RepositoryError};
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::store::AppendRequest;
use crate::testing::fixture::{Tally, TallyCommand};

/// Events stored at an old schema version are upcast before deserialization.
pub async fn upcasting_on_read<S: ContractStore>(store: S) {
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    enum Renamed {
        #[serde(rename = "ContractRenamed")]
        Renamed { full_name: String },
    }
    impl DomainEvent for Renamed {
        const EVENT_TYPES: &'static [EventType] = &[EventType::new("ContractRenamed").version(3)];
        fn event_type(&self) -> &'static str {
            "ContractRenamed"
        }
    }
    let id = stream("upcast");
    let old = NewEvent {
        event_type: "ContractRenamed".to_owned(),
        schema_version: 1,
        data: json!({ "first": "Ada", "last": "Lovelace" }),
        metadata: CommandContext::new().metadata(&SystemClock),
    };
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([old]))
        .await
        .expect("append v1");
    let mut registry = EventRegistry::new();
    registry.register::<Renamed>().expect("register");
    registry
        .upcaster("ContractRenamed", 1, |data| Ok(json!({ "name": format!("{} {}", data["first"].as_str().unwrap_or(""), data["last"].as_str().unwrap_or("")) })))
        .expect("upcaster 1");
    registry
        .upcaster("ContractRenamed", 2, |data| {
            Ok(json!({ "full_name": data["name"] }))
        })
        .expect("upcaster 2");
    let recorded: Vec<_> = futures::TryStreamExt::try_collect(
        store.read_stream(&id, crate::store::StreamRead::forward()),
    )
    .await
    .expect("read");
    let Renamed::Renamed { full_name } = recorded[0]
        .decode::<Renamed>(&registry)
        .expect("upcast and decode");
    assert_eq!(full_name, "Ada Lovelace");
    assert_eq!(
        recorded[0].schema_version, 1,
        "stored data is never rewritten"
    );
}

/// Snapshots are taken by policy and used by loads; one taken under another snapshot version
/// is ignored.
pub async fn snapshots_used_and_invalidated<S: ContractStore>(store: S) {
    let id = stream("snap");
    let repository =
        Repository::<Tally, S>::new(store.clone()).with_snapshots(SnapshotPolicy::EveryNEvents(3));
    let context = CommandContext::new();
    for amount in 1..=7 {
        repository
            .execute(&id, &TallyCommand::Add(amount), &context)
            .await
            .expect("execute");
    }
    let snapshot = store
        .load_snapshot(&id)
        .await
        .expect("load snapshot")
        .expect("a snapshot was taken");
    assert_eq!(snapshot.version, Version::new(6));
    assert_eq!(snapshot.snapshot_version, 1);
    let loaded = repository.load(&id).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.state.applied, loaded.version),
        (28, 7, Version::new(7))
    );

    // A marker state proves the load starts from the snapshot, not from the first event.
    let marker = Snapshot {
        stream_id: id.clone(),
        version: Version::new(7),
        snapshot_version: 1,
        state: json!({ "total": 1000, "applied": 7 }),
        taken_at: Utc::now(),
    };
    store
        .save_snapshot(marker.clone())
        .await
        .expect("save marker");
    assert_eq!(repository.load(&id).await.expect("load").state.total, 1000);

    let other_version = Snapshot {
        snapshot_version: 2,
        ..marker
    };
    store.save_snapshot(other_version).await.expect("save");
    let loaded = repository.load(&id).await.expect("load");
    assert_eq!(
        loaded.state.total, 28,
        "a snapshot of another version is ignored"
    );
    let plain = Repository::<Tally, S>::new(store.clone());
    assert_eq!(
        plain.load(&id).await.expect("load").state.total,
        28,
        "without snapshots every event is replayed"
    );
}

/// A stored payload that does not fit the event type fails with an error naming the stream,
/// version and type; the command is not run.
pub async fn decode_errors_name_the_event<S: ContractStore>(store: S) {
    let id = stream("bad");
    let good = super::event(1);
    let bad = NewEvent {
        data: json!({ "amount": "not a number" }),
        ..super::event(2)
    };
    store
        .append(AppendRequest::new(id.clone(), ExpectedVersion::NoStream).with_events([good, bad]))
        .await
        .expect("append");
    let repository = Repository::<Tally, S>::new(store.clone());
    match repository
        .execute(&id, &TallyCommand::Add(3), &CommandContext::new())
        .await
    {
        Err(RepositoryError::Decode(error)) => {
            assert_eq!(error.stream, id);
            assert_eq!(error.version, Version::new(2));
            assert_eq!(error.event_type, "TallyAdded");
            let message = error.to_string();
            assert!(
                message.contains(id.as_str()) && message.contains("version 2"),
                "{message}"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        Version::new(2)
    );
    match repository
        .execute(
            &stream("neg"),
            &TallyCommand::Add(-1),
            &CommandContext::new(),
        )
        .await
    {
        Err(RepositoryError::Rejected(rejection)) => assert_eq!(rejection.0, -1),
        other => panic!("expected a rejection, got {other:?}"),
    }
}
