//! Typed integration messages: the persisted name, schema version and key of a Rust type.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::outbox::OutboxMessage;

/// A typed integration message (or command sent as a message): its persisted type name, its
/// payload's schema version and the key that keeps related messages in order.
///
/// Implement it by hand, or derive it (the name is then read from the type's
/// `#[serde(rename = "...")]`):
///
/// ```
/// use es_core::MessageType;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order_id: String }
///
/// impl MessageType for OrderPlaced {
///     const MESSAGE_TYPE: &'static str = "OrderPlaced";
///     const SCHEMA_VERSION: u32 = 2;
///     fn partition_key(&self) -> String { self.order_id.clone() }
/// }
///
/// let message = es_core::encode_message(&OrderPlaced { order_id: "order-7".into() })?;
/// assert_eq!((message.message_type.as_str(), message.schema_version), ("OrderPlaced", 2));
/// assert_eq!(message.partition_key, "order-7");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub trait MessageType {
    /// The persisted type name (`OutboxMessage::message_type`), never derived from Rust names.
    const MESSAGE_TYPE: &'static str;
    /// The payload's current schema version (starting at 1); bump it and register an
    /// upcaster when the JSON changes shape.
    const SCHEMA_VERSION: u32 = 1;

    /// The partition key of a message carrying this value (empty by default: whoever sends it
    /// chooses, as a saga keys its commands by its instance).
    fn partition_key(&self) -> String {
        String::new()
    }
}

/// An outbox message carrying `message`: its type, schema version and partition key, a fresh
/// id and the current time.
///
/// # Errors
/// The serde error when `message` does not serialize.
pub fn encode_message<M: MessageType + Serialize>(
    message: &M,
) -> Result<OutboxMessage, serde_json::Error> {
    let payload = serde_json::to_value(message)?;
    Ok(
        OutboxMessage::new(M::MESSAGE_TYPE, message.partition_key(), payload)
            .with_schema_version(M::SCHEMA_VERSION),
    )
}

/// The payload of `message` as `M` when `message` is of `M`'s type, `None` otherwise (the
/// payload is expected at `M`'s schema version: upcast it first, as a
/// [`HandlerRegistry`](crate::HandlerRegistry) does).
///
/// # Errors
/// The serde error when the type matches but the payload does not deserialize.
pub fn decode_message<M: MessageType + DeserializeOwned>(
    message: &OutboxMessage,
) -> Result<Option<M>, serde_json::Error> {
    if message.message_type != M::MESSAGE_TYPE {
        return Ok(None);
    }
    serde_json::from_value(message.payload.clone()).map(Some)
}
