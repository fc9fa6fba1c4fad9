//! Domain events, and the stored forms of events before and after an append.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ids::{EventId, Position, StreamId, Version};
use crate::metadata::Metadata;
use crate::registry::EventRegistry;

/// A persisted event type: its stable name and its current schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The name stored with every event of this type. Never derive it from a Rust name:
    /// renaming the Rust type must not orphan stored events.
    pub name: &'static str,
    /// The current schema version (starting at 1); bump it and add an upcaster when the
    /// stored JSON changes shape.
    pub schema_version: u32,
}

impl EventType {
    /// An event type at schema version 1.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            schema_version: 1,
        }
    }

    /// The same type at another schema version.
    #[must_use]
    pub const fn version(self, schema_version: u32) -> Self {
        Self {
            name: self.name,
            schema_version,
        }
    }
}

/// An event of a domain, stored as JSON under a stable type name and schema version.
///
/// Implement it on a serde enum in serde's default (externally tagged) representation: each
/// variant serializes as `{"<name>": data}` (or `"<name>"` for a unit variant). The variant's
/// serialized name is its persisted type name; use `#[serde(rename = "...")]` to keep it stable
/// across Rust renames. [`EVENT_TYPES`](DomainEvent::EVENT_TYPES) lists every name with its
/// schema version and [`event_type`](DomainEvent::event_type) returns the name of a value.
///
/// Derive it: `#[derive(DomainEvent)]` reads each variant's name from its
/// `#[serde(rename = "...")]` (a variant without one is a compile error) and its schema version
/// from `#[event(version = N)]` (1 by default):
///
/// ```
/// use es_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
/// enum CounterEvent {
///     #[serde(rename = "CounterIncremented")]
///     #[event(version = 2)]
///     Incremented { by: u32 },
///     #[serde(rename = "CounterReset")]
///     Reset,
/// }
///
/// assert_eq!(CounterEvent::Reset.event_type(), "CounterReset");
/// assert_eq!(CounterEvent::EVENT_TYPES[0].schema_version, 2);
/// ```
///
/// or implement it by hand:
///
/// ```
/// use es_core::{DomainEvent, EventType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     #[serde(rename = "CounterIncremented")]
///     Incremented { by: u32 },
///     #[serde(rename = "CounterReset")]
///     Reset,
/// }
///
/// impl DomainEvent for CounterEvent {
///     const EVENT_TYPES: &'static [EventType] =
///         &[EventType::new("CounterIncremented"), EventType::new("CounterReset")];
///
///     fn event_type(&self) -> &'static str {
///         match self {
///             Self::Incremented { .. } => "CounterIncremented",
///             Self::Reset => "CounterReset",
///         }
///     }
/// }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Every persisted type this Rust type can hold, each name once.
    const EVENT_TYPES: &'static [EventType];

    /// The persisted type name of this value; one of [`EVENT_TYPES`](Self::EVENT_TYPES).
    fn event_type(&self) -> &'static str;
}

/// An event that cannot be turned into its stored form or back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value's type name is not listed in `EVENT_TYPES`.
    #[error("event type {0:?} is not listed in its DomainEvent::EVENT_TYPES")]
    UnlistedType(String),
    /// The value did not serialize as `{"<event_type>": ...}`: the serde representation and
    /// `event_type()` disagree.
    #[error(
        "event of type {event_type:?} serialized as {found}; expected serde's externally tagged form {{\"{event_type}\": ...}}"
    )]
    Representation {
        /// The name `event_type()` returned.
        event_type: String,
        /// What it serialized as, abridged.
        found: String,
    },
    /// serde_json failed.
    #[error("JSON serialization failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The stored schema version is newer than the code knows.
    #[error(
        "event type {event_type:?} is stored at schema version {stored}, newer than the current {current}"
    )]
    FutureSchema {
        /// The type name.
        event_type: String,
        /// The version found in storage.
        stored: u32,
        /// The version this code knows.
        current: u32,
    },
    /// No upcaster leads from a stored schema version to the next one.
    #[error("no upcaster for event type {event_type:?} from schema version {from}")]
    MissingUpcaster {
        /// The type name.
        event_type: String,
        /// The version without an upcaster.
        from: u32,
    },
    /// An upcaster refused the stored JSON.
    #[error("upcaster for {event_type:?} from schema version {from} failed: {reason}")]
    Upcast {
        /// The type name.
        event_type: String,
        /// The version the upcaster starts from.
        from: u32,
        /// What it said.
        reason: String,
    },
}

/// A stored event that could not be decoded, with where it lives.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode event {event_type:?} at version {version} of stream {stream}: {source}")]
pub struct DecodeError {
    /// The event's stream.
    pub stream: StreamId,
    /// The event's version in that stream.
    pub version: Version,
    /// Its stored type name.
    pub event_type: String,
    /// Why.
    #[source]
    pub source: CodecError,
}

/// An event about to be appended: type, schema version, JSON data and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// The persisted type name.
    pub event_type: String,
    /// The schema version of `data`.
    pub schema_version: u32,
    /// The event's JSON body.
    pub data: Value,
    /// Its metadata, including its id.
    pub metadata: Metadata,
}

impl NewEvent {
    /// The stored form of a domain event.
    ///
    /// # Errors
    /// [`CodecError`] when the event's type is unlisted or its serde form does not match.
    pub fn from_domain<E: DomainEvent>(event: &E, metadata: Metadata) -> Result<Self, CodecError> {
        let name = event.event_type();
        let schema_version = E::EVENT_TYPES
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.schema_version)
            .ok_or_else(|| CodecError::UnlistedType(name.to_owned()))?;
        let data = match serde_json::to_value(event)? {
            Value::Object(mut map) if map.len() == 1 && map.contains_key(name) => {
                map.remove(name).unwrap_or(Value::Null)
            }
            Value::String(unit) if unit == name => Value::Null,
            other => {
                let mut found = other.to_string();
                found.truncate(80);
                return Err(CodecError::Representation {
                    event_type: name.to_owned(),
                    found,
                });
            }
        };
        Ok(Self {
            event_type: name.to_owned(),
            schema_version,
            data,
            metadata,
        })
    }

    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.metadata.event_id
    }
}

/// An event read back from a store.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version within the stream (first = 1).
    pub version: Version,
    /// Its place in the global log.
    pub position: Position,
    /// The persisted type name.
    pub event_type: String,
    /// The schema version `data` was stored at.
    pub schema_version: u32,
    /// The stored JSON body.
    pub data: Value,
    /// Its metadata.
    pub metadata: Metadata,
    /// When the store committed it.
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.metadata.event_id
    }

    /// Decodes into a domain event, upcasting the stored JSON first through `registry`.
    ///
    /// # Errors
    /// [`DecodeError`] naming the stream, version and type when upcasting or deserializing fails.
    pub fn decode<E: DomainEvent>(&self, registry: &EventRegistry) -> Result<E, DecodeError> {
        decode_data::<E>(
            &self.event_type,
            self.schema_version,
            self.data.clone(),
            registry,
        )
        .map_err(|source| DecodeError {
            stream: self.stream_id.clone(),
            version: self.version,
            event_type: self.event_type.clone(),
            source,
        })
    }
}

/// Decodes stored JSON of `event_type` at `schema_version` into `E`, upcasting first.
///
/// # Errors
/// [`CodecError`] when an upcaster is missing or fails, or the JSON does not fit `E`.
pub fn decode_data<E: DomainEvent>(
    event_type: &str,
    schema_version: u32,
    data: Value,
    registry: &EventRegistry,
) -> Result<E, CodecError> {
    let current = E::EVENT_TYPES
        .iter()
        .find(|t| t.name == event_type)
        .map(|t| t.schema_version)
        .ok_or_else(|| CodecError::UnlistedType(event_type.to_owned()))?;
    let data = registry.upcast(event_type, schema_version, current, data)?;
    let tagged = match data {
        Value::Null => Value::String(event_type.to_owned()),
        data => {
            let mut map = serde_json::Map::with_capacity(1);
            map.insert(event_type.to_owned(), data);
            Value::Object(map)
        }
    };
    Ok(serde_json::from_value(tagged)?)
}
