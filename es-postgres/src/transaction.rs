//! Transactions that append to several streams and write other rows atomically.

use std::fmt;
use tracing::Instrument as _;

use deadpool_postgres::Object;
use es_core::{
    AppendOutcome, AppendRequest, AppendStatus, Committed, Position, RecordedEvent, Snapshot,
    StoreError, StoreTransaction, StreamId, StreamRead, TransactionalStore, Version,
};
use uuid::Uuid;

use crate::error::{PgError, backend};
use crate::store::{PgEventStore, append_on};

/// A transaction of the store's database in which appends, outbox rows and the caller's own
/// rows (read models, inbox records, saga state) commit together.
///
/// It locks every stream it names, in sorted order, as its first statement: before anything
/// assigns it a transaction id. That keeps each stream in version order in the global log.
/// An append to a stream it did not name, after the transaction already holds an id, is
/// refused with [`StoreError::StreamNotLocked`]. Write inbox records and read models after
/// the appends, not before. It is the [`StoreTransaction`] of [`PgEventStore`]; a
/// [`UnitOfWork`](es_core::UnitOfWork) runs a closure in one and runs it again when it
/// conflicts or needs a stream locked.
///
/// Dropping it without [`commit`](Self::commit) rolls back (its connection is closed).
///
/// ```no_run
/// use es_core::{AppendRequest, ExpectedVersion, StreamId};
/// use es_postgres::PgEventStore;
///
/// # async fn transfer(store: &PgEventStore, from: StreamId, to: StreamId,
/// #     debit: Vec<es_core::NewEvent>, credit: Vec<es_core::NewEvent>) -> Result<(), Box<dyn std::error::Error>> {
/// let mut transaction = store.transaction([&from, &to]).await?;
/// transaction.append(AppendRequest::new(from, ExpectedVersion::StreamExists).with_events(debit)).await?;
/// transaction.append(AppendRequest::new(to, ExpectedVersion::StreamExists).with_events(credit)).await?;
/// transaction
///     .client()
///     .execute("UPDATE balances SET pending = pending + 1 WHERE id = $1", &[&"transfers"])
///     .await?;
/// transaction.commit().await?;
/// # Ok(())
/// # }
/// ```
pub struct PgTransaction {
    store: PgEventStore,
    client: Option<Object>,
    appended: bool,
    /// Every position appended, for [`Committed`].
    positions: Vec<Position>,
    /// When it began (the duration recorded for its appends at commit).
    begun: std::time::Instant,
}

impl fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgTransaction")
            .field("schema", &self.store.schema())
            .field("open", &self.client.is_some())
            .finish()
    }
}

impl PgEventStore {
    /// Begins a transaction that locks `streams` (sorted, deduplicated) first.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when no connection is available or the server fails.
    pub async fn transaction<'a>(
        &self,
        streams: impl IntoIterator<Item = &'a StreamId>,
    ) -> Result<PgTransaction, StoreError> {
        let mut ids: Vec<&str> = streams.into_iter().map(StreamId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let client = self.inner.pool.get().await.map_err(backend)?;
        let lock = client
            .prepare_cached(&self.inner.sql.lock_streams)
            .await
            .map_err(backend)?;
        // The transaction owns the connection before BEGIN is sent: a caller dropped while
        // BEGIN and the locks are in flight (its task aborted) closes the connection instead
        // of handing the pool one whose transaction is open and holds stream locks.
        let transaction = PgTransaction {
            store: self.clone(),
            client: Some(client),
            appended: false,
            positions: Vec::new(),
            begun: std::time::Instant::now(),
        };
        let client = transaction.open()?;
        // Pipelined: BEGIN and the locks travel together.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let (begun, locked) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.execute(&lock, &params)
        );
        begun.map_err(backend)?;
        locked.map_err(backend)?;
        Ok(transaction)
    }

    pub(crate) async fn begin_unlocked(&self) -> Result<PgTransaction, PgError> {
        let client = self.inner.pool.get().await?;
        let transaction = PgTransaction {
            store: self.clone(),
            client: Some(client),
            appended: false,
            positions: Vec::new(),
            begun: std::time::Instant::now(),
        };
        transaction
            .connection()?
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        Ok(transaction)
    }
}

const FINISHED: &str = "the transaction is already finished";

impl PgTransaction {
    fn open(&self) -> Result<&Object, StoreError> {
        self.connection().map_err(StoreError::from)
    }

    /// The open connection (its statement cache included).
    pub(crate) fn connection(&self) -> Result<&Object, PgError> {
        self.client
            .as_ref()
            .ok_or_else(|| PgError::Config(FINISHED.to_owned()))
    }

    /// Appends inside this transaction (see [`EventStore::append`](es_core::EventStore::append)),
    /// returning the positions too (the same append as [`StoreTransaction::append`]).
    ///
    /// # Errors
    /// As [`EventStore::append`](es_core::EventStore::append), and
    /// [`StoreError::StreamNotLocked`] for a stream this transaction did not lock while it
    /// already holds a transaction id.
    pub async fn append(&mut self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let client = self.open()?;
        let span = es_core::telemetry::append_span(
            "postgresql",
            self.store.schema(),
            &request.stream_id,
            request.events.len(),
        );
        let outcome = append_on(&self.store.inner, client, request)
            .instrument(span)
            .await?;
        if outcome.status == AppendStatus::Appended && !outcome.positions.is_empty() {
            self.appended = true;
            self.positions.extend_from_slice(&outcome.positions);
        }
        Ok(outcome)
    }

    /// The connection, inside the transaction, for the caller's own statements.
    ///
    /// # Panics
    /// Never: a finished transaction is consumed by `commit` or `rollback`.
    pub fn client(&self) -> &tokio_postgres::Client {
        match &self.client {
            Some(client) => client,
            None => unreachable!("a PgTransaction is consumed when it finishes"),
        }
    }

    /// `query` prepared on this transaction's connection, once per connection: the pool
    /// keeps each connection's prepared statements, so a statement run in every transaction
    /// (a projection's upsert, say) is parsed and planned once, not on every run, and costs
    /// one round trip instead of two.
    ///
    /// # Errors
    /// The database's, when `query` does not prepare.
    pub async fn prepare_cached(
        &self,
        query: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        match &self.client {
            Some(client) => client.prepare_cached(query).await,
            None => unreachable!("a PgTransaction is consumed when it finishes"),
        }
    }

    /// The schema of the store this transaction writes to.
    pub fn schema(&self) -> &str {
        self.store.schema()
    }

    /// Commits everything written in the transaction.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the commit fails, nothing being written then; in
    /// particular when an earlier statement failed and the server rolled the transaction back
    /// (SQLSTATE `25P02`, see [`PgError::code`]), which a bare `COMMIT` would not report.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.finish().await.map_err(StoreError::from)
    }

    pub(crate) async fn finish(mut self) -> Result<(), PgError> {
        // In a transaction an earlier failure aborted, COMMIT silently rolls back; the probe
        // fails there instead (with 25P02), and then COMMIT is not run. On that failure, or
        // when the caller is dropped before the answer, the transaction may still be open:
        // `self` keeps the connection until COMMIT answered, so that its drop closes the
        // connection rather than handing it to the pool.
        self.connection()?.batch_execute("SELECT 1; COMMIT").await?;
        // Committed: the connection goes back to the pool.
        drop(self.client.take());
        if self.appended {
            es_core::telemetry::record_append(
                self.store.schema(),
                self.positions.len(),
                self.begun,
            );
            self.store.inner.signal.notify();
        }
        Ok(())
    }

    /// Rolls back everything written in the transaction.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the server cannot be told (it rolls back anyway when the
    /// connection closes).
    pub async fn rollback(mut self) -> Result<(), StoreError> {
        // As in `finish`: `self` keeps the connection until the server answered, so that a
        // failure, or a caller dropped meanwhile, closes it.
        self.open()?
            .batch_execute("ROLLBACK")
            .await
            .map_err(backend)?;
        drop(self.client.take());
        Ok(())
    }
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Closing the connection rolls the transaction back; returning it to the pool
            // would hand an open transaction to the next user.
            drop(Object::take(client));
        }
    }
}

impl StoreTransaction for PgTransaction {
    async fn append(&mut self, request: AppendRequest) -> Result<Version, StoreError> {
        PgTransaction::append(self, request)
            .await
            .map(|outcome| outcome.last_version)
    }

    async fn read_stream(
        &mut self,
        stream_id: &StreamId,
        read: StreamRead,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let client = self.open()?;
        self.store.read_stream_on(client, stream_id, read).await
    }

    async fn load_snapshot(
        &mut self,
        stream_id: &StreamId,
    ) -> Result<Option<Snapshot>, StoreError> {
        let client = self.open()?;
        self.store.load_snapshot_on(client, stream_id).await
    }

    async fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let client = self.open()?;
        self.store.save_snapshot_on(client, snapshot).await
    }

    async fn is_handled(&mut self, subscriber: &str, message_id: Uuid) -> Result<bool, StoreError> {
        let client = self.open()?;
        let statement = client
            .prepare_cached(&self.store.inner.sql.is_handled)
            .await
            .map_err(backend)?;
        let row = client
            .query_one(&statement, &[&subscriber, &message_id])
            .await
            .map_err(backend)?;
        Ok(row.get(0))
    }

    async fn record_handled(
        &mut self,
        subscriber: &str,
        message_id: Uuid,
    ) -> Result<bool, StoreError> {
        let client = self.open()?;
        let statement = client
            .prepare_cached(&self.store.inner.sql.record_handled)
            .await
            .map_err(backend)?;
        let inserted = client
            .execute(&statement, &[&subscriber, &message_id])
            .await
            .map_err(backend)?;
        Ok(inserted == 1)
    }

    async fn commit(self) -> Result<Committed, StoreError> {
        let positions = self.positions.clone();
        self.finish().await?;
        Ok(Committed::new(positions))
    }
}

impl TransactionalStore for PgEventStore {
    type Transaction = PgTransaction;

    /// Begins a transaction that locks `streams` first (see [`PgEventStore::transaction`]).
    /// With no stream it locks nothing, for checkpoints and read models: an append as its
    /// first write still keeps its stream in order (it locks the stream before anything has
    /// assigned the transaction an id); after any write, an append to a stream it has not
    /// locked is refused with [`StoreError::StreamNotLocked`].
    async fn begin(&self, streams: &[StreamId]) -> Result<PgTransaction, StoreError> {
        if streams.is_empty() {
            return self.begin_unlocked().await.map_err(StoreError::from);
        }
        self.transaction(streams).await
    }
}
