//! The consumer side of exactly-once effects: a record of handled messages, written in the
//! handler's transaction.

use std::future::Future;

use uuid::Uuid;

use crate::error::BoxError;

/// Failure of an inbox operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// Recording would wait for a transaction that (directly or not) waits for this one. The
    /// transaction has been rolled back: drop it and handle the message again.
    #[error("deadlock recording message {message_id} for subscriber {subscriber:?}")]
    Deadlock {
        /// The subscriber being recorded.
        subscriber: String,
        /// The message being recorded.
        message_id: Uuid,
    },
    /// The transaction was rolled back by an earlier failure; drop it and start again.
    #[error("the inbox transaction was rolled back by an earlier failure")]
    Aborted,
    /// The backend failed.
    #[error("inbox backend failed: {0}")]
    Backend(#[source] BoxError),
}

impl InboxError {
    /// Wraps a backend error.
    pub fn backend(error: impl Into<BoxError>) -> Self {
        Self::Backend(error.into())
    }
}

/// Records which messages each subscriber has handled, inside the caller's transaction, so that
/// a redelivered message is recognised and its effects are not applied twice.
///
/// Its semantics are those of a table with a unique index on (subscriber, message id):
/// [`record`](Inbox::record) in one open transaction waits while another open transaction has
/// recorded the same pair, then reports a duplicate if that transaction committed, or records
/// the pair if it rolled back. A transaction dropped without [`commit`](Inbox::commit) rolls
/// back and records nothing.
///
/// ```
/// use es_core::Inbox;
/// use es_core::memory::MemoryInbox;
/// use uuid::Uuid;
///
/// # futures::executor::block_on(async {
/// let inbox = MemoryInbox::new();
/// let message_id = Uuid::now_v7();
///
/// let mut tx = inbox.begin().await?;
/// assert!(inbox.record(&mut tx, "billing", message_id).await?, "first delivery");
/// // ... apply the handler's effects in the same transaction ...
/// inbox.commit(tx).await?;
///
/// let mut tx = inbox.begin().await?;
/// assert!(!inbox.record(&mut tx, "billing", message_id).await?, "redelivery");
/// # Ok::<(), es_core::InboxError>(())
/// # }).unwrap();
/// ```
pub trait Inbox: Send + Sync {
    /// The transaction records are written in (for PostgreSQL, the handler's database
    /// transaction). Dropping it without [`commit`](Inbox::commit) rolls it back.
    type Transaction: Send;

    /// Starts a transaction.
    ///
    /// # Errors
    /// [`InboxError::Backend`] when the backend fails.
    fn begin(&self) -> impl Future<Output = Result<Self::Transaction, InboxError>> + Send;

    /// Records that `subscriber` handled `message_id` in `tx`: `true` when the pair is new,
    /// `false` when it is already recorded (committed, or earlier in `tx`). Waits while another
    /// open transaction holds the same pair.
    ///
    /// # Errors
    /// [`InboxError::Deadlock`] when waiting would never end (the transaction is rolled back),
    /// [`InboxError::Aborted`] when `tx` was rolled back by an earlier failure, or
    /// [`InboxError::Backend`].
    fn record(
        &self,
        tx: &mut Self::Transaction,
        subscriber: &str,
        message_id: Uuid,
    ) -> impl Future<Output = Result<bool, InboxError>> + Send;

    /// Commits `tx`, making its records permanent and waking transactions waiting on them.
    ///
    /// # Errors
    /// [`InboxError::Aborted`] when `tx` was rolled back by an earlier failure (nothing is
    /// committed), or [`InboxError::Backend`].
    fn commit(&self, tx: Self::Transaction) -> impl Future<Output = Result<(), InboxError>> + Send;
}
