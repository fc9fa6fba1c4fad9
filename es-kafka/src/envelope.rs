//! The envelope: how an [`OutboxMessage`] travels as a Kafka record (key, JSON payload,
//! headers), and back.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use es_core::{Delivery, OutboxMessage};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use uuid::Uuid;

/// Header: the message id (a UUID); consumers deduplicate on it.
pub const MESSAGE_ID: &str = "es-message-id";
/// Header: the persisted message type name.
pub const MESSAGE_TYPE: &str = "es-message-type";
/// Header: the payload's schema version (a decimal integer, from 1).
pub const SCHEMA_VERSION: &str = "es-schema-version";
/// Header (optional): the flow's correlation id (a UUID).
pub const CORRELATION_ID: &str = "es-correlation-id";
/// Header (optional): the id of what caused the message (a UUID).
pub const CAUSATION_ID: &str = "es-causation-id";
/// Header (optional): the W3C trace context, copied from the message's headers.
pub const TRACEPARENT: &str = "traceparent";
/// Header (optional): the type of the aggregate that produced the message.
pub const SOURCE_TYPE: &str = "es-source-type";
/// Header (optional): the id of the aggregate that produced the message.
pub const SOURCE_ID: &str = "es-source-id";
/// Header: when the message happened (RFC 3339, UTC, microseconds).
pub const OCCURRED_AT: &str = "es-occurred-at";

/// The prefix of the headers the envelope owns; a message's own headers may not use it.
pub const RESERVED_PREFIX: &str = "es-";

/// A message that cannot be encoded, or a record that is not a valid envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A required header is absent.
    #[error("the record has no {name} header")]
    MissingHeader {
        /// The header's name.
        name: &'static str,
    },
    /// A header's value is not what the envelope specifies.
    #[error("the record's {name} header is malformed: {reason}")]
    MalformedHeader {
        /// The header's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The record has no key (the message's partition key).
    #[error("the record has no key")]
    MissingKey,
    /// The key is not UTF-8.
    #[error("the record's key is not UTF-8")]
    MalformedKey,
    /// The payload is absent or not JSON.
    #[error("the record's payload is not JSON: {0}")]
    MalformedPayload(#[source] serde_json::Error),
    /// A message header uses a name the envelope reserves.
    #[error("message {message_id} has a header {name:?}, whose prefix `es-` the envelope reserves")]
    ReservedHeader {
        /// The message.
        message_id: Uuid,
        /// The header's name.
        name: String,
    },
}

/// The parts of a Kafka record that carry a message; the topic is chosen by a
/// [`TopicRouter`](crate::TopicRouter).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EncodedMessage {
    /// The record key: the message's partition key.
    pub key: String,
    /// The record value: the payload as JSON.
    pub payload: Vec<u8>,
    /// The envelope headers, then the message's own headers.
    pub headers: OwnedHeaders,
}

/// Encodes `message` as a record's key, payload and headers.
///
/// ```
/// use es_core::OutboxMessage;
/// use es_kafka::envelope;
/// use rdkafka::message::Headers;
/// use serde_json::json;
///
/// let message = OutboxMessage::new("OrderPlaced", "order-7", json!({ "orderId": "order-7" }));
/// let encoded = envelope::encode(&message)?;
/// assert_eq!(encoded.key, "order-7");
/// let names: Vec<&str> = encoded.headers.iter().map(|h| h.key).collect();
/// assert!(names.contains(&envelope::MESSAGE_TYPE));
/// # Ok::<(), envelope::EnvelopeError>(())
/// ```
///
/// # Errors
/// [`EnvelopeError::ReservedHeader`] when a header of the message starts with `es-`, or
/// [`EnvelopeError::MalformedPayload`] when the payload cannot be serialized.
pub fn encode(message: &OutboxMessage) -> Result<EncodedMessage, EnvelopeError> {
    let payload = serde_json::to_vec(&message.payload).map_err(EnvelopeError::MalformedPayload)?;
    let mut pairs: Vec<(&str, String)> = vec![
        (MESSAGE_ID, message.message_id.to_string()),
        (MESSAGE_TYPE, message.message_type.clone()),
        (SCHEMA_VERSION, message.schema_version.to_string()),
        (
            OCCURRED_AT,
            message
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        ),
    ];
    let optional = [
        (
            CORRELATION_ID,
            message.correlation_id.map(|id| id.to_string()),
        ),
        (CAUSATION_ID, message.causation_id.map(|id| id.to_string())),
        (SOURCE_TYPE, message.source_type.clone()),
        (SOURCE_ID, message.source_id.clone()),
    ];
    pairs.extend(optional.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))));
    for (name, value) in &message.headers {
        if name.starts_with(RESERVED_PREFIX) {
            return Err(EnvelopeError::ReservedHeader {
                message_id: message.message_id,
                name: name.clone(),
            });
        }
        pairs.push((name, value.clone()));
    }
    let headers = pairs
        .iter()
        .fold(OwnedHeaders::new_with_capacity(pairs.len()), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_str()),
            })
        });
    Ok(EncodedMessage {
        key: message.partition_key.clone(),
        payload,
        headers,
    })
}

/// Decodes a consumed record into the message it carries; its `topic` is the record's topic.
///
/// # Errors
/// [`EnvelopeError::MissingHeader`], [`EnvelopeError::MalformedHeader`],
/// [`EnvelopeError::MissingKey`], [`EnvelopeError::MalformedKey`] or
/// [`EnvelopeError::MalformedPayload`] when the record is not a valid envelope.
pub fn decode(record: &impl Message) -> Result<OutboxMessage, EnvelopeError> {
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    if let Some(headers) = record.headers() {
        for header in headers.iter() {
            let value = match header.value {
                Some(bytes) => std::str::from_utf8(bytes)
                    .map_err(|_| malformed(header.key, "not UTF-8"))?
                    .to_owned(),
                None => String::new(),
            };
            fields.insert(header.key.to_owned(), value);
        }
    }
    let key = record.key().ok_or(EnvelopeError::MissingKey)?;
    let key = std::str::from_utf8(key).map_err(|_| EnvelopeError::MalformedKey)?;
    let payload = serde_json::from_slice(record.payload().unwrap_or_default())
        .map_err(EnvelopeError::MalformedPayload)?;
    let message_id = parse_uuid(MESSAGE_ID, &required(&mut fields, MESSAGE_ID)?)?;
    let message_type = required(&mut fields, MESSAGE_TYPE)?;
    let version = required(&mut fields, SCHEMA_VERSION)?;
    let schema_version = version
        .parse::<u32>()
        .map_err(|e| malformed(SCHEMA_VERSION, e))?;
    let occurred_at = required(&mut fields, OCCURRED_AT)?;
    let occurred_at = DateTime::parse_from_rfc3339(&occurred_at)
        .map_err(|e| malformed(OCCURRED_AT, e))?
        .with_timezone(&Utc);
    let correlation_id = optional_uuid(&mut fields, CORRELATION_ID)?;
    let causation_id = optional_uuid(&mut fields, CAUSATION_ID)?;
    let source_type = fields.remove(SOURCE_TYPE);
    let source_id = fields.remove(SOURCE_ID);
    Ok(OutboxMessage {
        message_id,
        message_type,
        schema_version,
        partition_key: key.to_owned(),
        topic: Some(record.topic().to_owned()),
        source_type,
        source_id,
        correlation_id,
        causation_id,
        occurred_at,
        headers: fields,
        payload,
    })
}

/// Decodes a consumed record into a first-attempt [`Delivery`].
///
/// # Errors
/// As [`decode`], or [`EnvelopeError::MalformedHeader`] naming `partition`/`offset` when the
/// record's coordinates are negative.
pub fn decode_delivery(record: &impl Message) -> Result<Delivery, EnvelopeError> {
    let message = decode(record)?;
    let partition = u32::try_from(record.partition()).map_err(|e| malformed("partition", e))?;
    let offset = u64::try_from(record.offset()).map_err(|e| malformed("offset", e))?;
    Ok(Delivery {
        topic: record.topic().to_owned(),
        partition,
        offset,
        attempt: 1,
        message,
    })
}

fn malformed(name: &str, reason: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::MalformedHeader {
        name: name.to_owned(),
        reason: reason.to_string(),
    }
}

fn required(
    fields: &mut BTreeMap<String, String>,
    name: &'static str,
) -> Result<String, EnvelopeError> {
    fields
        .remove(name)
        .ok_or(EnvelopeError::MissingHeader { name })
}

fn parse_uuid(name: &str, value: &str) -> Result<Uuid, EnvelopeError> {
    Uuid::parse_str(value).map_err(|e| malformed(name, e))
}

fn optional_uuid(
    fields: &mut BTreeMap<String, String>,
    name: &str,
) -> Result<Option<Uuid>, EnvelopeError> {
    fields
        .remove(name)
        .map(|value| parse_uuid(name, &value))
        .transpose()
}
