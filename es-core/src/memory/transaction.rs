//! Transactions of the in-memory event store.

use std::collections::{HashMap, HashSet};
use std::fmt;

use uuid::Uuid;

use super::inbox::MemoryTransaction;
use super::lock;
use super::store::MemoryEventStore;
use crate::error::{Conflict, StoreError};
use crate::event::RecordedEvent;
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::inbox::Inbox;
use crate::snapshot::Snapshot;
use crate::store::{AppendRequest, Direction, StreamRead};
use crate::transaction::{Committed, StoreTransaction, TransactionalStore};

/// A transaction of a [`MemoryEventStore`]: appends, outbox messages, snapshots and records of
/// handled messages are kept aside and applied at once, under the store's lock, when it
/// commits; dropping it discards them.
///
/// It is optimistic: nothing is locked while it runs. An append checks its expected version
/// against the stream as the transaction sees it, and the commit fails with
/// [`StoreError::Conflict`] when a stream it appended to moved meanwhile (which
/// [`MemoryEventStore::interleave`] provokes on demand). It refuses an append to a stream it
/// was not begun with once it has written, as every backend does (see
/// [`StoreTransaction`]).
///
/// Actions staged with [`on_commit`](Self::on_commit) (in-memory read models, say) run when
/// it commits, after its writes.
pub struct MemoryStoreTransaction {
    store: MemoryEventStore,
    locked: HashSet<StreamId>,
    written: bool,
    appends: Vec<AppendRequest>,
    /// Each appended stream's committed version when the transaction first appended to it.
    base: HashMap<StreamId, Version>,
    /// This transaction's own events, as its reads see them.
    pending: HashMap<StreamId, Vec<RecordedEvent>>,
    snapshots: Vec<Snapshot>,
    recorded: HashSet<(String, Uuid)>,
    inbox: MemoryTransaction,
}

impl fmt::Debug for MemoryStoreTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStoreTransaction")
            .field("locked", &self.locked)
            .field("appends", &self.appends.len())
            .field("recorded", &self.recorded.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStoreTransaction {
    /// Stages `action` to run when this transaction commits, after its writes are applied; a
    /// rollback discards it. It runs under the store's lock and must not use the store.
    pub fn on_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.inbox.on_commit(action);
    }

    fn admit(&mut self, stream_id: &StreamId) -> Result<(), StoreError> {
        if !self.locked.contains(stream_id) {
            if self.written {
                return Err(StoreError::StreamNotLocked(stream_id.clone()));
            }
            self.locked.insert(stream_id.clone());
        }
        Ok(())
    }

    fn pending_version(&self, stream_id: &StreamId) -> u64 {
        self.pending.get(stream_id).map_or(0, |e| e.len() as u64)
    }
}

impl StoreTransaction for MemoryStoreTransaction {
    async fn append(&mut self, request: AppendRequest) -> Result<Version, StoreError> {
        if !request.expected.is_valid() {
            return Err(StoreError::InvalidExpectedVersion(request.stream_id));
        }
        self.store.check_sizes(&request)?;
        self.admit(&request.stream_id)?;
        let stream_id = request.stream_id.clone();
        let buffered = self.pending_version(&stream_id);
        let current = {
            let mut state = lock(&self.store.state);
            self.store.run_interleaved(&mut state, &stream_id);
            if state.is_deleted(&stream_id) {
                return Err(StoreError::StreamDeleted(stream_id));
            }
            let committed = state.current_version(&stream_id);
            // An append at `Any` does not care whether the stream moved; others do.
            let base = match request.expected {
                ExpectedVersion::Any => self.base.get(&stream_id).copied().unwrap_or(committed),
                _ => *self.base.entry(stream_id.clone()).or_insert(committed),
            };
            let current = Version::new(base.get() + buffered);
            if committed != base {
                return Err(Conflict {
                    stream: stream_id,
                    expected: request.expected,
                    actual: Version::new(committed.get() + buffered),
                }
                .into());
            }
            if buffered == 0
                && let Some(earlier) = state.earlier_append(&request)?
            {
                return Ok(earlier.last_version);
            }
            if let Some(event) = request
                .events
                .iter()
                .find(|e| state.has_event(e.event_id()))
            {
                return Err(StoreError::DuplicateEventId {
                    stream: stream_id.clone(),
                    event_id: event.event_id(),
                    existing_stream: stream_id,
                });
            }
            current
        };
        if !request.expected.matches(current) {
            return Err(Conflict {
                stream: stream_id,
                expected: request.expected,
                actual: current,
            }
            .into());
        }
        let mut seen: HashSet<_> = self
            .pending
            .values()
            .flatten()
            .map(RecordedEvent::event_id)
            .collect();
        if let Some(event) = request.events.iter().find(|e| !seen.insert(e.event_id())) {
            return Err(StoreError::DuplicateEventId {
                stream: stream_id.clone(),
                event_id: event.event_id(),
                existing_stream: stream_id,
            });
        }
        if request.events.is_empty() && request.outbox.is_empty() {
            return Ok(current);
        }
        let now = chrono::Utc::now();
        let own = self.pending.entry(stream_id).or_default();
        let mut version = current;
        for event in &request.events {
            version = version.next();
            own.push(RecordedEvent {
                stream_id: request.stream_id.clone(),
                version,
                position: Position::START,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                data: event.data.clone(),
                metadata: event.metadata.clone(),
                recorded_at: now,
            });
        }
        self.written = true;
        self.appends.push(request);
        Ok(version)
    }

    async fn read_stream(
        &mut self,
        stream_id: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut events = lock(&self.store.state).read(stream_id, StreamRead::forward());
        if let Some(own) = self.pending.get(stream_id) {
            events.extend(own.iter().cloned());
        }
        events.retain(|event| read.admits(event.version));
        if read.direction == Direction::Backward {
            events.reverse();
        }
        events.truncate(read.limit.unwrap_or(usize::MAX));
        Ok(events)
    }

    async fn load_snapshot(
        &mut self,
        stream_id: &StreamId,
    ) -> Result<Option<Snapshot>, StoreError> {
        let own = self
            .snapshots
            .iter()
            .rev()
            .find(|s| &s.stream_id == stream_id);
        match own {
            Some(snapshot) => Ok(Some(snapshot.clone())),
            None => Ok(lock(&self.store.state).snapshots.get(stream_id).cloned()),
        }
    }

    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.written = true;
        self.snapshots.push(snapshot);
        Ok(())
    }

    async fn is_handled(&mut self, subscriber: &str, message_id: Uuid) -> Result<bool, StoreError> {
        Ok(self.recorded.contains(&(subscriber.to_owned(), message_id))
            || self.store.inbox.is_committed(subscriber, message_id))
    }

    async fn record_handled(
        &mut self,
        subscriber: &str,
        message_id: Uuid,
    ) -> Result<bool, StoreError> {
        self.written = true;
        let new = self
            .store
            .inbox
            .record(&mut self.inbox, subscriber, message_id)
            .await
            .map_err(StoreError::backend)?;
        self.recorded.insert((subscriber.to_owned(), message_id));
        Ok(new)
    }

    async fn commit(mut self) -> Result<Committed, StoreError> {
        let started = std::time::Instant::now();
        let mut positions = Vec::new();
        {
            let mut state = lock(&self.store.state);
            // Everything is checked before anything is applied: the commit is all or nothing.
            for (stream_id, &base) in &self.base {
                self.store.run_interleaved(&mut state, stream_id);
                let actual = state.current_version(stream_id);
                if actual != base || state.is_deleted(stream_id) {
                    return Err(Conflict {
                        stream: stream_id.clone(),
                        expected: ExpectedVersion::from_current(base),
                        actual,
                    }
                    .into());
                }
            }
            for request in &self.appends {
                if let Some(event) = request
                    .events
                    .iter()
                    .find(|e| state.has_event(e.event_id()))
                {
                    return Err(StoreError::DuplicateEventId {
                        stream: request.stream_id.clone(),
                        event_id: event.event_id(),
                        existing_stream: request.stream_id.clone(),
                    });
                }
            }
            if self.inbox.is_aborted() {
                return Err(StoreError::backend(crate::inbox::InboxError::Aborted));
            }
            for request in std::mem::take(&mut self.appends) {
                let outcome = self.store.append_locked(&mut state, request)?;
                positions.extend(outcome.positions);
            }
            for snapshot in std::mem::take(&mut self.snapshots) {
                state.save_snapshot(snapshot);
            }
            self.store
                .inbox
                .commit_now(&mut self.inbox)
                .map_err(StoreError::backend)?;
        }
        if !positions.is_empty() {
            crate::telemetry::record_append("memory", positions.len(), started);
            self.store.append_signal().notify();
        }
        Ok(Committed::new(positions))
    }
}

impl TransactionalStore for MemoryEventStore {
    type Transaction = MemoryStoreTransaction;

    async fn begin(&self, streams: &[StreamId]) -> Result<MemoryStoreTransaction, StoreError> {
        let inbox = self.inbox.begin().await.map_err(StoreError::backend)?;
        Ok(MemoryStoreTransaction {
            store: self.clone(),
            locked: streams.iter().cloned().collect(),
            written: false,
            appends: Vec::new(),
            base: HashMap::new(),
            pending: HashMap::new(),
            snapshots: Vec::new(),
            recorded: HashSet::new(),
            inbox,
        })
    }
}
