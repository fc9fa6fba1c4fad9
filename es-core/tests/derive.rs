//! `#[derive(DomainEvent)]` and `#[derive(MessageType)]`, through the functions that store and
//! send what they describe. What must not compile is tested by the doctests of es-macros.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::{
    CommandContext, DomainEvent, EventRegistry, EventType, MessageType, NewEvent, SystemClock,
    decode_data, decode_message, encode_message,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ParcelEvent {
    /// A struct variant, at a later schema version.
    #[serde(rename = "ParcelRegistered", rename_all = "camelCase")]
    #[event(version = 3)]
    Registered {
        parcel_id: String,
        weight_grams: u32,
    },
    /// A tuple variant.
    #[serde(rename = "ParcelWeighed")]
    Weighed(u32),
    /// A unit variant, whose Rust name differs from its persisted one.
    #[serde(rename = "ParcelLost")]
    Misplaced,
}

fn round_trip(event: &ParcelEvent) -> NewEvent {
    let stored =
        NewEvent::from_domain(event, CommandContext::new().metadata(&SystemClock)).unwrap();
    let decoded: ParcelEvent = decode_data(
        &stored.event_type,
        stored.schema_version,
        stored.data.clone(),
        &EventRegistry::new(),
    )
    .unwrap();
    assert_eq!(&decoded, event);
    stored
}

#[test]
fn event_types_list_every_variant_with_its_schema_version() {
    assert_eq!(
        ParcelEvent::EVENT_TYPES,
        [
            EventType::new("ParcelRegistered").version(3),
            EventType::new("ParcelWeighed"),
            EventType::new("ParcelLost"),
        ],
    );
}

#[test]
fn a_struct_variant_is_stored_under_its_rename_and_version() {
    let event = ParcelEvent::Registered {
        parcel_id: "p-1".into(),
        weight_grams: 1200,
    };
    assert_eq!(event.event_type(), "ParcelRegistered");
    let stored = round_trip(&event);
    assert_eq!(stored.event_type, "ParcelRegistered");
    assert_eq!(stored.schema_version, 3);
    assert_eq!(
        stored.data,
        json!({ "parcelId": "p-1", "weightGrams": 1200 })
    );
}

#[test]
fn a_tuple_variant_is_stored_under_its_rename() {
    let event = ParcelEvent::Weighed(800);
    assert_eq!(event.event_type(), "ParcelWeighed");
    let stored = round_trip(&event);
    assert_eq!(
        (stored.event_type.as_str(), stored.schema_version),
        ("ParcelWeighed", 1)
    );
    assert_eq!(stored.data, json!(800));
}

#[test]
fn a_unit_variant_is_stored_under_its_rename_without_data() {
    let event = ParcelEvent::Misplaced;
    assert_eq!(event.event_type(), "ParcelLost");
    let stored = round_trip(&event);
    assert_eq!(
        (stored.event_type.as_str(), stored.schema_version),
        ("ParcelLost", 1)
    );
    assert_eq!(stored.data, serde_json::Value::Null);
}

#[test]
fn a_derived_event_type_registers() {
    let mut registry = EventRegistry::new();
    registry.register::<ParcelEvent>().unwrap();
    assert!(registry.contains("ParcelLost"));
    assert!(!registry.contains("Misplaced"));
}

/// Names passed through `macro_rules!` reach the derive as literals wrapped in an invisible
/// group, as in the test support of es-saga.
macro_rules! renamed_event {
    ($name:ident = $persisted:literal) => {
        #[derive(Debug, PartialEq, Serialize, Deserialize, DomainEvent)]
        enum $name {
            #[serde(rename = $persisted)]
            Happened,
        }
    };
}

renamed_event!(MacroEvent = "SomethingHappened");

#[test]
fn a_name_given_through_macro_rules_is_read() {
    assert_eq!(
        MacroEvent::EVENT_TYPES,
        [EventType::new("SomethingHappened")]
    );
    assert_eq!(MacroEvent::Happened.event_type(), "SomethingHappened");
}

#[derive(Debug, PartialEq, Serialize, Deserialize, MessageType)]
#[serde(rename = "ParcelShipped", rename_all = "camelCase")]
#[message(version = 2, key = "parcel_id")]
struct ParcelShipped {
    parcel_id: u64,
    carrier: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, MessageType)]
#[serde(rename = "ShipParcel")]
struct ShipParcel {
    r#type: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, MessageType)]
#[serde(rename = "ParcelRouted")]
#[message(key = "type")]
struct ParcelRouted {
    r#type: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, MessageType)]
#[serde(rename = "CarrierStatus")]
#[message(version = 4)]
enum CarrierStatus {
    Up,
    Down { since: String },
}

#[test]
fn a_message_carries_its_rename_version_and_key() {
    let shipped = ParcelShipped {
        parcel_id: 42,
        carrier: "post".into(),
    };
    let message = encode_message(&shipped).unwrap();
    assert_eq!(message.message_type, "ParcelShipped");
    assert_eq!(message.schema_version, 2);
    assert_eq!(message.partition_key, "42");
    assert_eq!(
        message.payload,
        json!({ "parcelId": 42, "carrier": "post" })
    );
    assert_eq!(
        decode_message::<ParcelShipped>(&message).unwrap(),
        Some(shipped)
    );
    assert_eq!(decode_message::<ShipParcel>(&message).unwrap(), None);
}

#[test]
fn a_message_without_options_is_at_version_1_with_an_empty_key() {
    let message = encode_message(&ShipParcel {
        r#type: "express".into(),
    })
    .unwrap();
    assert_eq!(
        (message.message_type.as_str(), message.schema_version),
        ("ShipParcel", 1)
    );
    assert_eq!(message.partition_key, "");
}

#[test]
fn a_key_names_a_raw_identifier_without_its_prefix() {
    let routed = ParcelRouted {
        r#type: "express".into(),
    };
    assert_eq!(routed.partition_key(), "express");
}

#[test]
fn an_enum_message_carries_its_rename_and_version() {
    assert_eq!(CarrierStatus::MESSAGE_TYPE, "CarrierStatus");
    assert_eq!(CarrierStatus::SCHEMA_VERSION, 4);
    let message = encode_message(&CarrierStatus::Down {
        since: "noon".into(),
    })
    .unwrap();
    assert_eq!(message.partition_key, "");
    assert_eq!(message.payload, json!({ "Down": { "since": "noon" } }));
    assert_eq!(
        decode_message::<CarrierStatus>(&message).unwrap(),
        Some(CarrierStatus::Down {
            since: "noon".into()
        })
    );
}
