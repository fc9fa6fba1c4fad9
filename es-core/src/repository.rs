//! Load, decide, save: the command path of an aggregate.

use std::fmt;
use std::sync::Arc;

use futures::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::aggregate::Aggregate;
use crate::clock::{Clock, SystemClock};
use crate::error::{Conflict, StoreError};
use crate::event::RecordedEvent;
use crate::event::{CodecError, DecodeError, NewEvent};
use crate::ids::{ExpectedVersion, Position, StreamId, Version};
use crate::metadata::{CommandContext, Metadata};
use crate::outbox::OutboxMessage;
use crate::privacy::{Privacy, PrivacyError};
use crate::registry::EventRegistry;
use crate::snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
use crate::store::{AppendRequest, AppendStatus, EventStore, StreamRead, TOMBSTONE_EVENT_TYPE};
use crate::transaction::StoreTransaction;
use crate::unit::{Rerun, UnitError};
use tracing::Instrument as _;

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// The stream kept moving: every attempt allowed by the retry policy conflicted.
    #[error(transparent)]
    Conflict(Conflict),
    /// A stored event could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A new event, or an outbox message it causes, could not be encoded.
    #[error("cannot encode a new event or message: {0}")]
    Encode(#[source] CodecError),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// Personal data could not be encrypted or decrypted (see [`Repository::with_privacy`]).
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
}

impl<E: std::error::Error + 'static> From<StoreError> for RepositoryError<E> {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(conflict) => Self::Conflict(conflict),
            other => Self::Store(other),
        }
    }
}

impl<E: std::error::Error + 'static> UnitError for RepositoryError<E> {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Conflict(conflict) => Some(Rerun::Conflict(conflict)),
            Self::Store(error) => error.rerun(),
            _ => None,
        }
    }
}

/// An aggregate's state as loaded, with the version it was folded up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The stream's version the state includes ([`Version::ZERO`] for a new aggregate).
    pub version: Version,
}

/// What a successful command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The state after the new events.
    pub state: A,
    /// The stream's version after the command.
    pub version: Version,
    /// The events the command produced (empty when it decided nothing).
    pub events: Vec<A::Event>,
    /// Their positions in the global log.
    pub positions: Vec<Position>,
}

impl<A: Aggregate> Executed<A> {
    /// A command that decided nothing: the state as loaded at `version`.
    fn unchanged(state: A, version: Version) -> Self {
        Self {
            state,
            version,
            events: Vec::new(),
            positions: Vec::new(),
        }
    }
}

type OutboxFn<A> = dyn Fn(
        &StreamId,
        &A,
        &[(<A as Aggregate>::Event, Metadata)],
    ) -> Result<Vec<OutboxMessage>, CodecError>
    + Send
    + Sync;

struct Snapshots<A> {
    policy: SnapshotPolicy,
    encode: fn(&A) -> Result<Value, serde_json::Error>,
    decode: fn(Value) -> Result<A, serde_json::Error>,
}

/// Loads aggregates from a store, runs commands and saves the events and outbox messages they
/// produce in one atomic append, with optimistic concurrency.
///
/// ```
/// # use es_core::{Aggregate, DomainEvent, EventType};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Serialize, Deserialize)]
/// # struct Counter { value: u32 }
/// # #[derive(Debug)]
/// # enum CounterCommand { Increment(u32) }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { #[serde(rename = "CounterIncremented")] Incremented { by: u32 } }
/// # impl DomainEvent for CounterEvent {
/// #     const EVENT_TYPES: &'static [EventType] = &[EventType::new("CounterIncremented")];
/// #     fn event_type(&self) -> &'static str { "CounterIncremented" }
/// # }
/// # #[derive(Debug, thiserror::Error)]
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
/// use es_core::memory::MemoryEventStore;
/// use es_core::{CommandContext, OutboxMessage, Repository, RepositoryError, SnapshotPolicy, StreamId};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryEventStore::new();
/// let counters = Repository::<Counter, _>::new(store.clone())
///     .with_conflict_retries(3)
///     .with_snapshots(SnapshotPolicy::EveryNEvents(100))
///     .with_outbox(|stream, state: &Counter, _events| {
///         vec![OutboxMessage::new("CounterChanged", stream.as_str(), serde_json::json!({ "value": state.value }))]
///     });
///
/// let id = StreamId::for_aggregate(Counter::TYPE, 1)?;
/// let context = CommandContext::new().with_actor("alice");
/// let done = counters.execute(&id, &CounterCommand::Increment(40), &context).await?;
/// assert_eq!((done.state.value, done.version.get()), (40, 1));
///
/// let refused = counters.execute(&id, &CounterCommand::Increment(70), &context).await;
/// assert!(matches!(refused, Err(RepositoryError::Rejected(TooHigh))));
/// assert_eq!(counters.load(&id).await?.state.value, 40);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Repository<A: Aggregate, S> {
    store: S,
    registry: Arc<EventRegistry>,
    clock: Arc<dyn Clock>,
    conflict_retries: u32,
    snapshots: Option<Snapshots<A>>,
    outbox: Option<Arc<OutboxFn<A>>>,
    privacy: Option<Privacy>,
}

impl<A: Aggregate> Clone for Snapshots<A> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy,
            encode: self.encode,
            decode: self.decode,
        }
    }
}

impl<A: Aggregate, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            registry: Arc::clone(&self.registry),
            clock: Arc::clone(&self.clock),
            conflict_retries: self.conflict_retries,
            snapshots: self.snapshots.clone(),
            outbox: self.outbox.clone(),
            privacy: self.privacy.clone(),
        }
    }
}

impl<A: Aggregate, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("store", &self.store)
            .field("conflict_retries", &self.conflict_retries)
            .field("snapshots", &self.snapshots.as_ref().map(|s| s.policy))
            .field("outbox", &self.outbox.is_some())
            .field("privacy", &self.privacy.is_some())
            .finish()
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: EventStore + SnapshotStore,
{
    /// A repository over `store`, with no retries, no snapshots and no outbox messages.
    pub fn new(store: S) -> Self {
        Self {
            store,
            registry: Arc::new(EventRegistry::new()),
            clock: Arc::new(SystemClock),
            conflict_retries: 0,
            snapshots: None,
            outbox: None,
            privacy: None,
        }
    }

    /// Encrypts the [`Personal`](crate::privacy::Personal) values of new events, outbox
    /// messages and snapshots with their subjects' keys before they are written, and decrypts
    /// them when they are read; a forgotten subject's values load as forgotten.
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// Uses `registry`'s upcasters when decoding stored events.
    #[must_use]
    pub fn with_registry(mut self, registry: Arc<EventRegistry>) -> Self {
        self.registry = registry;
        self
    }

    /// Uses `clock` for event timestamps.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// On a conflict, reloads and decides again up to `retries` more times (opt-in: only for
    /// commands whose decision is safe to recompute on newer state).
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Derives the outbox messages committed with each command's events.
    #[must_use]
    pub fn with_outbox<F>(self, outbox: F) -> Self
    where
        F: Fn(&StreamId, &A, &[(A::Event, Metadata)]) -> Vec<OutboxMessage> + Send + Sync + 'static,
    {
        self.with_fallible_outbox(move |stream, state, events| {
            Ok::<_, CodecError>(outbox(stream, state, events))
        })
    }

    /// Like [`with_outbox`](Self::with_outbox), for a function that can fail to build a
    /// message (serializing a payload can): its error fails the command with
    /// [`RepositoryError::Encode`] and nothing is written, so no message is ever sent
    /// half-built.
    #[must_use]
    pub fn with_fallible_outbox<F, E>(mut self, outbox: F) -> Self
    where
        F: Fn(&StreamId, &A, &[(A::Event, Metadata)]) -> Result<Vec<OutboxMessage>, E>
            + Send
            + Sync
            + 'static,
        E: Into<CodecError>,
    {
        self.outbox = Some(Arc::new(move |stream, state, events| {
            outbox(stream, state, events).map_err(Into::into)
        }));
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Folds the aggregate from its latest usable snapshot and the events after it.
    ///
    /// # Errors
    /// [`RepositoryError::Decode`] for an undecodable event; [`RepositoryError::Store`] with
    /// [`StoreError::StreamDeleted`] for a soft-deleted stream, or a store failure.
    pub async fn load(&self, stream_id: &StreamId) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let snapshot = match self.snapshots {
            Some(_) => {
                let snapshot = self.store.load_snapshot(stream_id).await;
                self.revealed(stream_id, snapshot).await
            }
            None => Ok(None),
        };
        let mut loaded = self.start_from(stream_id, snapshot);
        let read = StreamRead::forward().from(loaded.version.next());
        let mut events = self.store.read_stream(stream_id, read);
        if let Some(privacy) = &self.privacy {
            // Revealed together: each key is fetched once for the whole stream.
            let mut recorded: Vec<RecordedEvent> = events.try_collect().await?;
            privacy
                .reveal_all(recorded.iter_mut().map(|event| &mut event.data))
                .await?;
            for event in &recorded {
                self.fold(stream_id, &mut loaded, event)?;
            }
            return Ok(loaded);
        }
        while let Some(recorded) = events.try_next().await? {
            self.fold(stream_id, &mut loaded, &recorded)?;
        }
        Ok(loaded)
    }

    /// Like [`load`](Self::load), inside `tx`: the state includes the transaction's own
    /// appends.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn load_in<T: StoreTransaction>(
        &self,
        tx: &mut T,
        stream_id: &StreamId,
    ) -> Result<Loaded<A>, RepositoryError<A::Error>> {
        let snapshot = match self.snapshots {
            Some(_) => {
                let snapshot = tx.load_snapshot(stream_id).await;
                self.revealed(stream_id, snapshot).await
            }
            None => Ok(None),
        };
        let mut loaded = self.start_from(stream_id, snapshot);
        let read = StreamRead::forward().from(loaded.version.next());
        let mut recorded = tx.read_stream(stream_id, read).await?;
        if let Some(privacy) = &self.privacy {
            privacy
                .reveal_all(recorded.iter_mut().map(|event| &mut event.data))
                .await?;
        }
        for event in &recorded {
            self.fold(stream_id, &mut loaded, event)?;
        }
        Ok(loaded)
    }

    /// `snapshot` with its personal values decrypted; one that does not decrypt is not used
    /// (the events are replayed instead).
    async fn revealed(
        &self,
        stream_id: &StreamId,
        snapshot: Result<Option<Snapshot>, StoreError>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some(privacy) = &self.privacy else {
            return snapshot;
        };
        match snapshot {
            Ok(Some(mut snapshot)) => match privacy.reveal(&mut snapshot.state).await {
                Ok(_) => Ok(Some(snapshot)),
                Err(error) => {
                    tracing::warn!(stream = %stream_id, %error, "snapshot not decrypted; replaying all events");
                    Ok(None)
                }
            },
            other => other,
        }
    }

    /// Encrypts the personal values of the events and outbox messages of `request`.
    async fn protect(&self, request: &mut AppendRequest) -> Result<(), PrivacyError> {
        let Some(privacy) = &self.privacy else {
            return Ok(());
        };
        for event in &mut request.events {
            privacy.protect(&mut event.data).await?;
        }
        for message in &mut request.outbox {
            privacy.protect(&mut message.payload).await?;
        }
        Ok(())
    }

    /// `snapshot` with its personal values encrypted, or `None` (with a warning) when they
    /// cannot be: a snapshot is an optimisation, never a reason to fail a command.
    async fn protected(&self, stream_id: &StreamId, mut snapshot: Snapshot) -> Option<Snapshot> {
        let Some(privacy) = &self.privacy else {
            return Some(snapshot);
        };
        match privacy.protect(&mut snapshot.state).await {
            Ok(_) => Some(snapshot),
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "snapshot not encrypted; not saved");
                None
            }
        }
    }

    /// Folds one stored event into `loaded`.
    fn fold(
        &self,
        stream_id: &StreamId,
        loaded: &mut Loaded<A>,
        recorded: &RecordedEvent,
    ) -> Result<(), RepositoryError<A::Error>> {
        if recorded.event_type == TOMBSTONE_EVENT_TYPE {
            return Err(RepositoryError::Store(StoreError::StreamDeleted(
                stream_id.clone(),
            )));
        }
        let event: A::Event = recorded.decode(&self.registry)?;
        loaded.state.evolve(&event);
        loaded.version = recorded.version;
        Ok(())
    }

    /// Runs `command` inside `tx`: loads the aggregate as the transaction sees it, decides,
    /// and appends the events with their outbox messages (and a snapshot when due) to the
    /// transaction. Nothing is written until the caller commits; a conflict (here or at
    /// commit) means the whole unit must run again, which a [`UnitOfWork`](crate::UnitOfWork)
    /// does. [`Executed::positions`] is empty: positions are known once the transaction
    /// commits ([`Committed::positions`](crate::Committed::positions)).
    ///
    /// # Errors
    /// [`RepositoryError::Rejected`] when the aggregate refuses (the transaction holds nothing
    /// of the command); [`RepositoryError::Conflict`]; decode, encode and store errors,
    /// including [`StoreError::StreamNotLocked`].
    pub async fn execute_in<T: StoreTransaction>(
        &self,
        tx: &mut T,
        stream_id: &StreamId,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        async {
            let loaded = self.load_in(tx, stream_id).await?;
            self.decide_and_append(tx, stream_id, loaded, command, context)
                .await
        }
        .instrument(command_span::<A>(stream_id))
        .await
    }

    /// Like [`execute_in`](Self::execute_in), on the state `loaded` that the caller read with
    /// [`load_in`](Self::load_in) in the same transaction (to look at several aggregates
    /// before deciding on them, without reading each twice). The expected version is
    /// `loaded`'s, so a state from elsewhere conflicts rather than decide on stale data.
    ///
    /// # Errors
    /// As [`execute_in`](Self::execute_in).
    pub async fn execute_loaded_in<T: StoreTransaction>(
        &self,
        tx: &mut T,
        stream_id: &StreamId,
        loaded: Loaded<A>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        self.decide_and_append(tx, stream_id, loaded, command, context)
            .instrument(command_span::<A>(stream_id))
            .await
    }

    async fn decide_and_append<T: StoreTransaction>(
        &self,
        tx: &mut T,
        stream_id: &StreamId,
        loaded: Loaded<A>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let before = loaded.version;
        let mut decided = match self.decide(stream_id, loaded, command, context)? {
            Decision::Nothing(state) => return Ok(Executed::unchanged(state, before)),
            Decision::Append(decided) => decided,
        };
        self.protect(&mut decided.request).await?;
        let version = tx.append(decided.request).await?;
        if let Some(snapshot) = self.snapshot_if_due(stream_id, &decided.state, before, version)
            && let Some(snapshot) = self.protected(stream_id, snapshot).await
        {
            tx.save_snapshot(snapshot).await?;
        }
        Ok(Executed {
            state: decided.state,
            version,
            events: decided.events,
            positions: Vec::new(),
        })
    }

    fn start_from(
        &self,
        stream_id: &StreamId,
        snapshot: Result<Option<Snapshot>, StoreError>,
    ) -> Loaded<A> {
        self.usable_snapshot(stream_id, snapshot)
            .unwrap_or_else(|| Loaded {
                state: A::default(),
                version: Version::ZERO,
            })
    }

    /// Loads, decides and saves: the events (and outbox messages) commit atomically at the
    /// version the decision was made on. A command that decides nothing writes nothing.
    ///
    /// # Errors
    /// [`RepositoryError::Rejected`] when the aggregate refuses; [`RepositoryError::Conflict`]
    /// when the stream moved and retries (if any) ran out; decode, encode and store errors.
    pub async fn execute(
        &self,
        stream_id: &StreamId,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        self.execute_unspanned(stream_id, command, context)
            .instrument(command_span::<A>(stream_id))
            .await
    }

    async fn execute_unspanned(
        &self,
        stream_id: &StreamId,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let mut attempt = 0;
        loop {
            match self.try_execute(stream_id, command, context).await {
                Err(RepositoryError::Conflict(conflict)) if attempt < self.conflict_retries => {
                    attempt += 1;
                    tracing::debug!(%conflict, attempt, "retrying command after a conflict");
                }
                result => return result,
            }
        }
    }

    /// Like [`execute`](Self::execute), on the state `loaded` that the caller read with
    /// [`load`](Self::load) (to check or price the command from it without reading the stream
    /// twice). The expected version is `loaded`'s and it is never retried: a
    /// [`RepositoryError::Conflict`] means the stream moved since the load, and the caller
    /// loads again.
    ///
    /// # Errors
    /// As [`execute_expecting`](Self::execute_expecting).
    pub async fn execute_loaded(
        &self,
        stream_id: &StreamId,
        loaded: Loaded<A>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        self.decide_and_save(stream_id, loaded, command, context)
            .instrument(command_span::<A>(stream_id))
            .await
    }

    /// Like [`execute`](Self::execute), but only if the stream is still at `expected` (for
    /// example the version a client saw, sent back in an `If-Match` header); never retried.
    ///
    /// # Errors
    /// [`RepositoryError::Conflict`] when the stream is at another version; otherwise as
    /// [`execute`](Self::execute).
    pub async fn execute_expecting(
        &self,
        stream_id: &StreamId,
        expected: Version,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        self.execute_expecting_unspanned(stream_id, expected, command, context)
            .instrument(command_span::<A>(stream_id))
            .await
    }

    async fn execute_expecting_unspanned(
        &self,
        stream_id: &StreamId,
        expected: Version,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let loaded = self.load(stream_id).await?;
        if loaded.version != expected {
            return Err(RepositoryError::Conflict(Conflict {
                stream: stream_id.clone(),
                expected: ExpectedVersion::from_current(expected),
                actual: loaded.version,
            }));
        }
        self.decide_and_save(stream_id, loaded, command, context)
            .await
    }

    /// The registry whose upcasters decode stored events.
    pub fn registry(&self) -> &Arc<EventRegistry> {
        &self.registry
    }

    async fn try_execute(
        &self,
        stream_id: &StreamId,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let loaded = self.load(stream_id).await?;
        self.decide_and_save(stream_id, loaded, command, context)
            .await
    }

    async fn decide_and_save(
        &self,
        stream_id: &StreamId,
        loaded: Loaded<A>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, RepositoryError<A::Error>> {
        let before = loaded.version;
        let mut decided = match self.decide(stream_id, loaded, command, context)? {
            Decision::Nothing(state) => return Ok(Executed::unchanged(state, before)),
            Decision::Append(decided) => decided,
        };
        self.protect(&mut decided.request).await?;
        let outcome = self.store.append(decided.request).await?;
        if outcome.status == AppendStatus::AlreadyAppended {
            tracing::warn!(stream = %stream_id, "fresh event ids reported as already appended");
        }
        if let Some(snapshot) =
            self.snapshot_if_due(stream_id, &decided.state, before, outcome.last_version)
            && let Some(snapshot) = self.protected(stream_id, snapshot).await
        {
            // A snapshot is an optimisation: failing to take one must not fail the command.
            if let Err(error) = self.store.save_snapshot(snapshot).await {
                tracing::warn!(stream = %stream_id, %error, "snapshot not saved");
            }
        }
        Ok(Executed {
            state: decided.state,
            version: outcome.last_version,
            events: decided.events,
            positions: outcome.positions,
        })
    }

    /// Decides `command` on `loaded` and builds the append: events with their metadata, and
    /// the outbox messages they cause.
    fn decide(
        &self,
        stream_id: &StreamId,
        loaded: Loaded<A>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Decision<A>, RepositoryError<A::Error>> {
        let Loaded { mut state, version } = loaded;
        let events = state.decide(command).map_err(RepositoryError::Rejected)?;
        if events.is_empty() {
            return Ok(Decision::Nothing(state));
        }
        let mut new_events = Vec::with_capacity(events.len());
        let mut with_metadata = Vec::with_capacity(events.len());
        for event in events {
            let metadata = context.metadata(self.clock.as_ref());
            new_events.push(
                NewEvent::from_domain(&event, metadata.clone()).map_err(RepositoryError::Encode)?,
            );
            state.evolve(&event);
            with_metadata.push((event, metadata));
        }
        let outbox = match &self.outbox {
            Some(outbox) => {
                outbox(stream_id, &state, &with_metadata).map_err(RepositoryError::Encode)?
            }
            None => Vec::new(),
        };
        let request = AppendRequest::new(stream_id.clone(), ExpectedVersion::from_current(version))
            .with_stream_type(A::TYPE)
            .with_events(new_events)
            .with_outbox(outbox);
        Ok(Decision::Append(Decided {
            state,
            events: with_metadata.into_iter().map(|(event, _)| event).collect(),
            request,
        }))
    }

    /// The state of `snapshot` when it is usable (this aggregate's snapshot version, and
    /// decodable); a failed load or a bad snapshot means replaying every event.
    fn usable_snapshot(
        &self,
        stream_id: &StreamId,
        snapshot: Result<Option<Snapshot>, StoreError>,
    ) -> Option<Loaded<A>> {
        let snapshots = self.snapshots.as_ref()?;
        let snapshot = match snapshot {
            Ok(snapshot) => snapshot?,
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "snapshot unavailable; replaying all events");
                return None;
            }
        };
        if snapshot.snapshot_version != A::SNAPSHOT_VERSION {
            tracing::debug!(stream = %stream_id, stored = snapshot.snapshot_version, current = A::SNAPSHOT_VERSION, "ignoring a snapshot of another version");
            return None;
        }
        match (snapshots.decode)(snapshot.state) {
            Ok(state) => Some(Loaded {
                state,
                version: snapshot.version,
            }),
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "undecodable snapshot; replaying all events");
                None
            }
        }
    }

    /// The snapshot to save when the policy says one is due between `before` and `after`.
    fn snapshot_if_due(
        &self,
        stream_id: &StreamId,
        state: &A,
        before: Version,
        after: Version,
    ) -> Option<Snapshot> {
        let snapshots = self.snapshots.as_ref()?;
        if !snapshots.policy.due(before, after) {
            return None;
        }
        match (snapshots.encode)(state) {
            Ok(json) => Some(Snapshot {
                stream_id: stream_id.clone(),
                version: after,
                snapshot_version: A::SNAPSHOT_VERSION,
                state: json,
                taken_at: self.clock.now(),
            }),
            Err(error) => {
                tracing::warn!(stream = %stream_id, %error, "snapshot not encoded");
                None
            }
        }
    }
}

/// A command's decision, before it is written.
enum Decision<A: Aggregate> {
    /// It decided nothing: the state as loaded.
    Nothing(A),
    /// It decided events.
    Append(Decided<A>),
}

struct Decided<A: Aggregate> {
    state: A,
    events: Vec<A::Event>,
    request: AppendRequest,
}

impl<A, S> Repository<A, S>
where
    A: Aggregate + Serialize + DeserializeOwned,
    S: EventStore + SnapshotStore,
{
    /// Takes snapshots by `policy` and loads from them (the state must be serde-serializable).
    #[must_use]
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = Some(Snapshots {
            policy,
            encode: |state| serde_json::to_value(state),
            decode: serde_json::from_value,
        });
        self
    }
}

/// The span of one command: load, decide, append.
fn command_span<A: Aggregate>(stream_id: &StreamId) -> tracing::Span {
    tracing::info_span!(
        "command",
        otel.name = %format_args!("{} command", A::TYPE),
        es.aggregate_type = A::TYPE,
        es.stream_id = %stream_id,
    )
}
