//! Effectively-once handlers: a handler's effects and its inbox record commit in one
//! transaction, so a redelivered message changes nothing.

use std::fmt;

use crate::inbox::{Inbox, InboxError};
use crate::messaging::{Delivery, HandlerError, MessageHandler};

/// A handler whose effects are written in the inbox's transaction (for PostgreSQL, the
/// `PgTransaction` an `es_postgres::PgInbox` begins).
#[async_trait::async_trait]
pub trait TransactionalHandler<T: Send>: Send + Sync {
    /// Applies the effects of `delivery` through `tx`; they commit with the inbox record.
    ///
    /// # Errors
    /// [`HandlerError::Transient`] to have the message retried (the transaction is rolled
    /// back), [`HandlerError::Permanent`] to have it dead-lettered.
    async fn handle(&self, tx: &mut T, delivery: &Delivery) -> Result<(), HandlerError>;
}

/// A [`MessageHandler`] that makes `H` effectively once: for each delivery it begins an
/// inbox transaction, records (subscriber, message id), runs `H` on the transaction and
/// commits. A message already recorded is acknowledged without running `H` (nothing is
/// committed).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use es_core::memory::{MemoryInbox, MemoryTransaction};
/// use es_core::{Delivery, HandlerError, InboxHandler, MessageHandler, OutboxMessage, TransactionalHandler};
///
/// struct Count(AtomicU32);
///
/// #[async_trait::async_trait]
/// impl TransactionalHandler<MemoryTransaction> for Count {
///     async fn handle(&self, _tx: &mut MemoryTransaction, _d: &Delivery) -> Result<(), HandlerError> {
///         self.0.fetch_add(1, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), HandlerError> {
/// let handler = InboxHandler::new("billing", MemoryInbox::new(), Count(AtomicU32::new(0)));
/// let message = OutboxMessage::new("OrderPlaced", "order-7", serde_json::json!({}));
/// let delivery = Delivery { topic: "orders".into(), partition: 0, offset: 0, attempt: 1, message };
/// handler.handle(&delivery).await?;
/// handler.handle(&delivery).await?; // a redelivery: no effect
/// assert_eq!(handler.inner().0.load(Ordering::SeqCst), 1);
/// # Ok(())
/// # }
/// ```
pub struct InboxHandler<I, H> {
    subscriber: String,
    inbox: I,
    inner: H,
}

impl<I, H> fmt::Debug for InboxHandler<I, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxHandler")
            .field("subscriber", &self.subscriber)
            .finish_non_exhaustive()
    }
}

impl<I, H> InboxHandler<I, H> {
    /// Runs `inner` for `subscriber`, recording handled messages in `inbox`.
    pub fn new(subscriber: impl Into<String>, inbox: I, inner: H) -> Self {
        Self {
            subscriber: subscriber.into(),
            inbox,
            inner,
        }
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The subscriber name its records are written under.
    pub fn subscriber(&self) -> &str {
        &self.subscriber
    }
}

fn transient(error: InboxError) -> HandlerError {
    HandlerError::transient(format!("inbox: {error}"))
}

#[async_trait::async_trait]
impl<I, H> MessageHandler for InboxHandler<I, H>
where
    I: Inbox,
    H: TransactionalHandler<I::Transaction>,
{
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let mut tx = self.inbox.begin().await.map_err(transient)?;
        let id = delivery.message.message_id;
        let new = self
            .inbox
            .record(&mut tx, &self.subscriber, id)
            .await
            .map_err(transient)?;
        if !new {
            tracing::debug!(subscriber = %self.subscriber, message_id = %id, "duplicate skipped");
            return Ok(());
        }
        self.inner.handle(&mut tx, delivery).await?;
        self.inbox.commit(tx).await.map_err(transient)
    }
}
