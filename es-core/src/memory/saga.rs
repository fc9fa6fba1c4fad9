//! The in-memory saga state and deadline store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::inbox::MemoryInbox;
use super::lock;
use super::outbox::MemoryOutbox;
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::ids::Position;
use crate::inbox::Inbox;
use crate::outbox::{OutboxBatch, OutboxSource};
use crate::saga::{
    Deadline, DeadlineStore, DeadlineStoreError, SagaCommit, SagaCommitOutcome, SagaInstance,
    SagaStore, SagaStoreError,
};
use crate::subscription::AppendSignal;

/// An in-memory [`SagaStore`] and [`DeadlineStore`]. Clones share the same data.
///
/// Commits write their outbox messages to a [`MemoryOutbox`] and their inbox records to a
/// [`MemoryInbox`], its own unless others are given, so that an in-memory event store and
/// consumers can share them. As an [`OutboxSource`] it reads its outbox.
///
/// ```
/// use es_core::memory::MemorySagaStore;
/// use es_core::{SagaCommit, SagaCommitOutcome, SagaStore};
/// use serde_json::json;
/// use uuid::Uuid;
///
/// # futures::executor::block_on(async {
/// let store = MemorySagaStore::new();
/// let message_id = Uuid::now_v7();
/// let commit = SagaCommit::new("fulfilment", "order-7", 0, json!({ "step": "paying" }))
///     .with_inbox("fulfilment", message_id);
/// assert_eq!(
///     store.commit(commit.clone()).await?,
///     SagaCommitOutcome::Committed { version: 1 }
/// );
/// assert_eq!(store.commit(commit).await?, SagaCommitOutcome::Duplicate);
/// assert_eq!(store.load("fulfilment", "order-7").await?.unwrap().version, 1);
/// # Ok::<(), es_core::SagaStoreError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemorySagaStore {
    state: Arc<Mutex<State>>,
    inbox: MemoryInbox,
    outbox: MemoryOutbox,
    clock: Arc<dyn Clock>,
    signal: AppendSignal,
}

/// A deadline's identity: (saga, key, step).
type Step = (String, String, String);

#[derive(Debug, Default)]
struct State {
    /// Every committed version of each (saga, key), oldest first.
    instances: BTreeMap<(String, String), Vec<SagaInstance>>,
    /// Pending deadlines; completed and cancelled ones are removed.
    deadlines: HashMap<Step, PendingDeadline>,
}

#[derive(Debug)]
struct PendingDeadline {
    deadline: Deadline,
    claimed_until: Option<DateTime<Utc>>,
}

impl State {
    fn version(&self, saga: &str, key: &str) -> u64 {
        self.instances
            .get(&(saga.to_owned(), key.to_owned()))
            .and_then(|history| history.last())
            .map_or(0, |instance| instance.version)
    }

    fn schedule(&mut self, deadline: Deadline) {
        let step = (
            deadline.saga.clone(),
            deadline.key.clone(),
            deadline.step.clone(),
        );
        self.deadlines.insert(
            step,
            PendingDeadline {
                deadline,
                claimed_until: None,
            },
        );
    }
}

impl Default for MemorySagaStore {
    fn default() -> Self {
        Self {
            state: Arc::default(),
            inbox: MemoryInbox::new(),
            outbox: MemoryOutbox::new(),
            clock: Arc::new(SystemClock),
            signal: AppendSignal::new(),
        }
    }
}

impl MemorySagaStore {
    /// An empty store with its own inbox and outbox, on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records inbox entries in `inbox` (shared with consumers, for example).
    #[must_use]
    pub fn with_inbox(mut self, inbox: MemoryInbox) -> Self {
        self.inbox = inbox;
        self
    }

    /// Writes outbox messages to `outbox` (shared with the event store, for example).
    #[must_use]
    pub fn with_outbox(mut self, outbox: MemoryOutbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Stamps commits with the time of `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Fires `signal` after each commit (share the event store's, whose relay then wakes for
    /// the commit's commands too).
    #[must_use]
    pub fn with_signal(mut self, signal: AppendSignal) -> Self {
        self.signal = signal;
        self
    }

    /// The signal fired after each commit (wakes the relay of the outbox and a deadline
    /// scheduler).
    pub fn append_signal(&self) -> &AppendSignal {
        &self.signal
    }

    /// The inbox commits record in.
    pub fn inbox(&self) -> &MemoryInbox {
        &self.inbox
    }

    /// The outbox commits write to.
    pub fn outbox(&self) -> &MemoryOutbox {
        &self.outbox
    }

    /// Writes `commit` if its version matches; the caller holds the inbox record, if any.
    fn write(&self, commit: SagaCommit) -> Result<u64, SagaStoreError> {
        let mut state = lock(&self.state);
        let actual = state.version(&commit.saga, &commit.key);
        if actual != commit.expected_version {
            return Err(SagaStoreError::Conflict {
                saga: commit.saga,
                key: commit.key,
                expected: commit.expected_version,
                actual,
            });
        }
        let version = actual + 1;
        for step in commit.cancel_deadlines {
            state
                .deadlines
                .remove(&(commit.saga.clone(), commit.key.clone(), step));
        }
        for deadline in commit.set_deadlines {
            state.schedule(deadline);
        }
        self.outbox.push(commit.outbox);
        let instance = SagaInstance {
            saga: commit.saga.clone(),
            key: commit.key.clone(),
            version,
            state: commit.state,
            completed: commit.completed,
            updated_at: self.clock.now(),
        };
        state
            .instances
            .entry((commit.saga, commit.key))
            .or_default()
            .push(instance);
        Ok(version)
    }
}

impl SagaStore for MemorySagaStore {
    async fn load(&self, saga: &str, key: &str) -> Result<Option<SagaInstance>, SagaStoreError> {
        Ok(lock(&self.state)
            .instances
            .get(&(saga.to_owned(), key.to_owned()))
            .and_then(|history| history.last().cloned()))
    }

    async fn commit(&self, mut commit: SagaCommit) -> Result<SagaCommitOutcome, SagaStoreError> {
        let Some((subscriber, message_id)) = commit.inbox.take() else {
            let version = self.write(commit)?;
            self.signal.notify();
            return Ok(SagaCommitOutcome::Committed { version });
        };
        let to_saga_error = |error| SagaStoreError::backend(error);
        let mut tx = self.inbox.begin().await.map_err(to_saga_error)?;
        // Waits while a concurrent commit holds the same record, as a unique index would.
        if !self
            .inbox
            .record(&mut tx, &subscriber, message_id)
            .await
            .map_err(to_saga_error)?
        {
            return Ok(SagaCommitOutcome::Duplicate);
        }
        // On a conflict `tx` is dropped, rolling the inbox record back.
        let version = self.write(commit)?;
        self.inbox.commit(tx).await.map_err(to_saga_error)?;
        self.signal.notify();
        Ok(SagaCommitOutcome::Committed { version })
    }

    async fn history(&self, saga: &str, key: &str) -> Result<Vec<SagaInstance>, SagaStoreError> {
        Ok(lock(&self.state)
            .instances
            .get(&(saga.to_owned(), key.to_owned()))
            .cloned()
            .unwrap_or_default())
    }

    async fn list(
        &self,
        saga: &str,
        completed: Option<bool>,
    ) -> Result<Vec<SagaInstance>, SagaStoreError> {
        Ok(lock(&self.state)
            .instances
            .iter()
            .filter(|((name, _), _)| name == saga)
            .filter_map(|(_, history)| history.last())
            .filter(|instance| completed.is_none_or(|completed| instance.completed == completed))
            .cloned()
            .collect())
    }
}

impl DeadlineStore for MemorySagaStore {
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, DeadlineStoreError> {
        Ok(lock(&self.state)
            .deadlines
            .values()
            .map(|pending| {
                pending
                    .claimed_until
                    .map_or(pending.deadline.due_at, |until| {
                        until.max(pending.deadline.due_at)
                    })
            })
            .min())
    }

    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: usize,
    ) -> Result<Vec<Deadline>, DeadlineStoreError> {
        let lease = TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
        let claimed_until = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut state = lock(&self.state);
        let mut due: Vec<&mut PendingDeadline> = state
            .deadlines
            .values_mut()
            .filter(|pending| {
                pending.deadline.due_at <= now
                    && pending.claimed_until.is_none_or(|until| until <= now)
            })
            .collect();
        due.sort_by_key(|pending| (pending.deadline.due_at, pending.deadline.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|pending| {
                pending.claimed_until = Some(claimed_until);
                pending.deadline.clone()
            })
            .collect())
    }

    async fn complete(&self, id: Uuid) -> Result<bool, DeadlineStoreError> {
        let mut state = lock(&self.state);
        let before = state.deadlines.len();
        state
            .deadlines
            .retain(|_, pending| pending.deadline.id != id);
        Ok(state.deadlines.len() < before)
    }

    async fn cancel(&self, saga: &str, key: &str, step: &str) -> Result<bool, DeadlineStoreError> {
        Ok(lock(&self.state)
            .deadlines
            .remove(&(saga.to_owned(), key.to_owned(), step.to_owned()))
            .is_some())
    }

    async fn schedule(&self, deadline: Deadline) -> Result<(), DeadlineStoreError> {
        lock(&self.state).schedule(deadline);
        Ok(())
    }
}

impl OutboxSource for MemorySagaStore {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        self.outbox.read_outbox(after, limit).await
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        self.outbox.delete_outbox_up_to(up_to).await
    }
}
