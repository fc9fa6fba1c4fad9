//! The [`Saga`] trait: which messages a saga handles, its state and its pure decisions.

use es_core::OutboxMessage;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::decision::Decision;
use crate::input::Input;

/// How a saga treats a message: the correlation key it belongs to, and whether it may start
/// an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The message starts the instance `key` (or continues it, if it already exists).
    Start(String),
    /// The message continues the instance `key`; if that instance does not exist yet, the
    /// message came before its start message and is retried later.
    Continue(String),
    /// The message is not for this saga.
    Ignore,
}

/// A process manager: correlates messages by a key, keeps state per key, and decides what to
/// do for each message, purely and synchronously.
///
/// The runner ([`SagaRunner`](crate::SagaRunner)) does the I/O: it loads the instance,
/// calls [`handle`](Saga::handle) and commits the decision with the inbox record of the
/// message in one [`SagaStore::commit`](es_core::SagaStore::commit).
pub trait Saga: Send + Sync + 'static {
    /// The persisted saga name (for example `"order-fulfilment"`); never rename it.
    const NAME: &'static str;

    /// The version of the state's JSON shape; a stored state of another version is passed to
    /// [`upcast_state`](Saga::upcast_state) before it is deserialized.
    const STATE_VERSION: u32 = 1;

    /// The state of one instance; `Default` is the state before the start message.
    type State: Serialize + DeserializeOwned + Default + Send + Sync;

    /// Why [`handle`](Saga::handle) refused a message (a malformed payload, for example).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Which instance `message` belongs to, and whether it starts one.
    fn route(&self, message: &OutboxMessage) -> Route;

    /// Decides what `input` does to an instance in `state`: the new state, commands to send,
    /// deadlines to set or cancel, and whether the saga completed.
    ///
    /// Called for late messages too (after completion, or after a deadline moved the saga
    /// on): [`Input::completed`] tells, and the state decides (for example, refund a payment
    /// that completed after the order was cancelled).
    ///
    /// # Errors
    /// `Self::Error` when the message cannot be handled at all; the runner reports it as
    /// permanent (the message is dead-lettered), and nothing is committed.
    fn handle(
        &self,
        state: Self::State,
        input: &Input<'_>,
    ) -> Result<Decision<Self::State>, Self::Error>;

    /// Transforms a stored state of `version` into the JSON of
    /// [`STATE_VERSION`](Saga::STATE_VERSION); `None` (the default) refuses it.
    fn upcast_state(&self, version: u32, state: Value) -> Option<Value> {
        let _ = (version, state);
        None
    }
}
