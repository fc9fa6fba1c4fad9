//! The event store port: appends with optimistic concurrency, stream reads, the global log.

use std::future::Future;

use futures::stream::BoxStream;

use crate::error::StoreError;
use crate::event::{NewEvent, RecordedEvent};
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::outbox::OutboxMessage;

/// One atomic append: events for one stream and the outbox messages they cause.
///
/// ```
/// use es_core::{AppendRequest, ExpectedVersion, StreamId};
///
/// let request = AppendRequest::new(StreamId::new("order-1")?, ExpectedVersion::NoStream)
///     .with_stream_type("order");
/// assert!(request.events.is_empty());
/// # Ok::<(), es_core::InvalidStreamId>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    /// The stream appended to.
    pub stream_id: StreamId,
    /// The stream's type (an aggregate's type name); the global log can be filtered by it.
    pub stream_type: String,
    /// The version the writer expects, checked atomically.
    pub expected: ExpectedVersion,
    /// The events, in order; they get consecutive versions.
    pub events: Vec<NewEvent>,
    /// Outbox messages committed in the same transaction.
    pub outbox: Vec<OutboxMessage>,
}

impl AppendRequest {
    /// An empty append to `stream_id` at `expected`.
    pub fn new(stream_id: StreamId, expected: ExpectedVersion) -> Self {
        Self {
            stream_id,
            stream_type: String::new(),
            expected,
            events: Vec::new(),
            outbox: Vec::new(),
        }
    }

    /// Sets the stream's type.
    #[must_use]
    pub fn with_stream_type(mut self, stream_type: impl Into<String>) -> Self {
        self.stream_type = stream_type.into();
        self
    }

    /// Adds events.
    #[must_use]
    pub fn with_events(mut self, events: impl IntoIterator<Item = NewEvent>) -> Self {
        self.events.extend(events);
        self
    }

    /// Adds outbox messages, each stamped with the current span's trace context (see
    /// [`telemetry`](crate::telemetry)).
    #[must_use]
    pub fn with_outbox(mut self, messages: impl IntoIterator<Item = OutboxMessage>) -> Self {
        self.outbox
            .extend(messages.into_iter().map(OutboxMessage::with_current_trace));
        self
    }
}

/// Whether an append wrote new events or recognised a retry of an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendStatus {
    /// The events were written now.
    Appended,
    /// The same event ids were already committed at the same versions (an idempotent retry):
    /// nothing was written, the original positions are returned.
    AlreadyAppended,
}

/// The result of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Written now, or recognised as a retry.
    pub status: AppendStatus,
    /// The version of the last event of this append (the stream's current version for an
    /// empty append).
    pub last_version: Version,
    /// The global-log position of each event, in order.
    pub positions: Vec<Position>,
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Ascending versions.
    Forward,
    /// Descending versions.
    Backward,
}

/// Which events of a stream to read.
///
/// ```
/// use es_core::{Direction, StreamRead, Version};
///
/// let all = StreamRead::forward();
/// let tail = StreamRead::backward().limit(10);
/// let rest = StreamRead::forward().from(Version::new(42));
/// assert_eq!(tail.direction, Direction::Backward);
/// assert_eq!(rest.from, Some(Version::new(42)));
/// # let _ = all;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRead {
    /// The direction.
    pub direction: Direction,
    /// The first version to return (inclusive); `None` means the start (forward) or the end
    /// (backward).
    pub from: Option<Version>,
    /// At most this many events; `None` for all.
    pub limit: Option<usize>,
}

impl StreamRead {
    /// The whole stream, first event first.
    pub const fn forward() -> Self {
        Self {
            direction: Direction::Forward,
            from: None,
            limit: None,
        }
    }

    /// The whole stream, last event first.
    pub const fn backward() -> Self {
        Self {
            direction: Direction::Backward,
            from: None,
            limit: None,
        }
    }

    /// Starts at `version` (inclusive).
    #[must_use]
    pub const fn from(mut self, version: Version) -> Self {
        self.from = Some(version);
        self
    }

    /// Reads at most `limit` events.
    #[must_use]
    pub const fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `version` is inside this range's start bound.
    pub fn admits(&self, version: Version) -> bool {
        match (self.direction, self.from) {
            (_, None) => true,
            (Direction::Forward, Some(from)) => version >= from,
            (Direction::Backward, Some(from)) => version <= from,
        }
    }
}

/// Which events of the global log a reader wants. Filtered-out events are skipped, but the
/// reader's checkpoint still advances past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// Only streams of these types (all when empty).
    pub stream_types: Vec<String>,
    /// Only events of these types (all when empty).
    pub event_types: Vec<String>,
}

impl LogFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds stream types to accept.
    #[must_use]
    pub fn stream_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stream_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Adds event types to accept.
    #[must_use]
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Whether an event of `event_type` in a stream of `stream_type` passes.
    pub fn accepts(&self, stream_type: &str, event_type: &str) -> bool {
        (self.stream_types.is_empty() || self.stream_types.iter().any(|t| t == stream_type))
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// One batch of the global log.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogBatch {
    /// Events strictly after the requested position that pass the filter, in log order.
    pub events: Vec<RecordedEvent>,
    /// Where the next read resumes: at least the last event's position, and past filtered-out
    /// events up to what this read could see.
    pub checkpoint: Position,
    /// Whether this read reached everything currently readable (the caller may wait).
    pub reached_end: bool,
    /// Whether committed events exist that readers cannot see yet because an older
    /// transaction is still running: a short re-poll will find them once it ends.
    pub held_back: bool,
}

/// The event type of the tombstone a soft delete appends. Names starting with `$` are reserved
/// for the store.
pub const TOMBSTONE_EVENT_TYPE: &str = "$StreamDeleted";

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteMode {
    /// Appends a tombstone event ([`TOMBSTONE_EVENT_TYPE`]) and marks the stream deleted: its
    /// events stay readable (and in the global log, so projections learn of the deletion) and
    /// further appends are refused with [`StoreError::StreamDeleted`].
    Soft,
    /// Erases the stream: its events, snapshot and outbox messages are removed and its id is
    /// forgotten (a later append starts a new stream). For erasure requests; read models must
    /// be cleaned by the projections that hold copies (see the docs on deletion).
    Hard,
}

/// What a subscription yields.
// Events are the common case; boxing them would allocate once per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionItem {
    /// The next event.
    Event(RecordedEvent),
    /// Every event up to `position` has been yielded; persist it to resume from here.
    /// `caught_up` is true when the subscription reached the end of the log.
    Checkpoint {
        /// The resumable position.
        position: Position,
        /// Whether the log's end was reached.
        caught_up: bool,
    },
}

/// A store of append-only streams with a global log.
///
/// Implementations: [`MemoryEventStore`](crate::memory::MemoryEventStore) here, `PgEventStore`
/// in `es-postgres`. Every implementation passes [`testing::store_contract`](crate::testing::store_contract).
pub trait EventStore: Send + Sync {
    /// Appends atomically: checks the expected version, writes the events at consecutive
    /// versions and the outbox messages, or nothing.
    ///
    /// Re-appending event ids that were already committed at the same versions of the same
    /// stream returns [`AppendStatus::AlreadyAppended`] with the original positions.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] with the actual version; [`StoreError::StreamDeleted`];
    /// [`StoreError::InvalidExpectedVersion`] for `Exact(0)`; [`StoreError::DuplicateEventId`]
    /// when an id is stored elsewhere; [`StoreError::PayloadTooLarge`];
    /// [`StoreError::Backend`].
    fn append(
        &self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// Deletes a stream after checking `expected` (see [`DeleteMode`]). Returns the tombstone's
    /// position for a soft delete, `None` for a hard one.
    ///
    /// # Errors
    /// [`StoreError::Conflict`]; [`StoreError::StreamDeleted`] for a second soft delete;
    /// [`StoreError::InvalidExpectedVersion`]; [`StoreError::Backend`].
    fn delete_stream(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Reads events of one stream; an unknown stream yields nothing.
    ///
    /// Items are [`StoreError::Backend`] when the backend fails mid-read.
    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: StreamRead,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>>;

    /// The stream's current version ([`Version::ZERO`] when it has no events).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn stream_version(
        &self,
        stream_id: &StreamId,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;

    /// Up to `limit` events of the global log strictly after `after` that pass `filter`.
    ///
    /// Never skips an event that commits later with a smaller position: readers see events
    /// only once nothing before them can still appear.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn read_log(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> impl Future<Output = Result<LogBatch, StoreError>> + Send;

    /// Catch-up then live: every event after `after` that passes `filter`, in log order, with
    /// checkpoints, then new events as they commit; never ends on its own.
    fn subscribe(
        &self,
        after: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<SubscriptionItem, StoreError>>;
}
