//! What a saga is asked to decide on: a message or a fired deadline, with its context.

use chrono::{DateTime, Utc};
use es_core::{Deadline, OutboxMessage};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::CodecError;
use es_core::MessageType;

/// The `message_type` of the message a fired deadline is delivered as.
pub const DEADLINE_FIRED: &str = "es-saga.DeadlineFired";

/// A deadline that fired, as delivered to its saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiredDeadline {
    /// The deadline's id (also the id of the message it is delivered as).
    pub id: Uuid,
    /// The saga's persisted name.
    pub saga: String,
    /// The instance's correlation key.
    pub key: String,
    /// The step it guards.
    pub step: String,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// The data it was set with.
    pub payload: serde_json::Value,
}

impl FiredDeadline {
    /// The fired form of `deadline`.
    pub fn from_deadline(deadline: &Deadline) -> Self {
        Self {
            id: deadline.id,
            saga: deadline.saga.clone(),
            key: deadline.key.clone(),
            step: deadline.step.clone(),
            due_at: deadline.due_at,
            payload: deadline.payload.clone(),
        }
    }

    /// The message this deadline is delivered as: id = the deadline's id (so the runner's
    /// inbox makes a re-delivered deadline a no-op), type [`DEADLINE_FIRED`], keyed by the
    /// instance's key.
    ///
    /// # Errors
    /// [`CodecError::Encode`] if the deadline cannot be serialized.
    pub fn to_message(&self, now: DateTime<Utc>) -> Result<OutboxMessage, CodecError> {
        let payload = serde_json::to_value(self).map_err(|source| CodecError::Encode {
            message_type: DEADLINE_FIRED.to_owned(),
            source,
        })?;
        let mut message =
            OutboxMessage::new(DEADLINE_FIRED, self.key.clone(), payload).with_id(self.id);
        message.occurred_at = now;
        Ok(message)
    }

    /// The deadline carried by `message`, `None` when it is not a [`DEADLINE_FIRED`] message.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when its payload is malformed.
    pub fn from_message(message: &OutboxMessage) -> Result<Option<Self>, CodecError> {
        if message.message_type != DEADLINE_FIRED {
            return Ok(None);
        }
        serde_json::from_value(message.payload.clone())
            .map(Some)
            .map_err(|source| CodecError::Decode {
                message_type: DEADLINE_FIRED.to_owned(),
                source,
            })
    }
}

/// One message for a saga instance, with what the saga needs to know around it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The instance's correlation key.
    pub key: &'a str,
    /// The message (for a deadline, the [`DEADLINE_FIRED`] message it is delivered as).
    pub message: &'a OutboxMessage,
    /// The deadline, when the message is a fired deadline that the instance still awaits.
    pub deadline: Option<&'a FiredDeadline>,
    /// Whether the instance had completed before this message: it is a late message.
    pub completed: bool,
    /// The runner's clock at the time of the decision.
    pub now: DateTime<Utc>,
}

impl Input<'_> {
    /// The message's type name.
    pub fn message_type(&self) -> &str {
        &self.message.message_type
    }

    /// Whether the message is of type `T`.
    pub fn is<T: MessageType>(&self) -> bool {
        self.message.message_type == T::MESSAGE_TYPE
    }

    /// The payload as `T` when the message is of `T`'s type, `None` otherwise.
    ///
    /// # Errors
    /// [`CodecError::Decode`] when the type matches but the payload does not deserialize.
    pub fn decode<T: MessageType + DeserializeOwned>(&self) -> Result<Option<T>, CodecError> {
        crate::codec::decode(self.message)
    }

    /// The step of the fired deadline, if the message is one.
    pub fn deadline_step(&self) -> Option<&str> {
        self.deadline.map(|deadline| deadline.step.as_str())
    }
}
