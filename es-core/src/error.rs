//! Errors of the event store.

use crate::ids::{EventId, ExpectedVersion, StreamId, Version};

/// An append whose expected version did not match the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conflict on stream {stream}: expected {expected}, actual version {actual}")]
pub struct Conflict {
    /// The stream.
    pub stream: StreamId,
    /// What the writer expected.
    pub expected: ExpectedVersion,
    /// The stream's actual current version ([`Version::ZERO`] when it has no events).
    pub actual: Version,
}

/// A boxed error from a backend's driver.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Failure of an event store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved on.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The stream was deleted (tombstoned) and refuses appends.
    #[error("stream {0} is deleted")]
    StreamDeleted(StreamId),
    /// `ExpectedVersion::Exact(0)`: use `NoStream`.
    #[error("expected version 0 for stream {0} is not valid; use ExpectedVersion::NoStream")]
    InvalidExpectedVersion(StreamId),
    /// An event id is already stored, but not as an identical earlier append.
    #[error(
        "event id {event_id} is already stored (in stream {existing_stream}), but the append to {stream} is not a retry of that append"
    )]
    DuplicateEventId {
        /// The stream appended to.
        stream: StreamId,
        /// The clashing id.
        event_id: EventId,
        /// Where that id is stored.
        existing_stream: StreamId,
    },
    /// An event's JSON is larger than the store accepts.
    #[error(
        "event {event_id} for stream {stream} is {size} bytes of JSON, over the limit of {limit}"
    )]
    PayloadTooLarge {
        /// The stream.
        stream: StreamId,
        /// The event.
        event_id: EventId,
        /// Its size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// An append, inside a transaction that has already written, to a stream the transaction
    /// did not lock when it began. Streams are locked before a transaction's first write, so
    /// that every stream appears in the global log in version order; begin the transaction
    /// again naming this stream (a [`UnitOfWork`](crate::UnitOfWork) does so itself).
    #[error(
        "stream {0} was not locked when the transaction began, and the transaction has already written: begin it again naming the stream"
    )]
    StreamNotLocked(StreamId),
    /// The backend failed (connection, I/O, server error).
    #[error("event store backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }

    /// The conflict, when this is one.
    pub fn as_conflict(&self) -> Option<&Conflict> {
        match self {
            Self::Conflict(conflict) => Some(conflict),
            _ => None,
        }
    }
}
