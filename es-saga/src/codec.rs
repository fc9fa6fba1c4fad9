//! Typed messages to and from the JSON of integration messages.

use es_core::OutboxMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use es_core::MessageType;

/// A typed message or state could not be converted to or from JSON.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A payload did not deserialize as its type.
    #[error("cannot decode {message_type}: {source}")]
    Decode {
        /// The message (or state) type.
        message_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A value did not serialize.
    #[error("cannot encode {message_type}: {source}")]
    Encode {
        /// The message (or state) type.
        message_type: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

/// The payload of `message` as `T` when `message` is of `T`'s type, `None` otherwise.
///
/// # Errors
/// [`CodecError::Decode`] when the type matches but the payload does not deserialize.
pub fn decode<T: MessageType + DeserializeOwned>(
    message: &OutboxMessage,
) -> Result<Option<T>, CodecError> {
    if message.message_type != T::MESSAGE_TYPE {
        return Ok(None);
    }
    serde_json::from_value(message.payload.clone())
        .map(Some)
        .map_err(|source| CodecError::Decode {
            message_type: T::MESSAGE_TYPE.to_owned(),
            source,
        })
}

/// An outbox message carrying `command`, of its type and schema version, with no partition
/// key (the runner keys it by the saga instance's key) and no topic (the runner's command
/// topic applies).
///
/// # Errors
/// [`CodecError::Encode`] when `command` does not serialize.
pub fn encode<T: MessageType + Serialize>(command: &T) -> Result<OutboxMessage, CodecError> {
    let payload = serde_json::to_value(command).map_err(|source| CodecError::Encode {
        message_type: T::MESSAGE_TYPE.to_owned(),
        source,
    })?;
    Ok(OutboxMessage::new(T::MESSAGE_TYPE, String::new(), payload)
        .with_schema_version(T::SCHEMA_VERSION))
}
