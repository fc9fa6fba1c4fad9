//! The unit of work: a closure run in a store transaction, committed as a whole, and run
//! again from the start when a stream moved or a stream it needs was not locked.

use std::fmt;
use std::future::Future;

use crate::error::{Conflict, StoreError};
use crate::ids::StreamId;
use crate::transaction::{Committed, StoreTransaction, TransactionalStore};

/// Why a unit of work is run again from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun<'a> {
    /// A stream moved under it (optimistic concurrency).
    Conflict(&'a Conflict),
    /// It appended to a stream it had not locked, after writing: it runs again with that
    /// stream locked first.
    Lock(&'a StreamId),
}

/// An error a unit of work can fail with: store errors convert into it, and the unit of work
/// can tell from it whether to run again.
pub trait UnitError: From<StoreError> {
    /// `Some` when the failure is a conflict or an unlocked stream (the unit runs again).
    fn rerun(&self) -> Option<Rerun<'_>>;
}

impl UnitError for StoreError {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Conflict(conflict) => Some(Rerun::Conflict(conflict)),
            Self::StreamNotLocked(stream) => Some(Rerun::Lock(stream)),
            _ => None,
        }
    }
}

/// What a unit of work returned, with what its transaction committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done<T> {
    /// The unit's value.
    pub value: T,
    /// What the transaction wrote.
    pub committed: Committed,
    /// How many times the unit ran (1 when it ran once).
    pub runs: u32,
}

/// Runs a closure in a transaction of a [`TransactionalStore`], commits it when the closure
/// succeeds and rolls it back when it fails; a conflict (in the closure or at commit) runs the
/// whole closure again, up to a number of times, and an append to a stream that was not locked
/// runs it again with that stream locked first. So the closure must be safe to run again:
/// load inside it, decide inside it.
///
/// ```
/// use es_core::memory::MemoryEventStore;
/// use es_core::{AppendRequest, ExpectedVersion, NewEvent, CommandContext, SystemClock, StoreError, StoreTransaction, StreamId, UnitOfWork};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryEventStore::new();
/// let (from, to) = (StreamId::new("account-1")?, StreamId::new("account-2")?);
/// let moved = |kind: &str| NewEvent { event_type: kind.into(), schema_version: 1,
///     data: serde_json::json!({ "amount": 10 }), metadata: CommandContext::new().metadata(&SystemClock) };
/// // Only `from` is named: the append to `to` after a write runs the unit again with both.
/// let done = UnitOfWork::new(&store)
///     .lock([&from])
///     .conflict_retries(3)
///     .run(|mut tx| async {
///         tx.append(AppendRequest::new(from.clone(), ExpectedVersion::Any).with_events([moved("Debited")])).await?;
///         tx.append(AppendRequest::new(to.clone(), ExpectedVersion::Any).with_events([moved("Credited")])).await?;
///         Ok::<_, StoreError>((tx, "moved"))
///     })
///     .await?;
/// assert_eq!((done.value, done.runs, done.committed.positions.len()), ("moved", 2, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct UnitOfWork<'s, S> {
    store: &'s S,
    streams: Vec<StreamId>,
    conflict_retries: u32,
}

impl<S> fmt::Debug for UnitOfWork<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnitOfWork")
            .field("streams", &self.streams)
            .field("conflict_retries", &self.conflict_retries)
            .finish_non_exhaustive()
    }
}

/// How many streams discovered late one unit may add before it gives up: each adds a run.
const MAX_LATE_STREAMS: usize = 64;

impl<'s, S: TransactionalStore> UnitOfWork<'s, S> {
    /// A unit of work on `store` that locks no stream up front and is not retried on
    /// conflicts.
    pub fn new(store: &'s S) -> Self {
        Self {
            store,
            streams: Vec::new(),
            conflict_retries: 0,
        }
    }

    /// Locks `streams` when the transaction begins (name every stream the unit appends to,
    /// when they are known up front: a stream discovered late costs a run).
    #[must_use]
    pub fn lock<'a>(mut self, streams: impl IntoIterator<Item = &'a StreamId>) -> Self {
        for stream in streams {
            if !self.streams.contains(stream) {
                self.streams.push(stream.clone());
            }
        }
        self
    }

    /// Runs the unit again, from a new transaction, up to `retries` more times when it
    /// conflicts.
    #[must_use]
    pub fn conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Runs `unit` in a transaction and commits it. The unit is given the transaction and
    /// hands it back with its value to have it committed; failing (or dropping the
    /// transaction) rolls it back.
    ///
    /// # Errors
    /// The unit's error (its transaction rolled back), once conflicts have used up the
    /// retries; a store error converted into `E` when beginning or committing fails.
    pub async fn run<T, E, F, Fut>(mut self, mut unit: F) -> Result<Done<T>, E>
    where
        E: UnitError,
        F: FnMut(S::Transaction) -> Fut,
        Fut: Future<Output = Result<(S::Transaction, T), E>>,
    {
        let mut conflicts = 0;
        let mut runs = 0;
        loop {
            runs += 1;
            let tx = self.store.begin(&self.streams).await?;
            let error = match unit(tx).await {
                Ok((tx, value)) => match tx.commit().await {
                    Ok(committed) => {
                        return Ok(Done {
                            value,
                            committed,
                            runs,
                        });
                    }
                    Err(error) => E::from(error),
                },
                Err(error) => error,
            };
            match error.rerun() {
                Some(Rerun::Lock(stream))
                    if !self.streams.contains(stream) && self.streams.len() < MAX_LATE_STREAMS =>
                {
                    tracing::debug!(%stream, "running the unit of work again with the stream locked first");
                    rerun("lock");
                    self.streams.push(stream.clone());
                }
                Some(Rerun::Conflict(conflict)) if conflicts < self.conflict_retries => {
                    conflicts += 1;
                    tracing::debug!(%conflict, attempt = conflicts, "running the unit of work again after a conflict");
                    rerun("conflict");
                }
                _ => return Err(error),
            }
        }
    }
}

/// Counts a run again in `es_unit_of_work_reruns_total`.
fn rerun(reason: &'static str) {
    crate::telemetry::metrics()
        .unit_reruns
        .add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
}
