//! A small aggregate the contract suites drive.

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::event::{DomainEvent, EventType};

/// A tally: the contract suites' aggregate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The sum of every `Added` amount.
    pub total: i64,
    /// How many events were applied.
    pub applied: u64,
}

/// Commands of [`Tally`].
#[derive(Debug, Clone)]
pub enum TallyCommand {
    /// Add an amount (refused when negative).
    Add(i64),
}

/// Events of [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyEvent {
    /// An amount was added.
    #[serde(rename = "TallyAdded")]
    Added {
        /// The amount.
        amount: i64,
    },
}

impl DomainEvent for TallyEvent {
    const EVENT_TYPES: &'static [EventType] = &[EventType::new("TallyAdded")];

    fn event_type(&self) -> &'static str {
        "TallyAdded"
    }
}

/// A refused [`TallyCommand`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("amounts must not be negative, got {0}")]
pub struct NegativeAmount(pub i64);

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = NegativeAmount;

    fn decide(&self, command: &TallyCommand) -> Result<Vec<TallyEvent>, NegativeAmount> {
        match *command {
            TallyCommand::Add(amount) if amount < 0 => Err(NegativeAmount(amount)),
            TallyCommand::Add(amount) => Ok(vec![TallyEvent::Added { amount }]),
        }
    }

    fn evolve(&mut self, event: &TallyEvent) {
        match event {
            TallyEvent::Added { amount } => self.total += amount,
        }
        self.applied += 1;
    }
}
