//! `PgInbox`: the inbox table, written in the handler's transaction.

use std::fmt;

use es_core::{Inbox, InboxError};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::error::{PgError, boxed};
use crate::store::PgEventStore;
use crate::transaction::PgTransaction;

/// The PostgreSQL [`Inbox`]: a table with a primary key on (subscriber, message id), written
/// with `INSERT … ON CONFLICT DO NOTHING` inside a [`PgTransaction`].
///
/// A record of a pair another open transaction holds waits on the primary key, then reports a
/// duplicate if that transaction committed or records the pair if it rolled back. A wait cycle
/// is detected by the server (after its `deadlock_timeout`) and reported as
/// [`InboxError::Deadlock`].
///
/// [`Inbox::begin`] starts a transaction that locks no stream. A handler that also appends
/// events in the same transaction begins it with
/// [`PgEventStore::transaction`](crate::PgEventStore::transaction), naming those streams, and
/// records after its appends.
///
/// ```no_run
/// use es_core::Inbox;
/// use es_postgres::{PgEventStore, PgInbox};
/// use uuid::Uuid;
///
/// # async fn handle(store: &PgEventStore, message_id: Uuid) -> Result<(), Box<dyn std::error::Error>> {
/// let inbox = PgInbox::new(store);
/// let mut tx = inbox.begin().await?;
/// if inbox.record(&mut tx, "billing", message_id).await? {
///     tx.client()
///         .execute("UPDATE invoices SET paid = true WHERE message_id = $1", &[&message_id])
///         .await?;
/// }
/// inbox.commit(tx).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgInbox {
    store: PgEventStore,
}

impl fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgInbox")
            .field("schema", &self.store.schema())
            .finish()
    }
}

impl PgInbox {
    /// The inbox of `store`'s schema, on its pool.
    pub fn new(store: &PgEventStore) -> Self {
        Self {
            store: store.clone(),
        }
    }
}

impl PgEventStore {
    /// The inbox in this store's schema (see [`PgInbox`]).
    pub fn inbox(&self) -> PgInbox {
        PgInbox::new(self)
    }
}

/// Maps a failure inside an inbox transaction to the inbox's error.
fn inbox_error(error: PgError, subscriber: &str, message_id: Uuid) -> InboxError {
    match error.code() {
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => InboxError::Deadlock {
            subscriber: subscriber.to_owned(),
            message_id,
        },
        Some(code) if *code == SqlState::IN_FAILED_SQL_TRANSACTION => InboxError::Aborted,
        _ => InboxError::Backend(boxed(error)),
    }
}

impl Inbox for PgInbox {
    type Transaction = PgTransaction;

    async fn begin(&self) -> Result<PgTransaction, InboxError> {
        self.store
            .begin_unlocked()
            .await
            .map_err(|error| InboxError::Backend(boxed(error)))
    }

    async fn record(
        &self,
        tx: &mut PgTransaction,
        subscriber: &str,
        message_id: Uuid,
    ) -> Result<bool, InboxError> {
        let fail = |error: PgError| inbox_error(error, subscriber, message_id);
        let client = tx.connection().map_err(fail)?;
        let statement = client
            .prepare_cached(&self.store.inner.sql.record_handled)
            .await
            .map_err(|e| fail(e.into()))?;
        let inserted = client
            .execute(&statement, &[&subscriber, &message_id])
            .await
            .map_err(|e| fail(e.into()))?;
        Ok(inserted == 1)
    }

    async fn commit(&self, tx: PgTransaction) -> Result<(), InboxError> {
        tx.finish().await.map_err(|error| match error.code() {
            Some(code) if *code == SqlState::IN_FAILED_SQL_TRANSACTION => InboxError::Aborted,
            _ => InboxError::Backend(boxed(error)),
        })
    }
}
