//! Saga (process manager) state and the deadlines sagas set: types and ports.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::BoxError;
use crate::outbox::OutboxMessage;

/// One committed version of a saga instance's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaInstance {
    /// The saga's persisted name (for example `"order-fulfilment"`).
    pub saga: String,
    /// The correlation key of this instance (for example the order id).
    pub key: String,
    /// The version of this state: 1 after the first commit, 0 for an instance never stored.
    pub version: u64,
    /// The saga's state, as JSON.
    pub state: Value,
    /// Whether the saga has finished.
    pub completed: bool,
    /// When this version was committed.
    pub updated_at: DateTime<Utc>,
}

/// A timer set by a saga instance: at `due_at`, the step it guards is re-examined.
///
/// A deadline is identified by (saga, key, step): setting one for a step that already has one
/// replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deadline {
    /// Unique id, used to complete it after it fired.
    pub id: Uuid,
    /// The saga's persisted name.
    pub saga: String,
    /// The saga instance's correlation key.
    pub key: String,
    /// The step it guards (for example `"awaiting-payment"`).
    pub step: String,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Data delivered with it.
    pub payload: Value,
}

impl Deadline {
    /// A deadline for `step` of the instance (`saga`, `key`), with a fresh (v7) id.
    pub fn new(
        saga: impl Into<String>,
        key: impl Into<String>,
        step: impl Into<String>,
        due_at: DateTime<Utc>,
        payload: Value,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            saga: saga.into(),
            key: key.into(),
            step: step.into(),
            due_at,
            payload,
        }
    }
}

/// Everything one handled message changes for a saga instance, committed atomically by
/// [`SagaStore::commit`]: the new state, the commands to send (as outbox messages), the inbox
/// record of the handled message, and the deadlines set and cancelled.
///
/// ```
/// use chrono::{Duration, Utc};
/// use es_core::{OutboxMessage, SagaCommit};
/// use serde_json::json;
/// use uuid::Uuid;
///
/// let payment_requested = Uuid::now_v7();
/// let commit = SagaCommit::new("order-fulfilment", "order-7", 0, json!({ "step": "paying" }))
///     .with_inbox("order-fulfilment", payment_requested)
///     .with_outbox(OutboxMessage::new("ChargePayment", "order-7", json!({ "amount": 42 })))
///     .set_deadline("awaiting-payment", Utc::now() + Duration::minutes(15), json!({}))
///     .cancel_deadline("awaiting-stock");
/// assert_eq!(commit.set_deadlines[0].key, "order-7");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SagaCommit {
    /// The saga's persisted name.
    pub saga: String,
    /// The instance's correlation key.
    pub key: String,
    /// The version the state was loaded at (0 for a new instance); the commit fails with
    /// [`SagaStoreError::Conflict`] if the stored version differs.
    pub expected_version: u64,
    /// The new state.
    pub state: Value,
    /// Whether the saga has finished.
    pub completed: bool,
    /// Commands and notifications to send, written to the outbox.
    pub outbox: Vec<OutboxMessage>,
    /// The handled message, as (subscriber, message id): if it is already recorded, nothing is
    /// written and the commit is a [`SagaCommitOutcome::Duplicate`].
    pub inbox: Option<(String, Uuid)>,
    /// Deadlines to set, each replacing any deadline of its (saga, key, step). Applied after
    /// [`cancel_deadlines`](SagaCommit::cancel_deadlines).
    pub set_deadlines: Vec<Deadline>,
    /// Steps of this instance whose deadlines are cancelled.
    pub cancel_deadlines: Vec<String>,
}

impl SagaCommit {
    /// A commit of `state` for the instance (`saga`, `key`) loaded at `expected_version`, not
    /// completed, with no messages, inbox record or deadline changes.
    pub fn new(
        saga: impl Into<String>,
        key: impl Into<String>,
        expected_version: u64,
        state: Value,
    ) -> Self {
        Self {
            saga: saga.into(),
            key: key.into(),
            expected_version,
            state,
            completed: false,
            outbox: Vec::new(),
            inbox: None,
            set_deadlines: Vec::new(),
            cancel_deadlines: Vec::new(),
        }
    }

    /// Marks the saga as finished (or not).
    #[must_use]
    pub fn completed(mut self, completed: bool) -> Self {
        self.completed = completed;
        self
    }

    /// Adds an outbox message, stamped with the current span's trace context (see
    /// [`telemetry`](crate::telemetry)).
    #[must_use]
    pub fn with_outbox(mut self, message: OutboxMessage) -> Self {
        self.outbox.push(message.with_current_trace());
        self
    }

    /// Adds outbox messages, each stamped with the current span's trace context.
    #[must_use]
    pub fn with_outbox_messages(
        mut self,
        messages: impl IntoIterator<Item = OutboxMessage>,
    ) -> Self {
        self.outbox
            .extend(messages.into_iter().map(OutboxMessage::with_current_trace));
        self
    }

    /// Records that `subscriber` handled `message_id` in the same commit.
    #[must_use]
    pub fn with_inbox(mut self, subscriber: impl Into<String>, message_id: Uuid) -> Self {
        self.inbox = Some((subscriber.into(), message_id));
        self
    }

    /// Sets a deadline for `step` of this instance, due at `due_at`, with a fresh id.
    #[must_use]
    pub fn set_deadline(
        mut self,
        step: impl Into<String>,
        due_at: DateTime<Utc>,
        payload: Value,
    ) -> Self {
        let deadline = Deadline::new(self.saga.clone(), self.key.clone(), step, due_at, payload);
        self.set_deadlines.push(deadline);
        self
    }

    /// Cancels the deadline of `step` of this instance, if any.
    #[must_use]
    pub fn cancel_deadline(mut self, step: impl Into<String>) -> Self {
        self.cancel_deadlines.push(step.into());
        self
    }
}

/// What [`SagaStore::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SagaCommitOutcome {
    /// Everything was written; the instance is now at `version`.
    Committed {
        /// The new version.
        version: u64,
    },
    /// The inbox record already existed: the message was handled before and nothing was
    /// written.
    Duplicate,
}

/// Failure of a saga state operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SagaStoreError {
    /// Optimistic concurrency: the instance moved on since it was loaded. Nothing was written.
    #[error("conflict on saga {saga:?} key {key:?}: expected version {expected}, actual {actual}")]
    Conflict {
        /// The saga.
        saga: String,
        /// The instance's key.
        key: String,
        /// The version the commit expected.
        expected: u64,
        /// The stored version (0 when the instance was never stored).
        actual: u64,
    },
    /// The backend failed.
    #[error("saga store backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl SagaStoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}

/// Failure of a deadline operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadlineStoreError {
    /// The backend failed.
    #[error("deadline store backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl DeadlineStoreError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}

/// The state of saga instances, versioned and committed together with their effects.
pub trait SagaStore: Send + Sync {
    /// The latest committed state of the instance, `None` when it was never stored.
    ///
    /// # Errors
    /// [`SagaStoreError::Backend`] when the backend fails.
    fn load(
        &self,
        saga: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<SagaInstance>, SagaStoreError>> + Send;

    /// Atomically records the inbox record, stores the new state at `expected_version + 1`,
    /// writes the outbox messages, cancels and sets the deadlines; or writes nothing at all.
    ///
    /// If the inbox record already exists the outcome is [`SagaCommitOutcome::Duplicate`]
    /// (checked before the version, so a redelivery is a no-op even with a stale version). While
    /// another commit holding the same inbox record is in flight, this one waits for it.
    ///
    /// # Errors
    /// [`SagaStoreError::Conflict`] when the stored version is not `expected_version`, or
    /// [`SagaStoreError::Backend`].
    fn commit(
        &self,
        commit: SagaCommit,
    ) -> impl Future<Output = Result<SagaCommitOutcome, SagaStoreError>> + Send;

    /// Every committed version of the instance, oldest first (empty when never stored).
    ///
    /// # Errors
    /// [`SagaStoreError::Backend`] when the backend fails.
    fn history(
        &self,
        saga: &str,
        key: &str,
    ) -> impl Future<Output = Result<Vec<SagaInstance>, SagaStoreError>> + Send;

    /// The latest state of every instance of `saga`, ordered by key; only completed (or only
    /// running) ones when `completed` is given.
    ///
    /// # Errors
    /// [`SagaStoreError::Backend`] when the backend fails.
    fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> impl Future<Output = Result<Vec<SagaInstance>, SagaStoreError>> + Send;
}

/// Deadlines waiting to fire, claimed with a lease so that a crashed scheduler loses none.
pub trait DeadlineStore: Send + Sync {
    /// Claims up to `limit` deadlines due at `now` (`due_at <= now`), earliest first, that are
    /// neither completed, cancelled nor claimed by a lease still running at `now`. Each claim
    /// lasts `lease` from `now`; a deadline not completed by then can be claimed again.
    ///
    /// # Errors
    /// [`DeadlineStoreError::Backend`] when the backend fails.
    fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Deadline>, DeadlineStoreError>> + Send;

    /// When the earliest pending deadline can next be claimed (its due time, or the end of
    /// its claim's lease); `None` when none is pending. A scheduler sleeps until then. The
    /// default says `None`: a scheduler on a store without it polls.
    ///
    /// # Errors
    /// [`DeadlineStoreError::Backend`] when the backend fails.
    fn next_due(
        &self,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, DeadlineStoreError>> + Send {
        async { Ok(None) }
    }

    /// Marks the deadline done: it is never claimed again. Returns whether it was pending
    /// (`false` when it was already completed, cancelled or replaced).
    ///
    /// # Errors
    /// [`DeadlineStoreError::Backend`] when the backend fails.
    fn complete(&self, id: Uuid) -> impl Future<Output = Result<bool, DeadlineStoreError>> + Send;

    /// Cancels the pending deadline of (`saga`, `key`, `step`); returns whether there was one.
    ///
    /// # Errors
    /// [`DeadlineStoreError::Backend`] when the backend fails.
    fn cancel(
        &self,
        saga: &str,
        key: &str,
        step: &str,
    ) -> impl Future<Output = Result<bool, DeadlineStoreError>> + Send;

    /// Sets a deadline, replacing (and releasing any claim on) the one of the same
    /// (saga, key, step).
    ///
    /// # Errors
    /// [`DeadlineStoreError::Backend`] when the backend fails.
    fn schedule(
        &self,
        deadline: Deadline,
    ) -> impl Future<Output = Result<(), DeadlineStoreError>> + Send;
}
