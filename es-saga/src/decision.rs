//! What a saga decided for one message.

use chrono::TimeDelta;
use es_core::OutboxMessage;
use serde::Serialize;
use serde_json::Value;

use crate::codec::{CodecError, encode};
use es_core::MessageType;

/// A deadline a decision sets: `step` is re-examined `after` the decision unless cancelled.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineRequest {
    /// The step it guards (for example `"awaiting-payment"`).
    pub step: String,
    /// How long after the decision it is due.
    pub after: TimeDelta,
    /// Data delivered with it.
    pub payload: Value,
}

/// The outcome of [`Saga::handle`](crate::Saga::handle): the new state and its effects,
/// committed atomically by the runner.
///
/// ```
/// use chrono::TimeDelta;
/// use es_core::OutboxMessage;
/// use es_saga::Decision;
/// use serde_json::json;
///
/// let decision = Decision::new("paying")
///     .send(OutboxMessage::new("RequestPayment", "", json!({ "amount": 42 })))
///     .set_deadline("payment", TimeDelta::seconds(60))
///     .cancel_deadline("stock");
/// assert_eq!(decision.commands.len(), 1);
/// assert!(!decision.completed);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Decision<St> {
    /// The new state.
    pub state: St,
    /// Commands and notifications to send, as outbox messages. An empty partition key is
    /// replaced by the instance's key, a missing topic by the runner's command topic.
    pub commands: Vec<OutboxMessage>,
    /// Deadlines to set, each replacing any deadline of the same step.
    pub set_deadlines: Vec<DeadlineRequest>,
    /// Steps whose deadlines are cancelled (applied before `set_deadlines`).
    pub cancel_deadlines: Vec<String>,
    /// Whether the saga completed; once completed it stays so, and its remaining deadlines
    /// are cancelled.
    pub completed: bool,
}

impl<St> Decision<St> {
    /// A decision that moves to `state` and does nothing else.
    pub fn new(state: St) -> Self {
        Self {
            state,
            commands: Vec::new(),
            set_deadlines: Vec::new(),
            cancel_deadlines: Vec::new(),
            completed: false,
        }
    }

    /// Sends `message`.
    pub fn send(mut self, message: OutboxMessage) -> Self {
        self.commands.push(message);
        self
    }

    /// Sends every message of `messages`, in order.
    pub fn send_all(mut self, messages: impl IntoIterator<Item = OutboxMessage>) -> Self {
        self.commands.extend(messages);
        self
    }

    /// Sends a typed command (see [`encode`](crate::encode)).
    ///
    /// # Errors
    /// [`CodecError::Encode`] when `command` does not serialize.
    pub fn command<C: MessageType + Serialize>(self, command: &C) -> Result<Self, CodecError> {
        Ok(self.send(encode(command)?))
    }

    /// Sets a deadline for `step`, due `after` the decision, with a null payload.
    pub fn set_deadline(self, step: impl Into<String>, after: TimeDelta) -> Self {
        self.set_deadline_with(step, after, Value::Null)
    }

    /// Sets a deadline for `step`, due `after` the decision, delivered with `payload`.
    pub fn set_deadline_with(
        mut self,
        step: impl Into<String>,
        after: TimeDelta,
        payload: Value,
    ) -> Self {
        self.set_deadlines.push(DeadlineRequest {
            step: step.into(),
            after,
            payload,
        });
        self
    }

    /// Cancels the deadline of `step`: the step got its answer.
    pub fn cancel_deadline(mut self, step: impl Into<String>) -> Self {
        self.cancel_deadlines.push(step.into());
        self
    }

    /// Marks the saga completed.
    pub fn complete(mut self) -> Self {
        self.completed = true;
        self
    }
}
