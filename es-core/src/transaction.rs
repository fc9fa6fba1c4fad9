//! The store's transaction: appends to several streams, outbox messages, inbox records and
//! snapshots that commit together or not at all.

use std::future::Future;

use uuid::Uuid;

use crate::error::StoreError;
use crate::event::RecordedEvent;
use crate::ids::{Position, StreamId, Version};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{AppendRequest, EventStore, StreamRead};

/// What a committed transaction wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Committed {
    /// The global-log position of every event it appended, in the order appended.
    pub positions: Vec<Position>,
}

impl Committed {
    /// What a transaction that appended events at `positions` committed.
    pub fn new(positions: Vec<Position>) -> Self {
        Self { positions }
    }

    /// The position of the last event written, if it wrote any (for example to wait until a
    /// projection has passed it).
    pub fn last_position(&self) -> Option<Position> {
        self.positions.iter().max().copied()
    }
}

/// An open transaction of a [`TransactionalStore`]: its writes are invisible to others until
/// [`commit`](StoreTransaction::commit); dropping it rolls them back.
///
/// Every backend gives the same semantics, checked by
/// [`testing::store_contract`](crate::testing::store_contract):
/// - the streams named when it began are locked for it; an append to another stream is
///   accepted while the transaction has written nothing yet (the stream is locked then), and
///   refused with [`StoreError::StreamNotLocked`] afterwards, so that every stream appears in
///   the global log in version order. A [`UnitOfWork`](crate::UnitOfWork) begins again with
///   the stream named;
/// - an append checks its expected version against the stream as this transaction sees it
///   (its own appends included); [`commit`](StoreTransaction::commit) fails with
///   [`StoreError::Conflict`] when a stream it appended to moved meanwhile;
/// - [`is_handled`](StoreTransaction::is_handled) is a read and writes nothing, so checking
///   idempotence first never takes the place of the locks; [`record_handled`](StoreTransaction::record_handled)
///   is written after the effects and waits while another open transaction holds the same
///   record.
pub trait StoreTransaction: Send {
    /// Appends inside the transaction and returns the stream's version after it.
    ///
    /// # Errors
    /// As [`EventStore::append`], and [`StoreError::StreamNotLocked`] (see above).
    fn append(
        &mut self,
        request: AppendRequest,
    ) -> impl Future<Output = Result<Version, StoreError>> + Send;

    /// Reads events of one stream as this transaction sees them (its own appends included).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn read_stream(
        &mut self,
        stream_id: &StreamId,
        read: StreamRead,
    ) -> impl Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send;

    /// The latest snapshot of `stream_id` as this transaction sees it.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn load_snapshot(
        &mut self,
        stream_id: &StreamId,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Saves a snapshot with the transaction (see [`SnapshotStore::save_snapshot`]).
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn save_snapshot(
        &mut self,
        snapshot: Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether `subscriber` has already handled `message_id` (a committed record). A read: it
    /// writes nothing and takes no lock.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn is_handled(
        &mut self,
        subscriber: &str,
        message_id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that `subscriber` handled `message_id`, committed with the transaction: `true`
    /// when the record is new, `false` when it already exists (committed, or earlier in this
    /// transaction). Waits while another open transaction holds the same record, then reports
    /// a duplicate if that one committed. Write it after the effects.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn record_handled(
        &mut self,
        subscriber: &str,
        message_id: Uuid,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Commits every write of the transaction.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a stream it appended to moved meanwhile (nothing is
    /// written); [`StoreError::Backend`] when the backend fails (nothing is written).
    fn commit(self) -> impl Future<Output = Result<Committed, StoreError>> + Send;
}

/// An [`EventStore`] whose writes can be grouped in a [`StoreTransaction`].
///
/// ```
/// use es_core::memory::MemoryEventStore;
/// use es_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, CommandContext, SystemClock, StoreTransaction, StreamId, TransactionalStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryEventStore::new();
/// let (from, to) = (StreamId::new("account-1")?, StreamId::new("account-2")?);
/// let event = |kind: &str| NewEvent {
///     event_type: kind.into(),
///     schema_version: 1,
///     data: serde_json::json!({ "amount": 10 }),
///     metadata: CommandContext::new().metadata(&SystemClock),
/// };
/// let mut tx = store.begin(&[from.clone(), to.clone()]).await?;
/// tx.append(AppendRequest::new(from.clone(), ExpectedVersion::Any).with_events([event("Debited")])).await?;
/// tx.append(AppendRequest::new(to.clone(), ExpectedVersion::Any).with_events([event("Credited")])).await?;
/// assert!(tx.record_handled("transfers", uuid::Uuid::now_v7()).await?);
/// let committed = tx.commit().await?;
/// assert_eq!(committed.positions.len(), 2);
/// assert_eq!(store.stream_version(&to).await?.get(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait TransactionalStore: EventStore + SnapshotStore + Clone + 'static {
    /// The transaction type.
    type Transaction: StoreTransaction + 'static;

    /// Begins a transaction that locks `streams` (sorted, deduplicated) before anything else.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the backend fails.
    fn begin(
        &self,
        streams: &[StreamId],
    ) -> impl Future<Output = Result<Self::Transaction, StoreError>> + Send;
}
