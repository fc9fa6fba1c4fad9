//! Why the runner did not handle a message.

use es_core::privacy::PrivacyError;
use es_core::{BoxError, HandlerError, SagaStoreError};
use uuid::Uuid;

use crate::codec::CodecError;

/// Failure of [`SagaRunner`](crate::SagaRunner) handling a message; nothing was committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaError {
    /// The message continues an instance that does not exist yet (it came before its start
    /// message): retry it later.
    #[error("saga {saga:?} instance {key:?} is not started yet (message {message_id})")]
    NotStarted {
        /// The saga.
        saga: String,
        /// The instance's key.
        key: String,
        /// The early message.
        message_id: Uuid,
    },
    /// Concurrent messages kept moving the instance on; every retry conflicted.
    #[error("saga {saga:?} instance {key:?} conflicted {attempts} times")]
    Contended {
        /// The saga.
        saga: String,
        /// The instance's key.
        key: String,
        /// How many commits were tried.
        attempts: u32,
    },
    /// The stored state has a version the saga cannot upcast.
    #[error("saga {saga:?} cannot read state version {found} (expects {expected})")]
    StateVersion {
        /// The saga.
        saga: String,
        /// The stored state's version.
        found: u32,
        /// The saga's `STATE_VERSION`.
        expected: u32,
    },
    /// A state, message or command did not convert to or from JSON.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The saga refused the message ([`Saga::handle`](crate::Saga::handle) failed).
    #[error("saga {saga:?} refused message {message_id}: {source}")]
    Rejected {
        /// The saga.
        saga: String,
        /// The refused message.
        message_id: Uuid,
        /// The saga's error.
        #[source]
        source: BoxError,
    },
    /// The saga store failed.
    #[error(transparent)]
    Store(#[from] SagaStoreError),
    /// Personal data in the state, a message or a command could not be encrypted or
    /// decrypted (see [`SagaRunner::with_privacy`](crate::SagaRunner::with_privacy)).
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl SagaError {
    /// Whether handling the message again may succeed (it came early, it lost races, or the
    /// store or the key store failed); otherwise it never will (dead-letter it).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::NotStarted { .. }
                | Self::Contended { .. }
                | Self::Store(_)
                | Self::Privacy(PrivacyError::Keys(_))
        )
    }
}

impl From<SagaError> for HandlerError {
    fn from(error: SagaError) -> Self {
        if error.is_transient() {
            Self::transient(&error)
        } else {
            Self::permanent(&error)
        }
    }
}
