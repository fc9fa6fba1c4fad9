//! The persisted shape of a saga instance's state, and its typed view.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use es_core::SagaInstance;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::codec::CodecError;
use crate::error::SagaError;
use crate::saga::Saga;

/// What `SagaInstance::state` holds: the saga's state with its version, and the deadlines the
/// instance awaits.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Stored {
    pub(crate) state_version: u32,
    pub(crate) state: Value,
    /// The pending deadline id of each awaited step.
    #[serde(default)]
    pub(crate) awaiting: BTreeMap<String, Uuid>,
    /// Where each awaited step's deadline was set: the correlation id and trace context of
    /// the decision, handed on to what the deadline makes the saga do.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) origins: BTreeMap<String, Origin>,
}

/// The correlation id and W3C trace context of the decision that set a deadline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) headers: BTreeMap<String, String>,
}

/// A stored instance, decoded.
pub(crate) struct Decoded<St> {
    pub(crate) state: St,
    pub(crate) awaiting: BTreeMap<String, Uuid>,
    pub(crate) origins: BTreeMap<String, Origin>,
}

/// One committed version of a saga instance, with its state typed.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaView<St> {
    /// The instance's correlation key.
    pub key: String,
    /// The version: 1 after the first commit.
    pub version: u64,
    /// The saga's state.
    pub state: St,
    /// Whether the saga completed.
    pub completed: bool,
    /// The steps whose deadlines are pending, with each deadline's id.
    pub awaiting: BTreeMap<String, Uuid>,
    /// When this version was committed.
    pub updated_at: DateTime<Utc>,
}

/// The typed state of `instance`, upcast if needed.
pub(crate) fn decode_stored<S: Saga>(
    saga: &S,
    instance: &SagaInstance,
) -> Result<Decoded<S::State>, SagaError> {
    let stored: Stored =
        serde_json::from_value(instance.state.clone()).map_err(|source| CodecError::Decode {
            message_type: format!("{} state", S::NAME),
            source,
        })?;
    let state = if stored.state_version == S::STATE_VERSION {
        stored.state
    } else {
        saga.upcast_state(stored.state_version, stored.state)
            .ok_or_else(|| SagaError::StateVersion {
                saga: S::NAME.to_owned(),
                found: stored.state_version,
                expected: S::STATE_VERSION,
            })?
    };
    let state = serde_json::from_value(state).map_err(|source| CodecError::Decode {
        message_type: format!("{} state", S::NAME),
        source,
    })?;
    Ok(Decoded {
        state,
        awaiting: stored.awaiting,
        origins: stored.origins,
    })
}

/// The JSON stored for `state` awaiting `awaiting`.
pub(crate) fn encode_stored<S: Saga>(
    state: &S::State,
    awaiting: BTreeMap<String, Uuid>,
    origins: BTreeMap<String, Origin>,
) -> Result<Value, SagaError> {
    let encode_error = |source| CodecError::Encode {
        message_type: format!("{} state", S::NAME),
        source,
    };
    let stored = Stored {
        state_version: S::STATE_VERSION,
        state: serde_json::to_value(state).map_err(encode_error)?,
        awaiting,
        origins,
    };
    Ok(serde_json::to_value(stored).map_err(encode_error)?)
}

/// The typed view of `instance`.
pub(crate) fn view<S: Saga>(
    saga: &S,
    instance: &SagaInstance,
) -> Result<SagaView<S::State>, SagaError> {
    let decoded = decode_stored(saga, instance)?;
    Ok(SagaView {
        key: instance.key.clone(),
        version: instance.version,
        state: decoded.state,
        completed: instance.completed,
        awaiting: decoded.awaiting,
        updated_at: instance.updated_at,
    })
}
