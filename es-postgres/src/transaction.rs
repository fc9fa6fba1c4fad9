//! Transactions that append to several streams and write other rows atomically.

use std::fmt;

use deadpool_postgres::Object;
use es_core::{AppendOutcome, AppendRequest, AppendStatus, StoreError, StreamId};

use crate::error::{PgError, backend};
use crate::store::{PgEventStore, append_on};

/// A transaction of the store's database in which appends, outbox rows and the caller's own
/// rows (read models, inbox records, saga state) commit together.
///
/// It locks every stream it names, in sorted order, as its first statement: before anything
/// assigns it a transaction id. That keeps each stream in version order in the global log.
/// An append to a stream it did not name, after the transaction already holds an id, is
/// refused with [`PgError::LocksNotTakenFirst`]. Write inbox records and read models after
/// the appends, not before.
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
        // Pipelined: BEGIN and the locks travel together.
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
        let (begun, locked) = futures::join!(
            client.batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED"),
            client.execute(&lock, &params)
        );
        let transaction = PgTransaction {
            store: self.clone(),
            client: Some(client),
            appended: false,
        };
        begun.map_err(backend)?;
        locked.map_err(backend)?;
        Ok(transaction)
    }

    /// Begins a transaction that locks no stream, for inbox records, checkpoints and read
    /// models (see [`PgInbox`](crate::PgInbox)).
    ///
    /// An append as its first write still keeps its stream in order (it locks the stream
    /// before anything has assigned the transaction an id); after any write, an append to a
    /// stream it has not locked is refused with [`PgError::LocksNotTakenFirst`]. To append
    /// after other writes, or to several streams, use [`transaction`](Self::transaction)
    /// naming the streams.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when no connection is available or the server fails.
    pub async fn begin(&self) -> Result<PgTransaction, StoreError> {
        self.begin_unlocked().await.map_err(StoreError::from)
    }

    pub(crate) async fn begin_unlocked(&self) -> Result<PgTransaction, PgError> {
        let client = self.inner.pool.get().await?;
        let transaction = PgTransaction {
            store: self.clone(),
            client: Some(client),
            appended: false,
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

    /// Appends inside this transaction (see [`EventStore::append`](es_core::EventStore::append)).
    ///
    /// # Errors
    /// As [`EventStore::append`](es_core::EventStore::append), and
    /// [`PgError::LocksNotTakenFirst`] (inside [`StoreError::Backend`]) for a stream this
    /// transaction did not lock while it already holds a transaction id.
    pub async fn append(&mut self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let client = self.open()?;
        let outcome = append_on(&self.store.inner, client, request).await?;
        if outcome.status == AppendStatus::Appended && !outcome.positions.is_empty() {
            self.appended = true;
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
        let client = self
            .client
            .take()
            .ok_or_else(|| PgError::Config(FINISHED.to_owned()))?;
        // In a transaction an earlier failure aborted, COMMIT silently rolls back; the probe
        // fails there instead (with 25P02), and then COMMIT is not run.
        if let Err(error) = client.batch_execute("SELECT 1; COMMIT").await {
            // The transaction may still be open: never hand this connection to the pool.
            drop(Object::take(client));
            return Err(error.into());
        }
        if self.appended {
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
        if let Some(client) = self.client.take()
            && let Err(error) = client.batch_execute("ROLLBACK").await
        {
            drop(Object::take(client));
            return Err(backend(error));
        }
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
