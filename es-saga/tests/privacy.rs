//! A saga with personal data in its state, its commands and its deadlines: all of it is
//! encrypted at rest; the saga sees it decrypted; once the subject is forgotten the saga goes
//! on with the placeholder and the business fields intact.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::Arc;

use chrono::TimeDelta;
use es_core::memory::MemorySagaStore;
use es_core::privacy::{MemoryKeyStore, Personal, Privacy, SubjectId};
use es_core::{DeadlineStore, OutboxMessage, SagaStore};
use es_saga::{Decision, Handled, Input, MessageType, Route, Saga, SagaRunner};
use serde::{Deserialize, Serialize};

const MARKER: &str = "Ada Lovelace, 12 Analytical Row";

/// A parcel was booked for a recipient: starts the saga.
#[derive(Debug, Clone, Serialize, Deserialize, MessageType)]
#[serde(rename = "ParcelBooked", rename_all = "camelCase")]
struct ParcelBooked {
    parcel: String,
    weight: u32,
    recipient: Personal<String>,
}

/// The parcel arrived: completes it.
#[derive(Debug, Clone, Serialize, Deserialize, MessageType)]
#[serde(rename = "ParcelDelivered", rename_all = "camelCase")]
struct ParcelDelivered {
    parcel: String,
}

/// The command the saga sends, carrying the recipient on.
#[derive(Debug, Clone, Serialize, Deserialize, MessageType)]
#[serde(rename = "Dispatch", rename_all = "camelCase")]
struct Dispatch {
    parcel: String,
    weight: u32,
    recipient: Personal<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Parcel {
    weight: u32,
    recipient: Option<Personal<String>>,
    /// What the saga saw of the recipient at each decision: "known" or "forgotten".
    seen: Vec<String>,
}

struct Parcels;

impl Saga for Parcels {
    const NAME: &'static str = "parcels";
    type State = Parcel;
    type Error = Infallible;

    fn route(&self, message: &OutboxMessage) -> Route {
        let parcel = message.payload["parcel"].as_str().unwrap_or_default();
        match message.message_type.as_str() {
            ParcelBooked::MESSAGE_TYPE => Route::Start(parcel.to_owned()),
            ParcelDelivered::MESSAGE_TYPE => Route::Continue(parcel.to_owned()),
            es_saga::DEADLINE_FIRED => Route::Continue(parcel.to_owned()),
            _ => Route::Ignore,
        }
    }

    fn handle(&self, mut state: Parcel, input: &Input<'_>) -> Result<Decision<Parcel>, Infallible> {
        if let Some(booked) = input.decode::<ParcelBooked>().unwrap() {
            state.weight = booked.weight;
            state.recipient = Some(booked.recipient.clone());
            state.seen.push(seen(&booked.recipient));
            let dispatch = Dispatch {
                parcel: booked.parcel,
                weight: booked.weight,
                recipient: booked.recipient.clone(),
            };
            let reminder = serde_json::json!({ "recipient": booked.recipient });
            return Ok(Decision::new(state)
                .command(&dispatch)
                .unwrap()
                .set_deadline_with("arrival", TimeDelta::hours(1), reminder));
        }
        let recipient = state.recipient.clone().unwrap();
        state.seen.push(seen(&recipient));
        let delivered = input.is::<ParcelDelivered>();
        let decision = Decision::new(state).cancel_deadline("arrival");
        Ok(if delivered {
            decision.complete()
        } else {
            decision
        })
    }
}

fn seen(recipient: &Personal<String>) -> String {
    match recipient.value() {
        Some(value) if value == MARKER => "known".to_owned(),
        Some(other) => panic!("the recipient changed: {other}"),
        None => "forgotten".to_owned(),
    }
}

fn booked(parcel: &str, subject: &SubjectId) -> OutboxMessage {
    let booked = ParcelBooked {
        parcel: parcel.to_owned(),
        weight: 3,
        recipient: Personal::new(subject.clone(), MARKER.to_owned()),
    };
    es_saga::encode(&booked).unwrap()
}

struct World {
    privacy: Privacy,
    runner: SagaRunner<Parcels, MemorySagaStore>,
    ada: SubjectId,
}

fn world() -> World {
    let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
    World {
        runner: SagaRunner::new(Parcels, MemorySagaStore::new()).with_privacy(privacy.clone()),
        privacy,
        ada: SubjectId::new("customer-ada").unwrap(),
    }
}

/// Every JSON the store holds for instance `key`: each version's state, the outbox's
/// payloads and the deadlines' payloads.
async fn stored_text(runner: &SagaRunner<Parcels, MemorySagaStore>, key: &str) -> String {
    let store = runner.store();
    let mut text = String::new();
    for instance in store.history(Parcels::NAME, key).await.unwrap() {
        text.push_str(&instance.state.to_string());
    }
    for message in store.outbox().messages() {
        text.push_str(&message.message.payload.to_string());
    }
    for deadline in deadlines(store, key).await {
        text.push_str(&deadline.payload.to_string());
    }
    text
}

/// The deadlines of instance `key` (claimed for a second).
async fn deadlines(store: &MemorySagaStore, key: &str) -> Vec<es_core::Deadline> {
    let far = chrono::Utc::now() + TimeDelta::days(1);
    store
        .claim_due(far, std::time::Duration::from_secs(1), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.saga == Parcels::NAME && d.key == key)
        .collect()
}

#[tokio::test]
async fn state_commands_and_deadlines_hold_personal_data_only_encrypted() {
    let World { runner, ada, .. } = world();
    let handled = runner.handle(&booked("p-1", &ada)).await.unwrap();
    let Handled::Committed { commands, .. } = handled else {
        panic!("{handled:?}");
    };
    // The runner hands back what it decided, in clear; the store holds it sealed.
    assert!(commands[0].payload.to_string().contains(MARKER));
    let stored = stored_text(&runner, "p-1").await;
    assert!(!stored.contains(MARKER), "{stored}");
    assert!(stored.contains("cipher"), "{stored}");

    // Loaded back, the saga and the typed view see the value.
    let view = runner.instance("p-1").await.unwrap().unwrap();
    assert_eq!(
        view.state.recipient.as_ref().unwrap().value().unwrap(),
        MARKER
    );
    let delivered = es_saga::encode(&ParcelDelivered {
        parcel: "p-1".to_owned(),
    })
    .unwrap();
    runner.handle(&delivered).await.unwrap();
    let history = runner.history("p-1").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].state.seen, vec!["known", "known"]);
    assert!(history[1].completed);
}

#[tokio::test]
async fn a_forgotten_subject_reads_as_forgotten_and_the_saga_goes_on() {
    let World {
        runner,
        privacy,
        ada,
    } = world();
    runner.handle(&booked("p-2", &ada)).await.unwrap();
    let deadline = deadlines(runner.store(), "p-2").await.pop().unwrap();
    // A message sealed (by its sender's outbox) before forgetting, still in flight.
    let mut late = booked("p-3", &ada);
    privacy.protect(&mut late.payload).await.unwrap();
    assert!(!late.payload.to_string().contains(MARKER));
    privacy.forget(&ada, "test").await.unwrap();

    // The deadline fires: the saga decides on the forgotten recipient, weight intact.
    let fired = runner.fire(&deadline).await.unwrap();
    assert!(matches!(fired, Handled::Committed { .. }), "{fired:?}");
    let view = runner.instance("p-2").await.unwrap().unwrap();
    assert_eq!(view.state.seen, vec!["known", "forgotten"]);
    assert_eq!(view.state.weight, 3);
    assert!(view.state.recipient.unwrap().is_forgotten());
    // The earlier version, written before forgetting, now reads forgotten as well.
    let history = runner.history("p-2").await.unwrap();
    assert!(history[0].state.recipient.as_ref().unwrap().is_forgotten());
    assert_eq!(history[0].state.seen, vec!["known"]);

    // The message in flight arrives forgotten: a new instance with no value at all.
    runner.handle(&late).await.unwrap();
    let view = runner.instance("p-3").await.unwrap().unwrap();
    assert!(view.state.recipient.unwrap().is_forgotten());
    assert_eq!(view.state.seen, vec!["forgotten"]);
    assert!(!stored_text(&runner, "p-3").await.contains(MARKER));
}
