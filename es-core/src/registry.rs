//! Registration of persisted event types and their upcasters.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::event::{CodecError, DomainEvent};

type UpcastFn = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// A registration that would make stored events ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two Rust types (or one type twice) claim the same persisted name.
    #[error("persisted event type {name:?} is claimed by both {first} and {second}")]
    DuplicateEventType {
        /// The contested name.
        name: &'static str,
        /// The Rust type registered first.
        first: &'static str,
        /// The Rust type registered second.
        second: &'static str,
    },
    /// Two upcasters start from the same (type, schema version).
    #[error("an upcaster for {event_type:?} from schema version {from} is already registered")]
    DuplicateUpcaster {
        /// The type name.
        event_type: String,
        /// The version.
        from: u32,
    },
}

/// Known event types and the upcasters that bring old stored JSON to the current schema.
///
/// ```
/// use es_core::{DomainEvent, EventRegistry, EventType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum Event {
///     #[serde(rename = "Renamed")]
///     Renamed { full_name: String },
/// }
/// impl DomainEvent for Event {
///     const EVENT_TYPES: &'static [EventType] = &[EventType::new("Renamed").version(2)];
///     fn event_type(&self) -> &'static str { "Renamed" }
/// }
///
/// let mut registry = EventRegistry::new();
/// registry.register::<Event>()?;
/// // Version 1 stored `name`; version 2 calls it `full_name`.
/// registry.upcaster("Renamed", 1, |mut data| {
///     let name = data.get_mut("name").map(serde_json::Value::take).ok_or("no name")?;
///     Ok(serde_json::json!({ "full_name": name }))
/// })?;
/// // Registering a second type with the same persisted name is refused.
/// assert!(registry.register::<Event>().is_err());
/// # Ok::<(), es_core::RegistryError>(())
/// ```
#[derive(Clone, Default)]
pub struct EventRegistry {
    types: HashMap<&'static str, &'static str>,
    upcasters: HashMap<(String, u32), UpcastFn>,
}

impl fmt::Debug for EventRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRegistry")
            .field("types", &self.types)
            .field("upcasters", &self.upcasters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every persisted name of `E`.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateEventType`] when a name is already taken (nothing is
    /// registered then).
    pub fn register<E: DomainEvent>(&mut self) -> Result<&mut Self, RegistryError> {
        let rust_name = std::any::type_name::<E>();
        let mut seen = HashMap::new();
        for event_type in E::EVENT_TYPES {
            let first = self
                .types
                .get(event_type.name)
                .or_else(|| seen.get(event_type.name));
            if let Some(first) = first {
                return Err(RegistryError::DuplicateEventType {
                    name: event_type.name,
                    first,
                    second: rust_name,
                });
            }
            seen.insert(event_type.name, rust_name);
        }
        self.types.extend(seen);
        Ok(self)
    }

    /// Registers a transform of stored JSON of `event_type` from schema version `from` to
    /// `from + 1`.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateUpcaster`] when one is already registered for that step.
    pub fn upcaster<F>(
        &mut self,
        event_type: impl Into<String>,
        from: u32,
        transform: F,
    ) -> Result<&mut Self, RegistryError>
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        let key = (event_type.into(), from);
        if self.upcasters.contains_key(&key) {
            return Err(RegistryError::DuplicateUpcaster {
                event_type: key.0,
                from,
            });
        }
        self.upcasters.insert(key, Arc::new(transform));
        Ok(self)
    }

    /// Whether `name` is a registered persisted type.
    pub fn contains(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Brings `data`, stored at schema version `stored`, to version `current`.
    ///
    /// # Errors
    /// [`CodecError::FutureSchema`], [`CodecError::MissingUpcaster`] or
    /// [`CodecError::Upcast`].
    pub fn upcast(
        &self,
        event_type: &str,
        stored: u32,
        current: u32,
        mut data: Value,
    ) -> Result<Value, CodecError> {
        if stored > current {
            return Err(CodecError::FutureSchema {
                event_type: event_type.to_owned(),
                stored,
                current,
            });
        }
        for from in stored..current {
            let upcast = self
                .upcasters
                .get(&(event_type.to_owned(), from))
                .ok_or_else(|| CodecError::MissingUpcaster {
                    event_type: event_type.to_owned(),
                    from,
                })?;
            data = upcast(data).map_err(|reason| CodecError::Upcast {
                event_type: event_type.to_owned(),
                from,
                reason,
            })?;
        }
        Ok(data)
    }
}
