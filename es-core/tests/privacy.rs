//! A repository with privacy: personal values are stored encrypted in events, snapshots and
//! outbox messages, read back as written, and as forgotten once their subject is forgotten,
//! while the aggregate goes on working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use es_core::memory::MemoryEventStore;
use es_core::privacy::{MemoryKeyStore, Personal, Privacy, SubjectId};
use es_core::{
    Aggregate, CommandContext, DomainEvent, EventStore, OutboxMessage, Repository, SnapshotPolicy,
    SnapshotStore, StreamId, StreamRead,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

const MARKER: &str = "Zanzibar-8472";

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Member {
    name: Option<Personal<String>>,
    visits: u32,
}

#[derive(Debug)]
enum MemberCommand {
    Join(Personal<String>),
    Visit,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum MemberEvent {
    #[serde(rename = "MemberJoined")]
    Joined { name: Personal<String> },
    #[serde(rename = "MemberVisited")]
    Visited,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl Aggregate for Member {
    const TYPE: &'static str = "member";
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = Never;

    fn decide(&self, command: &MemberCommand) -> Result<Vec<MemberEvent>, Never> {
        Ok(vec![match command {
            MemberCommand::Join(name) => MemberEvent::Joined { name: name.clone() },
            MemberCommand::Visit => MemberEvent::Visited,
        }])
    }

    fn evolve(&mut self, event: &MemberEvent) {
        match event {
            MemberEvent::Joined { name } => self.name = Some(name.clone()),
            MemberEvent::Visited => self.visits += 1,
        }
    }
}

fn members(store: &MemoryEventStore, privacy: &Privacy) -> Repository<Member, MemoryEventStore> {
    Repository::new(store.clone())
        .with_privacy(privacy.clone())
        .with_snapshots(SnapshotPolicy::EveryNEvents(2))
        .with_outbox(|stream, state: &Member, _| {
            vec![OutboxMessage::new(
                "MemberChanged",
                stream.as_str(),
                serde_json::json!({ "name": state.name, "visits": state.visits }),
            )]
        })
}

/// Everything the store holds, as text.
async fn everything(store: &MemoryEventStore, stream: &StreamId) -> String {
    let events: Vec<_> = store
        .read_stream(stream, StreamRead::forward())
        .try_collect()
        .await
        .unwrap();
    let snapshot = store.load_snapshot(stream).await.unwrap();
    let outbox = store.outbox().messages();
    format!(
        "{:?} {:?} {:?}",
        events.iter().map(|e| &e.data).collect::<Vec<_>>(),
        snapshot.map(|s| s.state),
        outbox
            .iter()
            .map(|m| &m.message.payload)
            .collect::<Vec<_>>()
    )
}

#[tokio::test]
async fn personal_values_are_stored_encrypted_and_forgotten_for_good() {
    let store = MemoryEventStore::new();
    let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
    let repository = members(&store, &privacy);
    let ada = SubjectId::new("member-1").unwrap();
    let stream = StreamId::for_aggregate(Member::TYPE, 1).unwrap();
    let context = CommandContext::new();
    let name = Personal::new(ada.clone(), format!("Ada {MARKER}"));
    repository
        .execute(&stream, &MemberCommand::Join(name.clone()), &context)
        .await
        .unwrap();
    repository
        .execute(&stream, &MemberCommand::Visit, &context)
        .await
        .unwrap();

    // Events, the snapshot and the outbox hold it only encrypted.
    let stored = everything(&store, &stream).await;
    assert!(stored.contains("cipher"), "{stored}");
    assert!(store.load_snapshot(&stream).await.unwrap().is_some());
    assert!(!stored.contains(MARKER), "{stored}");

    // Read back as written (from the snapshot, and from the events alone).
    let loaded = repository.load(&stream).await.unwrap();
    assert_eq!(loaded.state.name, Some(name.clone()));
    let without_snapshots =
        Repository::<Member, _>::new(store.clone()).with_privacy(privacy.clone());
    assert_eq!(
        without_snapshots.load(&stream).await.unwrap().state.name,
        Some(name)
    );

    // Forgotten: every copy reads as forgotten; the aggregate goes on.
    privacy.forget(&ada, "test").await.unwrap();
    let loaded = repository.load(&stream).await.unwrap();
    let forgotten = loaded.state.name.unwrap();
    assert!(forgotten.is_forgotten());
    assert_eq!(forgotten.subject(), &ada);
    assert_eq!(loaded.state.visits, 1);
    let loaded = without_snapshots.load(&stream).await.unwrap();
    assert!(loaded.state.name.unwrap().is_forgotten());
    repository
        .execute(&stream, &MemberCommand::Visit, &context)
        .await
        .unwrap();
    assert_eq!(repository.load(&stream).await.unwrap().state.visits, 2);
    assert!(!everything(&store, &stream).await.contains(MARKER));
}

#[tokio::test]
async fn without_privacy_an_encrypted_event_is_a_decode_error_not_plaintext() {
    let store = MemoryEventStore::new();
    let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
    let stream = StreamId::for_aggregate(Member::TYPE, 2).unwrap();
    let ada = SubjectId::new("member-2").unwrap();
    members(&store, &privacy)
        .execute(
            &stream,
            &MemberCommand::Join(Personal::new(ada, MARKER.to_owned())),
            &CommandContext::new(),
        )
        .await
        .unwrap();
    let blind = Repository::<Member, _>::new(store.clone());
    let error = blind.load(&stream).await.unwrap_err();
    let text = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(text.contains("still encrypted"), "{text}");
}

#[derive(Debug, Deserialize)]
struct MemberChanged {
    name: Option<Personal<String>>,
}

impl es_core::MessageType for MemberChanged {
    const MESSAGE_TYPE: &'static str = "MemberChanged";
}

#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<Option<Personal<String>>>>>);

#[async_trait::async_trait]
impl es_core::TypedHandler for Seen {
    type Message = MemberChanged;
    async fn handle(
        &self,
        message: MemberChanged,
        _: &es_core::Delivery,
    ) -> Result<(), es_core::HandlerError> {
        self.0.lock().unwrap().push(message.name);
        Ok(())
    }
}

#[tokio::test]
async fn a_consumer_reads_personal_values_of_messages_through_the_key_store() {
    use es_core::{Delivery, HandlerRegistry, MessageHandler, Typed};

    let store = MemoryEventStore::new();
    let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
    let stream = StreamId::for_aggregate(Member::TYPE, 3).unwrap();
    let ada = SubjectId::new("member-3").unwrap();
    members(&store, &privacy)
        .execute(
            &stream,
            &MemberCommand::Join(Personal::new(ada.clone(), MARKER.to_owned())),
            &CommandContext::new(),
        )
        .await
        .unwrap();
    let message = store.outbox().messages().remove(0).message;
    // What the broker would carry: no plaintext.
    assert!(!message.payload.to_string().contains(MARKER));
    let delivery = Delivery {
        message,
        topic: "members".to_owned(),
        partition: 0,
        offset: 0,
        attempt: 1,
    };
    let seen = Seen::default();
    let handlers = HandlerRegistry::new()
        .with_privacy(privacy.clone())
        .on::<MemberChanged>(Typed(seen.clone()));
    handlers.handle(&delivery).await.unwrap();
    privacy.forget(&ada, "test").await.unwrap();
    handlers.handle(&delivery).await.unwrap();
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen[0].as_ref().and_then(|n| n.value()).map(String::as_str),
        Some(MARKER)
    );
    assert!(seen[1].as_ref().unwrap().is_forgotten());

    // A consumer without the key store cannot read the message: a permanent failure, not
    // plaintext.
    let blind = HandlerRegistry::new().on::<MemberChanged>(Typed(Seen::default()));
    let error = blind.handle(&delivery).await.unwrap_err();
    assert!(error.to_string().contains("still encrypted"), "{error}");
}

/// A read model keeping members' names in clear: `stream -> (name, visits)`.
type Directory = std::collections::BTreeMap<String, (String, u32)>;

/// Copies names into the directory, and overwrites them when their member is forgotten.
struct DirectoryProjection;

#[async_trait::async_trait]
impl es_core::Projection<Directory> for DirectoryProjection {
    fn name(&self) -> &str {
        "directory"
    }

    fn filter(&self) -> es_core::LogFilter {
        es_core::LogFilter::all().stream_types([Member::TYPE])
    }

    async fn apply(
        &self,
        directory: &mut Directory,
        event: &es_core::RecordedEvent,
    ) -> Result<(), es_core::ProjectionError> {
        let entry = directory
            .entry(event.stream_id.to_string())
            .or_insert_with(|| (String::new(), 0));
        match event.event_type.as_str() {
            "MemberJoined" => {
                let name: Personal<String> = serde_json::from_value(event.data["name"].clone())
                    .map_err(es_core::ProjectionError::apply)?;
                entry.0 = name.value_or("[forgotten]").to_owned();
            }
            "MemberVisited" => entry.1 += 1,
            other => {
                return Err(es_core::ProjectionError::apply(format!(
                    "unexpected {other}"
                )));
            }
        }
        Ok(())
    }

    async fn forget(
        &self,
        directory: &mut Directory,
        subject: &SubjectId,
    ) -> Result<(), es_core::ProjectionError> {
        let stream = format!(
            "{}-{}",
            Member::TYPE,
            subject.as_str().trim_start_matches("member-")
        );
        if let Some(entry) = directory.get_mut(&stream) {
            entry.0 = "[forgotten]".to_owned();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_read_model_sees_names_decrypted_and_forgets_them_in_log_order() {
    use es_core::Projection as _;
    use es_core::memory::MemoryReadModel;
    use std::time::Duration;

    let store = MemoryEventStore::new();
    let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
    let repository = members(&store, &privacy);
    let context = CommandContext::new();
    let mut last = es_core::Position::START;
    for (n, name) in [(1, "Ada"), (2, "Bob")] {
        let stream = StreamId::for_aggregate(Member::TYPE, n).unwrap();
        let subject = SubjectId::new(format!("member-{n}")).unwrap();
        let name = Personal::new(subject, format!("{name} {MARKER}"));
        repository
            .execute(&stream, &MemberCommand::Join(name), &context)
            .await
            .unwrap();
        let visited = repository
            .execute(&stream, &MemberCommand::Visit, &context)
            .await
            .unwrap();
        last = last.max(*visited.positions.last().unwrap());
    }
    let directory = MemoryReadModel::<Directory>::default();
    let projection = privacy.revealing(DirectoryProjection);
    let follow = |model: MemoryReadModel<Directory>| {
        let (store, projection) = (store.clone(), privacy.revealing(DirectoryProjection));
        tokio::spawn(async move { model.run(&store, &projection).await })
    };
    let running = follow(directory.clone());
    assert!(directory.wait_for(last, Duration::from_secs(5)).await);
    let names = directory
        .read(|d| d.values().map(|e| e.0.clone()).collect::<Vec<_>>())
        .await;
    assert_eq!(names, [format!("Ada {MARKER}"), format!("Bob {MARKER}")]);
    assert!(
        projection
            .filter()
            .stream_types
            .contains(&"privacy".to_owned())
    );

    // Ada is forgotten: the record reaches the read model, which overwrites her name only.
    let ada = SubjectId::new("member-1").unwrap();
    let forgetting = privacy
        .forget_recorded(&store, &ada, "operator")
        .await
        .unwrap();
    assert!(!forgetting.already);
    let recorded = store
        .read_stream(
            &es_core::privacy::forgotten_stream(&ada).unwrap(),
            StreamRead::forward(),
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert!(!recorded[0].data.to_string().contains(MARKER));
    let ada_stream = StreamId::for_aggregate(Member::TYPE, 1).unwrap();
    repository
        .execute(&ada_stream, &MemberCommand::Visit, &context)
        .await
        .unwrap();
    let last = store
        .read_log(es_core::Position::START, &es_core::LogFilter::all(), 1000)
        .await
        .unwrap()
        .events
        .last()
        .unwrap()
        .position;
    assert!(directory.wait_for(last, Duration::from_secs(5)).await);
    let rows = directory.read(Clone::clone).await;
    assert_eq!(rows["member-1"], ("[forgotten]".to_owned(), 2));
    assert_eq!(rows["member-2"], (format!("Bob {MARKER}"), 1));
    running.abort();

    // A rebuild from the start reads Ada's name as forgotten and ends in the same model.
    let rebuilt = MemoryReadModel::<Directory>::default();
    let running = follow(rebuilt.clone());
    assert!(rebuilt.wait_for(last, Duration::from_secs(5)).await);
    assert_eq!(rebuilt.read(Clone::clone).await, rows);
    running.abort();
}
