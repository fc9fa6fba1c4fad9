//! Aggregates: pure decisions over a state folded from events.

use crate::event::DomainEvent;

/// A consistency boundary whose state is folded from its events.
///
/// `decide` and `evolve` are pure and synchronous: I/O lives in the
/// [`Repository`](crate::Repository) that loads, decides and saves.
///
/// ```
/// use es_core::{Aggregate, DomainEvent, EventType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default)]
/// struct Counter { value: u32 }
///
/// #[derive(Debug)]
/// enum CounterCommand { Increment(u32) }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent {
///     #[serde(rename = "CounterIncremented")]
///     Incremented { by: u32 },
/// }
///
/// impl DomainEvent for CounterEvent {
///     const EVENT_TYPES: &'static [EventType] = &[EventType::new("CounterIncremented")];
///     fn event_type(&self) -> &'static str { "CounterIncremented" }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("a counter cannot pass 100")]
/// struct TooHigh;
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = CounterCommand;
///     type Event = CounterEvent;
///     type Error = TooHigh;
///
///     fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, TooHigh> {
///         match *command {
///             CounterCommand::Increment(by) if self.value + by > 100 => Err(TooHigh),
///             CounterCommand::Increment(by) => Ok(vec![CounterEvent::Incremented { by }]),
///         }
///     }
///
///     fn evolve(&mut self, event: &CounterEvent) {
///         match event {
///             CounterEvent::Incremented { by } => self.value += by,
///         }
///     }
/// }
///
/// let mut counter = Counter::default();
/// for event in counter.decide(&CounterCommand::Increment(5)).unwrap() {
///     counter.evolve(&event);
/// }
/// assert_eq!(counter.value, 5);
/// assert!(counter.decide(&CounterCommand::Increment(96)).is_err());
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The persisted aggregate type: the stream type of its streams and the prefix of
    /// [`StreamId::for_aggregate`](crate::StreamId::for_aggregate).
    const TYPE: &'static str;

    /// The version of this aggregate's snapshot format; snapshots taken under another version
    /// are ignored. Bump it whenever the state's serialized shape changes.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What the aggregate can be asked to do.
    type Command: Send + Sync;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses a command (a domain rejection, never an infrastructure failure).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides the events a command produces, or rejects it. Must not mutate or do I/O.
    ///
    /// # Errors
    /// The domain's reason for refusing the command.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state.
    fn evolve(&mut self, event: &Self::Event);
}
