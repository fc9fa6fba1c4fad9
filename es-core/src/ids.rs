//! Identities, versions and positions.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest stream id, in bytes, that any backend accepts.
pub const MAX_STREAM_ID_LEN: usize = 512;

/// The identity of an append-only stream of events.
///
/// Any non-empty UTF-8 string of at most [`MAX_STREAM_ID_LEN`] bytes; backends store it
/// verbatim (quotes, unicode and SQL fragments included).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

/// A stream id that is empty or too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidStreamId {
    /// The id is the empty string.
    #[error("a stream id cannot be empty")]
    Empty,
    /// The id is longer than [`MAX_STREAM_ID_LEN`] bytes.
    #[error("a stream id is at most {MAX_STREAM_ID_LEN} bytes, this one has {0}")]
    TooLong(usize),
    /// The id contains a NUL character, which databases cannot store in text.
    #[error("a stream id cannot contain a NUL character")]
    ContainsNul,
}

impl StreamId {
    /// Makes a stream id from any string.
    ///
    /// # Errors
    /// [`InvalidStreamId`] when `id` is empty, longer than [`MAX_STREAM_ID_LEN`] bytes or
    /// contains a NUL character.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidStreamId> {
        let id = id.into();
        if id.is_empty() {
            Err(InvalidStreamId::Empty)
        } else if id.len() > MAX_STREAM_ID_LEN {
            Err(InvalidStreamId::TooLong(id.len()))
        } else if id.contains('\0') {
            Err(InvalidStreamId::ContainsNul)
        } else {
            Ok(Self(id))
        }
    }

    /// The stream of one aggregate instance: `"{aggregate_type}-{id}"`.
    ///
    /// # Errors
    /// [`InvalidStreamId::TooLong`] when the result is longer than [`MAX_STREAM_ID_LEN`] bytes.
    pub fn for_aggregate(
        aggregate_type: &str,
        id: impl fmt::Display,
    ) -> Result<Self, InvalidStreamId> {
        Self::new(format!("{aggregate_type}-{id}"))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for StreamId {
    type Error = InvalidStreamId;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The unique identity of one event: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A new time-ordered (v7) id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for example one read back from storage).
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The version of an event within its stream: the first event is version 1.
///
/// [`Version::ZERO`] is the version of a stream with no events, never the version of an event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of a stream that has no events.
    pub const ZERO: Self = Self(0);
    /// The version of a stream's first event.
    pub const FIRST: Self = Self(1);

    /// Wraps a version number.
    pub const fn new(version: u64) -> Self {
        Self(version)
    }

    /// The number inside.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version after this one.
    #[must_use]
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// This version plus `count`.
    #[must_use]
    pub const fn add(self, count: u64) -> Self {
        Self(self.0 + count)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A place in the global log, opaque to users.
///
/// Backends order the log by the pair (transaction, sequence): PostgreSQL stores the writer's
/// transaction id and a `bigserial`, and the in-memory store its commit number and a sequence.
/// A position is a checkpoint: reading "from" a position returns what comes strictly after it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    transaction: u64,
    sequence: u64,
}

impl Position {
    /// Before the first event: reading from here reads the whole log.
    pub const START: Self = Self {
        transaction: 0,
        sequence: 0,
    };

    /// A position from its backend-defined parts.
    pub const fn new(transaction: u64, sequence: u64) -> Self {
        Self {
            transaction,
            sequence,
        }
    }

    /// The transaction part (PostgreSQL: the writer's transaction id).
    pub const fn transaction(&self) -> u64 {
        self.transaction
    }

    /// The sequence part (PostgreSQL: the `bigserial` position).
    pub const fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transaction, self.sequence)
    }
}

/// What the writer believes about a stream's current version, checked atomically at append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has exactly this version (at least 1).
    Exact(Version),
}

impl ExpectedVersion {
    /// The expectation that matches a stream last seen at `version`: [`NoStream`] for
    /// [`Version::ZERO`], [`Exact`] otherwise.
    ///
    /// [`NoStream`]: ExpectedVersion::NoStream
    /// [`Exact`]: ExpectedVersion::Exact
    pub const fn from_current(version: Version) -> Self {
        if version.get() == 0 {
            Self::NoStream
        } else {
            Self::Exact(version)
        }
    }

    /// Whether a stream whose current version is `current` satisfies this expectation.
    pub const fn matches(&self, current: Version) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current.get() == 0,
            Self::StreamExists => current.get() > 0,
            Self::Exact(version) => version.get() == current.get(),
        }
    }

    /// Whether this expectation is well-formed: `Exact(0)` is not (use `NoStream`).
    pub const fn is_valid(&self) -> bool {
        !matches!(self, Self::Exact(version) if version.get() == 0)
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("stream exists"),
            Self::Exact(version) => write!(f, "version {version}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_reject_empty_and_oversized() {
        assert_eq!(StreamId::new(""), Err(InvalidStreamId::Empty));
        let long = "x".repeat(MAX_STREAM_ID_LEN + 1);
        assert_eq!(
            StreamId::new(long),
            Err(InvalidStreamId::TooLong(MAX_STREAM_ID_LEN + 1))
        );
        let odd = "it's \"quoted\"; DROP TABLE events; -- ünïcødé";
        assert_eq!(StreamId::new(odd).unwrap().as_str(), odd);
    }

    #[test]
    fn expected_version_semantics() {
        let zero = Version::ZERO;
        let three = Version::new(3);
        assert!(ExpectedVersion::Any.matches(zero) && ExpectedVersion::Any.matches(three));
        assert!(ExpectedVersion::NoStream.matches(zero));
        assert!(!ExpectedVersion::NoStream.matches(three));
        assert!(!ExpectedVersion::StreamExists.matches(zero));
        assert!(ExpectedVersion::StreamExists.matches(three));
        assert!(ExpectedVersion::Exact(three).matches(three));
        assert!(!ExpectedVersion::Exact(three).matches(Version::new(10)));
        assert!(!ExpectedVersion::Exact(zero).is_valid());
        assert_eq!(
            ExpectedVersion::from_current(zero),
            ExpectedVersion::NoStream
        );
    }

    #[test]
    fn positions_order_by_transaction_then_sequence() {
        assert!(Position::new(1, 20) < Position::new(2, 10));
        assert!(Position::new(2, 10) < Position::new(2, 11));
        assert!(Position::START < Position::new(0, 1));
    }

    #[test]
    fn event_ids_are_v7() {
        assert_eq!(EventId::new().as_uuid().get_version_num(), 7);
    }
}
