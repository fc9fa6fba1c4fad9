//! Messages handled exactly once: a handler's effects and its record of the message commit in
//! one store transaction, so a redelivered message changes nothing.

use std::fmt;
use std::future::Future;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::StoreError;
use crate::ids::StreamId;
use crate::messaging::{Delivery, HandlerError, MessageHandler};
use crate::transaction::{StoreTransaction, TransactionalStore};
use crate::unit::{Rerun, UnitError, UnitOfWork};

/// How many times a handler's unit of work runs again after conflicts before the message is
/// handed back to the consumer loop as a transient failure.
pub const DEFAULT_CONFLICT_RETRIES: u32 = 8;

/// Why an exactly-once unit stopped without committing.
#[derive(Debug)]
pub(crate) enum Once {
    /// The message was already handled (seen before the effects, or when recording).
    Duplicate,
    /// The handler failed, or the store did.
    Failed(HandlerError),
}

impl From<StoreError> for Once {
    fn from(error: StoreError) -> Self {
        Self::Failed(error.into())
    }
}

impl From<HandlerError> for Once {
    fn from(error: HandlerError) -> Self {
        Self::Failed(error)
    }
}

impl UnitError for Once {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Duplicate => None,
            Self::Failed(error) => error.rerun(),
        }
    }
}

/// Whether an exactly-once unit applied its effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The effects and the record of the message committed.
    Applied,
    /// The message was handled before: nothing was written.
    Duplicate,
}

/// Runs `effects` exactly once for (`subscriber`, `message_id`): in a transaction that locks
/// `streams`, it checks the record of the message first (a read), runs the effects, records
/// the message after them and commits; a record found at either point rolls everything back.
/// Conflicts run it all again, up to `conflict_retries` times.
///
/// # Errors
/// The effects' error, or the store's converted into a [`HandlerError`].
pub(crate) async fn exactly_once<S, F, Fut>(
    store: &S,
    subscriber: &str,
    message_id: Uuid,
    streams: &[StreamId],
    conflict_retries: u32,
    effects: F,
) -> Result<Handled, HandlerError>
where
    S: TransactionalStore,
    F: Fn(S::Transaction) -> Fut,
    Fut: Future<Output = Result<S::Transaction, HandlerError>>,
{
    let ran = UnitOfWork::new(store)
        .lock(streams)
        .conflict_retries(conflict_retries)
        .run(|mut tx| {
            let effects = &effects;
            async move {
                if tx.is_handled(subscriber, message_id).await? {
                    return Err(Once::Duplicate);
                }
                let mut tx = effects(tx).await?;
                if !tx.record_handled(subscriber, message_id).await? {
                    return Err(Once::Duplicate);
                }
                Ok((tx, ()))
            }
        })
        .await;
    match ran {
        Ok(_) => Ok(Handled::Applied),
        Err(Once::Duplicate) => {
            crate::telemetry::mark_duplicate();
            tracing::debug!(subscriber, %message_id, "duplicate delivery acknowledged without effects");
            Ok(Handled::Duplicate)
        }
        Err(Once::Failed(error)) => Err(error),
    }
}

/// A handler whose effects are written in a store transaction, committed with the record of
/// the message it handles: run by an [`InboxHandler`], it applies each message exactly once.
///
/// Its effects may append to several streams (through [`StoreTransaction::append`] or
/// [`Repository::execute_in`](crate::Repository::execute_in)) and write the backend's own rows
/// (read models, for PostgreSQL through the transaction's client). Name the streams it appends
/// to in [`streams`](Self::streams) when the message tells them; a stream found only while
/// handling costs one more run of the handler, with that stream locked first.
///
/// ```
/// use es_core::memory::{MemoryEventStore, MemoryStoreTransaction};
/// use es_core::{AppendRequest, Delivery, EventStore, ExpectedVersion, HandlerError, HandlerRegistry, InboxHandler,
///     MessageHandler, MessageType, CommandContext, SystemClock, NewEvent, OutboxMessage, StoreTransaction, StreamId, TransactionalHandler};
///
/// #[derive(serde::Deserialize)]
/// struct Deposited { account: String, cents: u64 }
/// impl MessageType for Deposited { const MESSAGE_TYPE: &'static str = "Deposited"; }
///
/// struct Ledger;
///
/// #[async_trait::async_trait]
/// impl TransactionalHandler<MemoryStoreTransaction> for Ledger {
///     type Message = Deposited;
///     fn streams(&self, deposit: &Deposited) -> Vec<StreamId> {
///         StreamId::new(format!("ledger-{}", deposit.account)).into_iter().collect()
///     }
///     async fn handle(&self, tx: &mut MemoryStoreTransaction, deposit: &Deposited, _: &Delivery) -> Result<(), HandlerError> {
///         let stream = StreamId::new(format!("ledger-{}", deposit.account)).map_err(HandlerError::permanent)?;
///         let event = NewEvent { event_type: "Credited".into(), schema_version: 1,
///             data: serde_json::json!({ "cents": deposit.cents }), metadata: CommandContext::new().metadata(&SystemClock) };
///         tx.append(AppendRequest::new(stream, ExpectedVersion::Any).with_events([event])).await?;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemoryEventStore::new();
/// let handlers = HandlerRegistry::new().on::<Deposited>(InboxHandler::new("ledger", store.clone(), Ledger));
/// let message = OutboxMessage::new("Deposited", "a-1", serde_json::json!({ "account": "a-1", "cents": 500 }));
/// let delivery = Delivery { topic: "deposits".into(), partition: 0, offset: 0, attempt: 1, message };
/// handlers.handle(&delivery).await?;
/// handlers.handle(&delivery).await?; // a redelivery: no effect
/// assert_eq!(store.stream_version(&StreamId::new("ledger-a-1")?).await?.get(), 1);
/// # Ok(())
/// # }
/// ```
#[async_trait::async_trait]
pub trait TransactionalHandler<T: StoreTransaction>: Send + Sync + 'static {
    /// The message's payload type.
    type Message: DeserializeOwned + Send + Sync;

    /// The streams the message's effects append to, locked when the transaction begins (none
    /// by default).
    fn streams(&self, message: &Self::Message) -> Vec<StreamId> {
        let _ = message;
        Vec::new()
    }

    /// Applies the effects of `message` through `tx`; they commit with the record of the
    /// message. May run more than once for one delivery (after a conflict, or when it appended
    /// to a stream not named by [`streams`](Self::streams)): only what it writes through `tx`
    /// counts.
    ///
    /// # Errors
    /// [`HandlerError::Transient`] to have the message retried, [`HandlerError::Permanent`]
    /// to have it dead-lettered (the transaction rolls back either way); store errors convert
    /// with `?`.
    async fn handle(
        &self,
        tx: &mut T,
        message: &Self::Message,
        delivery: &Delivery,
    ) -> Result<(), HandlerError>;
}

/// A [`MessageHandler`] that applies a [`TransactionalHandler`] exactly once per message: for
/// each delivery it begins a transaction of `store` locking the handler's streams, checks
/// whether `subscriber` already handled the message (a read), runs the handler, records the
/// message and commits. A duplicate, sequential or concurrent, is acknowledged without effects;
/// a conflict runs the handler again.
pub struct InboxHandler<S, H> {
    subscriber: String,
    store: S,
    inner: H,
    conflict_retries: u32,
}

impl<S, H> fmt::Debug for InboxHandler<S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboxHandler")
            .field("subscriber", &self.subscriber)
            .field("conflict_retries", &self.conflict_retries)
            .finish_non_exhaustive()
    }
}

impl<S, H> InboxHandler<S, H> {
    /// Runs `inner` for `subscriber` (the name its records are kept under: one per handler,
    /// stable across deployments) in transactions of `store`.
    pub fn new(subscriber: impl Into<String>, store: S, inner: H) -> Self {
        Self {
            subscriber: subscriber.into(),
            store,
            inner,
            conflict_retries: DEFAULT_CONFLICT_RETRIES,
        }
    }

    /// Runs the handler again up to `retries` times on conflicts (default
    /// [`DEFAULT_CONFLICT_RETRIES`]) before handing the message back as a transient failure.
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
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

/// Deserializes a delivery's payload: a payload that does not fit is permanent.
pub(crate) fn payload<M: DeserializeOwned>(delivery: &Delivery) -> Result<M, HandlerError> {
    serde_json::from_value(delivery.message.payload.clone()).map_err(|e| {
        HandlerError::permanent(format!(
            "malformed {} payload: {e}",
            delivery.message.message_type
        ))
    })
}

#[async_trait::async_trait]
impl<S, H> MessageHandler for InboxHandler<S, H>
where
    S: TransactionalStore,
    H: TransactionalHandler<S::Transaction>,
{
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let message: H::Message = payload(delivery)?;
        let streams = self.inner.streams(&message);
        exactly_once(
            &self.store,
            &self.subscriber,
            delivery.message.message_id,
            &streams,
            self.conflict_retries,
            |mut tx| {
                let message = &message;
                async move {
                    self.inner.handle(&mut tx, message, delivery).await?;
                    Ok(tx)
                }
            },
        )
        .await
        .map(drop)
    }
}
