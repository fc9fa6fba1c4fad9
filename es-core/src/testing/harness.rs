//! Given/When/Then tests for aggregates: fast, pure, no I/O.

use std::fmt::Debug;

use crate::aggregate::Aggregate;
use crate::clock::SystemClock;
use crate::event::{NewEvent, decode_data};
use crate::metadata::CommandContext;
use crate::registry::EventRegistry;

/// Starts a Given/When/Then test of aggregate `A`.
///
/// Every given and produced event is also round-tripped through its stored JSON form, so a
/// serde representation that does not match [`DomainEvent`](crate::DomainEvent) fails here.
///
/// ```
/// # use es_core::{Aggregate, DomainEvent, EventType};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default)]
/// # struct Counter { value: u32 }
/// # #[derive(Debug)]
/// # enum CounterCommand { Increment(u32) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { #[serde(rename = "CounterIncremented")] Incremented { by: u32 } }
/// # impl DomainEvent for CounterEvent {
/// #     const EVENT_TYPES: &'static [EventType] = &[EventType::new("CounterIncremented")];
/// #     fn event_type(&self) -> &'static str { "CounterIncremented" }
/// # }
/// # #[derive(Debug, PartialEq, thiserror::Error)]
/// # #[error("too high")]
/// # struct TooHigh;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = CounterCommand;
/// #     type Event = CounterEvent;
/// #     type Error = TooHigh;
/// #     fn decide(&self, c: &CounterCommand) -> Result<Vec<CounterEvent>, TooHigh> {
/// #         let CounterCommand::Increment(by) = *c;
/// #         if self.value + by > 100 { Err(TooHigh) } else { Ok(vec![CounterEvent::Incremented { by }]) }
/// #     }
/// #     fn evolve(&mut self, e: &CounterEvent) { let CounterEvent::Incremented { by } = e; self.value += by; }
/// # }
/// use es_core::testing::given;
///
/// given::<Counter>([CounterEvent::Incremented { by: 60 }])
///     .when(CounterCommand::Increment(30))
///     .then([CounterEvent::Incremented { by: 30 }]);
///
/// given::<Counter>([CounterEvent::Incremented { by: 60 }])
///     .when(CounterCommand::Increment(50))
///     .then_error(TooHigh);
/// ```
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in events {
        let event = round_trip::<A>(&event);
        state.evolve(&event);
    }
    Given { state }
}

/// An aggregate folded from the given events.
#[derive(Debug)]
pub struct Given<A> {
    state: A,
}

impl<A: Aggregate> Given<A> {
    /// The state before the command, for assertions on `evolve`.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command` on the given state.
    pub fn when(self, command: A::Command) -> When<A> {
        let result = self.state.decide(&command);
        When {
            state: self.state,
            result,
        }
    }
}

/// The outcome of a command, to assert on.
#[derive(Debug)]
pub struct When<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> When<A>
where
    A::Event: PartialEq + Debug,
{
    /// Asserts the command produced exactly `expected`, and returns the state after them.
    ///
    /// # Panics
    /// When the command was rejected or produced other events.
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let events = match self.result {
            Ok(events) => events,
            Err(error) => {
                panic!("expected events {expected:?}, but the command was rejected: {error}")
            }
        };
        assert_eq!(
            events, expected,
            "the command produced other events than expected"
        );
        let mut state = self.state;
        for event in &events {
            state.evolve(&round_trip::<A>(event));
        }
        state
    }

    /// Asserts the command was rejected with `expected`.
    ///
    /// # Panics
    /// When the command succeeded or failed otherwise.
    pub fn then_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        match self.result {
            Ok(events) => {
                panic!("expected the rejection {expected:?}, but the command produced {events:?}")
            }
            Err(error) => assert_eq!(
                error, expected,
                "the command was rejected for another reason"
            ),
        }
    }

    /// Asserts the command was rejected and `check` accepts the error.
    ///
    /// # Panics
    /// When the command succeeded or `check` returns false.
    pub fn then_rejected(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("expected a rejection, but the command produced {events:?}"),
            Err(error) => assert!(check(&error), "unexpected rejection: {error:?}"),
        }
    }
}

fn round_trip<A: Aggregate>(event: &A::Event) -> A::Event {
    let context = CommandContext::new();
    let stored = NewEvent::from_domain(event, context.metadata(&SystemClock))
        .unwrap_or_else(|error| panic!("event cannot be stored: {error}"));
    decode_data::<A::Event>(
        &stored.event_type,
        stored.schema_version,
        stored.data,
        &EventRegistry::new(),
    )
    .unwrap_or_else(|error| {
        panic!(
            "stored event {} cannot be read back: {error}",
            stored.event_type
        )
    })
}
