//! The in-memory inbox and its transactions.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use uuid::Uuid;

use super::lock;
use crate::inbox::{Inbox, InboxError};

type Key = (String, Uuid);

/// An in-memory [`Inbox`] with the blocking semantics of a unique index: recording a pair that
/// another open [`MemoryTransaction`] holds waits until that transaction ends. Clones share the
/// same records.
#[derive(Debug, Clone, Default)]
pub struct MemoryInbox {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a transaction ends and releases its pending pairs.
    released: Notify,
}

#[derive(Debug, Default)]
struct State {
    committed: HashSet<Key>,
    /// Pairs recorded by open transactions, with the transaction holding each.
    pending: HashMap<Key, u64>,
    /// Which transaction each waiting transaction waits for (for deadlock detection).
    waits_for: HashMap<u64, u64>,
    next_transaction: u64,
}

/// What a transaction holding the lock found for a pair.
enum Attempt {
    Recorded(bool),
    Wait,
}

/// A transaction of a [`MemoryInbox`]: pairs recorded in it are visible to other
/// transactions only as pending (they wait on them) until [`Inbox::commit`]. Dropping it rolls
/// it back.
///
/// It doubles as a small in-memory unit of work: actions staged with
/// [`on_commit`](MemoryTransaction::on_commit) run when it commits and are discarded when it
/// rolls back.
pub struct MemoryTransaction {
    id: u64,
    shared: Arc<Shared>,
    keys: Vec<Key>,
    on_commit: Vec<Box<dyn FnOnce() + Send>>,
    aborted: bool,
}

impl fmt::Debug for MemoryTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransaction")
            .field("id", &self.id)
            .field("keys", &self.keys)
            .field("on_commit", &self.on_commit.len())
            .field("aborted", &self.aborted)
            .finish_non_exhaustive()
    }
}

impl MemoryTransaction {
    /// Stages `action` to run when this transaction commits, after its records are committed
    /// and in the order staged; a rollback discards it. Actions run while the inbox is locked,
    /// so no other transaction observes the records without the actions' effects; they must not
    /// use the inbox themselves.
    pub fn on_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.on_commit.push(Box::new(action));
    }

    /// Whether a detected deadlock rolled this transaction back.
    pub(super) fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// Releases this transaction's pending pairs and discards its staged actions.
    fn roll_back(&mut self) {
        self.on_commit.clear();
        if self.keys.is_empty() {
            return;
        }
        {
            let mut state = lock(&self.shared.state);
            for key in self.keys.drain(..) {
                if state.pending.get(&key) == Some(&self.id) {
                    state.pending.remove(&key);
                }
            }
        }
        self.shared.released.notify_waiters();
    }
}

impl Drop for MemoryTransaction {
    fn drop(&mut self) {
        self.roll_back();
    }
}

/// Removes a transaction's waits-for edge when its wait ends, even if the waiting future is
/// dropped.
struct WaitGuard<'a> {
    shared: &'a Shared,
    transaction: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.state).waits_for.remove(&self.transaction);
    }
}

/// A transaction used with an inbox other than the one that began it.
#[derive(Debug, thiserror::Error)]
#[error("the transaction was begun by another MemoryInbox")]
struct ForeignTransaction;

impl MemoryInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_owner(&self, tx: &MemoryTransaction) -> Result<(), InboxError> {
        if Arc::ptr_eq(&self.shared, &tx.shared) {
            Ok(())
        } else {
            Err(InboxError::backend(ForeignTransaction))
        }
    }

    /// One attempt to record `key` in `tx`, under the lock.
    fn attempt(&self, tx: &mut MemoryTransaction, key: &Key) -> Result<Attempt, InboxError> {
        let mut state = lock(&self.shared.state);
        if state.committed.contains(key) {
            return Ok(Attempt::Recorded(false));
        }
        let Some(&holder) = state.pending.get(key) else {
            state.pending.insert(key.clone(), tx.id);
            tx.keys.push(key.clone());
            return Ok(Attempt::Recorded(true));
        };
        if holder == tx.id {
            return Ok(Attempt::Recorded(false));
        }
        // Follow the chain of waits from the holder: reaching this transaction is a cycle.
        let mut current = holder;
        for _ in 0..=state.waits_for.len() {
            if current == tx.id {
                drop(state);
                tx.aborted = true;
                tx.roll_back();
                return Err(InboxError::Deadlock {
                    subscriber: key.0.clone(),
                    message_id: key.1,
                });
            }
            match state.waits_for.get(&current) {
                Some(&next) => current = next,
                None => break,
            }
        }
        state.waits_for.insert(tx.id, holder);
        Ok(Attempt::Wait)
    }
}

impl Inbox for MemoryInbox {
    type Transaction = MemoryTransaction;

    async fn begin(&self) -> Result<MemoryTransaction, InboxError> {
        let id = {
            let mut state = lock(&self.shared.state);
            state.next_transaction += 1;
            state.next_transaction
        };
        Ok(MemoryTransaction {
            id,
            shared: Arc::clone(&self.shared),
            keys: Vec::new(),
            on_commit: Vec::new(),
            aborted: false,
        })
    }

    async fn record(
        &self,
        tx: &mut MemoryTransaction,
        subscriber: &str,
        message_id: Uuid,
    ) -> Result<bool, InboxError> {
        self.check_owner(tx)?;
        if tx.aborted {
            return Err(InboxError::Aborted);
        }
        let key = (subscriber.to_owned(), message_id);
        let _guard = WaitGuard {
            shared: &self.shared,
            transaction: tx.id,
        };
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let mut released = pin!(self.shared.released.notified());
            released.as_mut().enable();
            match self.attempt(tx, &key)? {
                Attempt::Recorded(new) => return Ok(new),
                Attempt::Wait => released.await,
            }
        }
    }

    async fn commit(&self, mut tx: MemoryTransaction) -> Result<(), InboxError> {
        self.commit_now(&mut tx)
    }
}

impl MemoryInbox {
    /// Whether `subscriber`'s record of `message_id` is committed (a read: it never waits).
    pub(super) fn is_committed(&self, subscriber: &str, message_id: Uuid) -> bool {
        lock(&self.shared.state)
            .committed
            .contains(&(subscriber.to_owned(), message_id))
    }

    /// Commits `tx` without awaiting (nothing in a commit waits).
    pub(super) fn commit_now(&self, tx: &mut MemoryTransaction) -> Result<(), InboxError> {
        self.check_owner(tx)?;
        if tx.aborted {
            return Err(InboxError::Aborted);
        }
        let keys = std::mem::take(&mut tx.keys);
        let actions = std::mem::take(&mut tx.on_commit);
        {
            let mut state = lock(&self.shared.state);
            for key in keys {
                state.pending.remove(&key);
                state.committed.insert(key);
            }
            for action in actions {
                action();
            }
        }
        self.shared.released.notify_waiters();
        Ok(())
    }
}
