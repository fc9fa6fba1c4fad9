//! The in-memory event store.

use crate::telemetry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};

use crate::clock::{Clock, SystemClock};
use crate::error::{Conflict, StoreError};
use crate::event::{NewEvent, RecordedEvent};
use crate::ids::{EventId, ExpectedVersion, Position, StreamId, Version};
use crate::memory::{MemoryInbox, MemoryOutbox, lock};
use crate::metadata::CommandContext;
use crate::outbox::{OutboxBatch, OutboxSource};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{
    AppendOutcome, AppendRequest, AppendStatus, DeleteMode, Direction, EventStore, LogBatch,
    LogFilter, StreamRead, SubscriptionItem, TOMBSTONE_EVENT_TYPE,
};
use crate::subscription::{AppendSignal, SubscriptionOptions, poll_subscription};

/// The default largest event (JSON data plus metadata), in bytes.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub(super) struct StreamState {
    stream_type: String,
    deleted: bool,
    /// Indexes into the log, in version order (version = index + 1).
    events: Vec<usize>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    streams: HashMap<StreamId, StreamState>,
    log: Vec<RecordedEvent>,
    event_ids: HashMap<EventId, usize>,
    pub(super) snapshots: HashMap<StreamId, Snapshot>,
    commits: u64,
    sequence: u64,
    /// Appends of a simulated concurrent writer, committed just before the next write to
    /// their stream (see [`MemoryEventStore::interleave`]).
    interleaved: HashMap<StreamId, Vec<AppendRequest>>,
}

/// The in-memory event store: streams, the global log, the outbox and snapshots, behind one
/// lock. Clones share the same data.
///
/// Appends are serialized, so the global log is in commit order and readers never see a gap.
///
/// ```
/// use es_core::memory::MemoryEventStore;
/// use es_core::{AppendRequest, EventStore, ExpectedVersion, StreamId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryEventStore::new();
/// let stream = StreamId::new("counter-1")?;
/// let outcome = store.append(AppendRequest::new(stream.clone(), ExpectedVersion::Any)).await?;
/// assert_eq!(outcome.last_version.get(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryEventStore {
    pub(super) state: Arc<Mutex<State>>,
    outbox: MemoryOutbox,
    pub(super) inbox: MemoryInbox,
    signal: AppendSignal,
    clock: Arc<dyn Clock>,
    max_event_size: usize,
    options: SubscriptionOptions,
}

impl fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("MemoryEventStore")
            .field("streams", &state.streams.len())
            .field("events", &state.log.len())
            .field("outbox", &self.outbox.len())
            .finish()
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryEventStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            outbox: MemoryOutbox::new(),
            inbox: MemoryInbox::new(),
            signal: AppendSignal::new(),
            clock: Arc::new(SystemClock),
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            options: SubscriptionOptions::default(),
        }
    }

    /// Writes outbox messages to `outbox` (shared, for example, with a saga store so that one
    /// relay reads both).
    #[must_use]
    pub fn with_outbox(mut self, outbox: MemoryOutbox) -> Self {
        self.outbox = outbox;
        self
    }

    /// Whether `other` is a clone of this store (the same data).
    pub fn shares_state_with(&self, other: &MemoryEventStore) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// The outbox this store writes to.
    pub fn outbox(&self) -> &MemoryOutbox {
        &self.outbox
    }

    /// Keeps the records of handled messages of its transactions
    /// ([`StoreTransaction::record_handled`](crate::StoreTransaction::record_handled)) in
    /// `inbox` (shared, for example, with handlers that use the [`Inbox`](crate::Inbox) port).
    #[must_use]
    pub fn with_inbox(mut self, inbox: MemoryInbox) -> Self {
        self.inbox = inbox;
        self
    }

    /// The inbox its transactions record handled messages in.
    pub fn inbox(&self) -> &MemoryInbox {
        &self.inbox
    }

    /// Simulates a concurrent writer: `request` commits just before the next write to its
    /// stream (a plain append, or an append or commit of a transaction), so that write finds
    /// the stream moved and fails with a [`Conflict`]. Lets conflict retries and re-runs be
    /// tested without a real race. Several interleaved appends to one stream commit one
    /// before each of the next writes, in order; one that fails (a deleted stream, say) is
    /// dropped.
    ///
    /// ```
    /// use es_core::memory::MemoryEventStore;
    /// use es_core::{AppendRequest, EventStore, ExpectedVersion, StoreError, StreamId};
    ///
    /// # futures::executor::block_on(async {
    /// let store = MemoryEventStore::new();
    /// let stream = StreamId::new("account-1")?;
    /// store.interleave(AppendRequest::new(stream.clone(), ExpectedVersion::Any).with_events([]));
    /// let ok = store.append(AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)).await;
    /// assert!(ok.is_ok(), "an empty concurrent append does not move the stream");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn interleave(&self, request: AppendRequest) {
        lock(&self.state)
            .interleaved
            .entry(request.stream_id.clone())
            .or_default()
            .push(request);
    }

    /// Commits the next interleaved append waiting for `stream_id`, under the store's lock.
    pub(super) fn run_interleaved(&self, state: &mut State, stream_id: &StreamId) {
        let Some(waiting) = state.interleaved.get_mut(stream_id) else {
            return;
        };
        let request = waiting.remove(0);
        if waiting.is_empty() {
            state.interleaved.remove(stream_id);
        }
        match self.append_locked(state, request) {
            Ok(_) => self.signal.notify(),
            Err(error) => tracing::debug!(%error, "interleaved append dropped"),
        }
    }

    /// Uses `clock` for recorded times.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuses events whose JSON (data and metadata) exceeds `bytes`.
    #[must_use]
    pub fn with_max_event_size(mut self, bytes: usize) -> Self {
        self.max_event_size = bytes;
        self
    }

    /// Sets how subscriptions poll.
    #[must_use]
    pub fn with_subscription_options(mut self, options: SubscriptionOptions) -> Self {
        self.options = options;
        self
    }

    /// The signal fired after every append (for in-process readers such as projections).
    pub fn append_signal(&self) -> &AppendSignal {
        &self.signal
    }

    /// The append under the store's lock.
    pub(super) fn append_locked(
        &self,
        state: &mut State,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        if !request.expected.is_valid() {
            return Err(StoreError::InvalidExpectedVersion(request.stream_id));
        }
        self.check_sizes(&request)?;
        let recorded_at = self.clock.now();
        if let Some(outcome) = state.earlier_append(&request)? {
            return Ok(outcome);
        }
        if state
            .streams
            .get(&request.stream_id)
            .is_some_and(|s| s.deleted)
        {
            return Err(StoreError::StreamDeleted(request.stream_id));
        }
        let current = state.current_version(&request.stream_id);
        if !request.expected.matches(current) {
            return Err(Conflict {
                stream: request.stream_id,
                expected: request.expected,
                actual: current,
            }
            .into());
        }
        if request.events.is_empty() && request.outbox.is_empty() {
            return Ok(AppendOutcome {
                status: AppendStatus::Appended,
                last_version: current,
                positions: Vec::new(),
            });
        }
        state.commits += 1;
        let commit = state.commits;
        let mut positions = Vec::with_capacity(request.events.len());
        let mut version = current;
        let mut indexes = Vec::with_capacity(request.events.len());
        for event in request.events {
            state.sequence += 1;
            version = version.next();
            let position = Position::new(commit, state.sequence);
            positions.push(position);
            let index = state.log.len();
            state.event_ids.insert(event.event_id(), index);
            indexes.push(index);
            state.log.push(RecordedEvent {
                stream_id: request.stream_id.clone(),
                version,
                position,
                event_type: event.event_type,
                schema_version: event.schema_version,
                data: event.data,
                metadata: event.metadata,
                recorded_at,
            });
        }
        let stream_id = request.stream_id.clone();
        let stream = state.streams.entry(request.stream_id).or_default();
        if stream.stream_type.is_empty() {
            stream.stream_type = request.stream_type;
        }
        stream.events.extend(indexes);
        // Pushed under the store's lock: the events and their messages commit together.
        self.outbox.push_for_stream(&stream_id, request.outbox);
        Ok(AppendOutcome {
            status: AppendStatus::Appended,
            last_version: version,
            positions,
        })
    }

    pub(super) fn check_sizes(&self, request: &AppendRequest) -> Result<(), StoreError> {
        for event in &request.events {
            let size = serde_json::to_vec(&event.data).map_or(0, |v| v.len())
                + serde_json::to_vec(&event.metadata).map_or(0, |v| v.len());
            if size > self.max_event_size {
                return Err(StoreError::PayloadTooLarge {
                    stream: request.stream_id.clone(),
                    event_id: event.event_id(),
                    size,
                    limit: self.max_event_size,
                });
            }
        }
        Ok(())
    }
}

impl State {
    /// Whether `stream_id` is soft-deleted.
    pub(super) fn is_deleted(&self, stream_id: &StreamId) -> bool {
        self.streams.get(stream_id).is_some_and(|s| s.deleted)
    }

    /// Whether `event_id` is stored.
    pub(super) fn has_event(&self, event_id: EventId) -> bool {
        self.event_ids.contains_key(&event_id)
    }

    /// The stored events of `stream_id` that `read` selects.
    pub(super) fn read(&self, stream_id: &StreamId, read: StreamRead) -> Vec<RecordedEvent> {
        let Some(stream) = self.streams.get(stream_id) else {
            return Vec::new();
        };
        let limit = read.limit.unwrap_or(usize::MAX);
        let pick = |&index: &usize| {
            let event = &self.log[index];
            read.admits(event.version).then(|| event.clone())
        };
        match read.direction {
            Direction::Forward => stream.events.iter().filter_map(pick).take(limit).collect(),
            Direction::Backward => stream
                .events
                .iter()
                .rev()
                .filter_map(pick)
                .take(limit)
                .collect(),
        }
    }

    /// Saves `snapshot` if its stream is live at its version and no newer one is stored.
    pub(super) fn save_snapshot(&mut self, snapshot: Snapshot) {
        // Only for a live stream that has reached the snapshot's version: a snapshot saved
        // just after a hard delete must not bring the erased state back.
        let live = self.streams.get(&snapshot.stream_id).is_some_and(|stream| {
            !stream.deleted && stream.events.len() as u64 >= snapshot.version.get()
        });
        if !live {
            return;
        }
        let keep_old = self.snapshots.get(&snapshot.stream_id).is_some_and(|old| {
            old.snapshot_version == snapshot.snapshot_version && old.version > snapshot.version
        });
        if !keep_old {
            self.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        }
    }

    /// Removes every trace of a stream and rebuilds the indexes (erasure is rare).
    fn erase(&mut self, stream_id: &StreamId) {
        self.log.retain(|event| &event.stream_id != stream_id);
        self.streams.remove(stream_id);
        self.snapshots.remove(stream_id);
        self.event_ids.clear();
        for stream in self.streams.values_mut() {
            stream.events.clear();
        }
        for (index, event) in self.log.iter().enumerate() {
            self.event_ids.insert(event.event_id(), index);
            if let Some(stream) = self.streams.get_mut(&event.stream_id) {
                stream.events.push(index);
            }
        }
    }

    pub(super) fn current_version(&self, stream_id: &StreamId) -> Version {
        self.streams
            .get(stream_id)
            .map_or(Version::ZERO, |s| Version::new(s.events.len() as u64))
    }

    /// `Some(outcome)` when the request repeats an earlier append exactly; an error when one
    /// of its ids is stored but not as such a repeat.
    pub(super) fn earlier_append(
        &self,
        request: &AppendRequest,
    ) -> Result<Option<AppendOutcome>, StoreError> {
        let mut seen = HashSet::with_capacity(request.events.len());
        let mut stored = Vec::new();
        for event in &request.events {
            let id = event.event_id();
            if !seen.insert(id) {
                return Err(StoreError::DuplicateEventId {
                    stream: request.stream_id.clone(),
                    event_id: id,
                    existing_stream: request.stream_id.clone(),
                });
            }
            if let Some(&index) = self.event_ids.get(&id) {
                stored.push((id, index));
            }
        }
        let Some(&(first_id, first_index)) = stored.first() else {
            return Ok(None);
        };
        let first = &self.log[first_index];
        let repeat = stored.len() == request.events.len()
            && first.stream_id == request.stream_id
            && request
                .expected
                .matches(Version::new(first.version.get() - 1))
            && stored.iter().enumerate().all(|(offset, &(_, index))| {
                let event = &self.log[index];
                event.stream_id == request.stream_id
                    && event.version == first.version.add(offset as u64)
            });
        if !repeat {
            let (event_id, index) = stored
                .iter()
                .copied()
                .find(|&(_, index)| self.log[index].stream_id != request.stream_id)
                .unwrap_or((first_id, first_index));
            return Err(StoreError::DuplicateEventId {
                stream: request.stream_id.clone(),
                event_id,
                existing_stream: self.log[index].stream_id.clone(),
            });
        }
        let positions = stored.iter().map(|&(_, i)| self.log[i].position).collect();
        let last_version = first.version.add(request.events.len() as u64 - 1);
        Ok(Some(AppendOutcome {
            status: AppendStatus::AlreadyAppended,
            last_version,
            positions,
        }))
    }
}

impl EventStore for MemoryEventStore {
    async fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let started = std::time::Instant::now();
        let events = request.events.len();
        let span = telemetry::append_span("memory", "memory", &request.stream_id, events);
        let _entered = span.enter();
        let outcome = {
            let mut state = lock(&self.state);
            self.run_interleaved(&mut state, &request.stream_id);
            self.append_locked(&mut state, request)?
        };
        if outcome.status == AppendStatus::Appended {
            telemetry::record_append("memory", events, started);
            self.signal.notify();
        }
        Ok(outcome)
    }

    async fn delete_stream(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<Option<Position>, StoreError> {
        if !expected.is_valid() {
            return Err(StoreError::InvalidExpectedVersion(stream_id.clone()));
        }
        match mode {
            DeleteMode::Soft => {
                let tombstone = NewEvent {
                    event_type: TOMBSTONE_EVENT_TYPE.to_owned(),
                    schema_version: 1,
                    data: serde_json::json!({}),
                    metadata: CommandContext::new().metadata(self.clock.as_ref()),
                };
                let outcome = {
                    let mut state = lock(&self.state);
                    let stream_type = state
                        .streams
                        .get(stream_id)
                        .map(|s| s.stream_type.clone())
                        .unwrap_or_default();
                    let request = AppendRequest::new(stream_id.clone(), expected)
                        .with_stream_type(stream_type)
                        .with_events([tombstone]);
                    let outcome = self.append_locked(&mut state, request)?;
                    if let Some(stream) = state.streams.get_mut(stream_id) {
                        stream.deleted = true;
                    }
                    outcome
                };
                self.signal.notify();
                Ok(outcome.positions.first().copied())
            }
            DeleteMode::Hard => {
                let mut state = lock(&self.state);
                let current = state.current_version(stream_id);
                if !expected.matches(current) {
                    return Err(Conflict {
                        stream: stream_id.clone(),
                        expected,
                        actual: current,
                    }
                    .into());
                }
                state.erase(stream_id);
                self.outbox.erase_stream(stream_id);
                Ok(None)
            }
        }
    }

    fn read_stream<'a>(
        &'a self,
        stream_id: &'a StreamId,
        read: StreamRead,
    ) -> BoxStream<'a, Result<RecordedEvent, StoreError>> {
        let events = lock(&self.state).read(stream_id, read);
        stream::iter(events.into_iter().map(Ok)).boxed()
    }

    async fn stream_version(&self, stream_id: &StreamId) -> Result<Version, StoreError> {
        Ok(lock(&self.state).current_version(stream_id))
    }

    async fn read_log(
        &self,
        after: Position,
        filter: &LogFilter,
        limit: usize,
    ) -> Result<LogBatch, StoreError> {
        let state = lock(&self.state);
        let start = state.log.partition_point(|e| e.position <= after);
        let mut events = Vec::new();
        let mut checkpoint = after;
        let mut scanned = start;
        for event in &state.log[start..] {
            if events.len() >= limit {
                break;
            }
            scanned += 1;
            checkpoint = event.position;
            let stream_type = state
                .streams
                .get(&event.stream_id)
                .map_or("", |s| s.stream_type.as_str());
            if filter.accepts(stream_type, &event.event_type) {
                events.push(event.clone());
            }
        }
        Ok(LogBatch {
            events,
            checkpoint,
            reached_end: scanned == state.log.len(),
            held_back: false,
        })
    }

    fn subscribe(
        &self,
        after: Position,
        filter: LogFilter,
    ) -> BoxStream<'static, Result<SubscriptionItem, StoreError>> {
        poll_subscription(self.clone(), after, filter, self.options, &self.signal)
    }
}

impl SnapshotStore for MemoryEventStore {
    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        Ok(lock(&self.state).snapshots.get(stream_id).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        lock(&self.state).save_snapshot(snapshot);
        Ok(())
    }
}

impl OutboxSource for MemoryEventStore {
    async fn read_outbox(&self, after: Position, limit: usize) -> Result<OutboxBatch, StoreError> {
        self.outbox.read_outbox(after, limit).await
    }

    async fn delete_outbox_up_to(&self, up_to: Position) -> Result<u64, StoreError> {
        self.outbox.delete_outbox_up_to(up_to).await
    }
}
