//! The envelope: a message survives encoding and decoding, and malformed records fail with
//! typed errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use es_core::OutboxMessage;
use es_kafka::envelope::{self, EnvelopeError};
use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use serde_json::json;
use uuid::Uuid;

fn record(key: Option<&str>, payload: &[u8], headers: OwnedHeaders) -> OwnedMessage {
    OwnedMessage::new(
        Some(payload.to_vec()),
        key.map(|k| k.as_bytes().to_vec()),
        "orders".to_owned(),
        Timestamp::NotAvailable,
        2,
        41,
        Some(headers),
    )
}

fn message() -> OutboxMessage {
    OutboxMessage::new(
        "OrderPlaced",
        "order-7",
        json!({ "orderId": "order-7", "total": "19.99" }),
    )
    .with_schema_version(3)
    .with_source("order", "order-7")
    .with_header(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .with_header("tenant", "acme")
}

#[test]
fn a_message_round_trips_through_the_envelope() {
    let mut original = message();
    original.correlation_id = Some(Uuid::new_v4());
    original.causation_id = Some(Uuid::new_v4());
    let encoded = envelope::encode(&original).unwrap();
    let names: Vec<&str> = encoded.headers.iter().map(|h| h.key).collect();
    for name in [
        envelope::MESSAGE_ID,
        envelope::MESSAGE_TYPE,
        envelope::SCHEMA_VERSION,
        envelope::CORRELATION_ID,
        envelope::CAUSATION_ID,
        envelope::TRACEPARENT,
        envelope::SOURCE_TYPE,
        envelope::SOURCE_ID,
        envelope::OCCURRED_AT,
        "tenant",
    ] {
        assert!(names.contains(&name), "header {name} is present");
    }
    let delivery = envelope::decode_delivery(&record(
        Some(&encoded.key),
        &encoded.payload,
        encoded.headers,
    ))
    .unwrap();
    assert_eq!(
        (delivery.partition, delivery.offset, delivery.attempt),
        (2, 41, 1)
    );
    let mut expected = original;
    expected.topic = Some("orders".to_owned());
    assert_eq!(delivery.message, expected);
}

#[test]
fn optional_headers_may_be_absent() {
    let original = OutboxMessage::new("Pinged", "k", json!(null));
    let encoded = envelope::encode(&original).unwrap();
    assert_eq!(encoded.headers.count(), 4, "id, type, version, time");
    let decoded = envelope::decode(&record(Some("k"), &encoded.payload, encoded.headers)).unwrap();
    assert_eq!(decoded.correlation_id, None);
    assert_eq!(decoded.source_type, None);
    assert!(decoded.headers.is_empty());
}

#[test]
fn malformed_records_fail_with_typed_errors() {
    let encoded = envelope::encode(&message()).unwrap();
    let without = |name: &str| {
        encoded
            .headers
            .iter()
            .filter(|h| h.key != name)
            .fold(OwnedHeaders::new(), |acc, h| {
                acc.insert(Header {
                    key: h.key,
                    value: h.value,
                })
            })
    };
    let replaced = |name: &str, value: &str| {
        without(name).insert(Header {
            key: name,
            value: Some(value),
        })
    };
    let decode = |key: Option<&str>, payload: &[u8], headers| {
        envelope::decode(&record(key, payload, headers)).unwrap_err()
    };

    let error = decode(Some("k"), &encoded.payload, without(envelope::MESSAGE_TYPE));
    assert!(
        matches!(error, EnvelopeError::MissingHeader { name } if name == envelope::MESSAGE_TYPE),
        "{error}"
    );
    let error = decode(
        Some("k"),
        &encoded.payload,
        replaced(envelope::MESSAGE_ID, "not-a-uuid"),
    );
    assert!(
        matches!(&error, EnvelopeError::MalformedHeader { name, .. } if name == envelope::MESSAGE_ID),
        "{error}"
    );
    let error = decode(
        Some("k"),
        &encoded.payload,
        replaced(envelope::SCHEMA_VERSION, "-1"),
    );
    assert!(
        matches!(&error, EnvelopeError::MalformedHeader { name, .. } if name == envelope::SCHEMA_VERSION),
        "{error}"
    );
    let error = decode(
        Some("k"),
        &encoded.payload,
        replaced(envelope::OCCURRED_AT, "yesterday"),
    );
    assert!(
        matches!(&error, EnvelopeError::MalformedHeader { name, .. } if name == envelope::OCCURRED_AT),
        "{error}"
    );
    let error = decode(None, &encoded.payload, encoded.headers.clone());
    assert!(matches!(error, EnvelopeError::MissingKey), "{error}");
    let error = decode(Some("k"), b"{not json", encoded.headers.clone());
    assert!(
        matches!(error, EnvelopeError::MalformedPayload(_)),
        "{error}"
    );
}

#[test]
fn a_message_header_may_not_use_the_reserved_prefix() {
    let error = envelope::encode(&message().with_header("es-message-type", "Forged")).unwrap_err();
    assert!(
        matches!(error, EnvelopeError::ReservedHeader { .. }),
        "{error}"
    );
}
