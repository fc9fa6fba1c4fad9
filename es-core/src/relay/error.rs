//! Why a relay batch failed.

use crate::checkpoint::CheckpointError;
use crate::error::StoreError;
use crate::ids::Position;
use crate::messaging::{PublishError, PublishFailure};

/// Failure of one relay batch ([`Relay::run_once`](super::Relay::run_once)).
///
/// Only [`RelayError::Deposed`] ends [`Relay::run`](super::Relay::run); the others are retried
/// after a back-off, from the checkpoint, so nothing is lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Reading the outbox failed.
    #[error("relay {name:?} could not read the outbox: {source}")]
    Read {
        /// The relay's name.
        name: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The publisher could not be created.
    #[error("relay {name:?} could not create its publisher: {source}")]
    CreatePublisher {
        /// The relay's name.
        name: String,
        /// The factory's error.
        #[source]
        source: PublishError,
    },
    /// Publishing failed; the checkpoint moved past the acknowledged prefix only.
    #[error("relay {name:?} published part of a batch: {source}")]
    Publish {
        /// The relay's name.
        name: String,
        /// How far the batch got, and why it stopped.
        #[source]
        source: PublishFailure,
    },
    /// The checkpoint could not be read or written (the backend failed).
    #[error("relay {name:?} could not move its checkpoint: {source}")]
    Checkpoint {
        /// The relay's name.
        name: String,
        /// The checkpoint store's error.
        #[source]
        source: CheckpointError,
    },
    /// The checkpoint's compare-and-set failed: another relay moved it, so this one no longer
    /// leads and must stop.
    #[error(
        "relay {name:?} was deposed: its checkpoint was expected at {expected:?} but is at {actual:?}"
    )]
    Deposed {
        /// The relay's name.
        name: String,
        /// Where this relay believed the checkpoint was.
        expected: Option<Position>,
        /// Where it is.
        actual: Option<Position>,
    },
}

impl RelayError {
    /// Whether this error ends the relay (another one took over).
    pub fn is_deposed(&self) -> bool {
        matches!(self, Self::Deposed { .. })
    }

    /// Whether the publisher failed fatally (the relay recreates it before the next batch).
    pub fn is_fatal_publish(&self) -> bool {
        matches!(self, Self::Publish { source, .. } if source.error.is_fatal())
    }
}
