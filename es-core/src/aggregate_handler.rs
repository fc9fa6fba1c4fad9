//! A message handled as a command on an aggregate, exactly once.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::aggregate::Aggregate;
use crate::exactly_once::{DEFAULT_CONFLICT_RETRIES, exactly_once, payload};
use crate::ids::{ExpectedVersion, InvalidStreamId, StreamId};
use crate::messaging::{Delivery, HandlerError, MessageHandler};
use crate::metadata::CommandContext;
use crate::outbox::OutboxMessage;
use crate::repository::{Repository, RepositoryError};
use crate::store::AppendRequest;
use crate::transaction::{StoreTransaction, TransactionalStore};

/// Maps a typed message to a command on one aggregate. Run by the handler that
/// [`Repository::message_handler`] builds, the command's events, their outbox messages and the
/// record of the message commit in one transaction: exactly once, however often the message
/// is delivered.
///
/// A command the aggregate rejects is a decision, not a failure: the message is recorded and
/// acknowledged, with the messages [`rejected`](Self::rejected) returns (a reply, say) committed
/// in the same transaction; it is never retried or dead-lettered.
///
/// ```
/// # use es_core::{Aggregate, DomainEvent, EventType};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default)]
/// # struct Account { cents: u64 }
/// # #[derive(Debug)]
/// # enum AccountCommand { Deposit(u64) }
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum AccountEvent { #[serde(rename = "Deposited")] Deposited { cents: u64 } }
/// # impl DomainEvent for AccountEvent {
/// #     const EVENT_TYPES: &'static [EventType] = &[EventType::new("Deposited")];
/// #     fn event_type(&self) -> &'static str { "Deposited" }
/// # }
/// # #[derive(Debug, thiserror::Error)]
/// # #[error("deposits must be positive")]
/// # struct Refused;
/// # impl Aggregate for Account {
/// #     const TYPE: &'static str = "account";
/// #     type Command = AccountCommand;
/// #     type Event = AccountEvent;
/// #     type Error = Refused;
/// #     fn decide(&self, c: &AccountCommand) -> Result<Vec<AccountEvent>, Refused> {
/// #         let AccountCommand::Deposit(cents) = *c;
/// #         if cents == 0 { Err(Refused) } else { Ok(vec![AccountEvent::Deposited { cents }]) }
/// #     }
/// #     fn evolve(&mut self, e: &AccountEvent) { let AccountEvent::Deposited { cents } = e; self.cents += cents; }
/// # }
/// use es_core::memory::MemoryEventStore;
/// use es_core::{AggregateHandler, Delivery, HandlerRegistry, InvalidStreamId, MessageHandler, MessageType,
///     OutboxMessage, Repository, StreamId};
///
/// #[derive(Deserialize)]
/// struct PaymentReceived { account: String, cents: u64 }
/// impl MessageType for PaymentReceived { const MESSAGE_TYPE: &'static str = "PaymentReceived"; }
///
/// struct DepositPayments;
///
/// impl AggregateHandler for DepositPayments {
///     type Message = PaymentReceived;
///     type Aggregate = Account;
///     fn stream(&self, payment: &PaymentReceived) -> Result<StreamId, InvalidStreamId> {
///         StreamId::for_aggregate(Account::TYPE, &payment.account)
///     }
///     fn command(&self, payment: &PaymentReceived) -> AccountCommand {
///         AccountCommand::Deposit(payment.cents)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let accounts = Repository::<Account, _>::new(MemoryEventStore::new());
/// let handlers = HandlerRegistry::new()
///     .on::<PaymentReceived>(accounts.message_handler("accounts", DepositPayments));
///
/// let message = OutboxMessage::new("PaymentReceived", "a-1", serde_json::json!({ "account": "a-1", "cents": 500 }));
/// let delivery = Delivery { topic: "payments".into(), partition: 0, offset: 0, attempt: 1, message };
/// handlers.handle(&delivery).await?;
/// handlers.handle(&delivery).await?; // a redelivery: no effect
/// let id = StreamId::for_aggregate(Account::TYPE, "a-1")?;
/// assert_eq!(accounts.load(&id).await?.state.cents, 500);
/// # Ok(())
/// # }
/// ```
pub trait AggregateHandler: Send + Sync + 'static {
    /// The message's payload type.
    type Message: DeserializeOwned + Send + Sync;
    /// The aggregate it commands.
    type Aggregate: Aggregate;

    /// The stream of the aggregate instance the message commands.
    ///
    /// # Errors
    /// [`InvalidStreamId`] when the message does not name a valid stream (the message is
    /// dead-lettered as malformed).
    fn stream(&self, message: &Self::Message) -> Result<StreamId, InvalidStreamId>;

    /// The command the message asks for.
    fn command(&self, message: &Self::Message) -> <Self::Aggregate as Aggregate>::Command;

    /// The messages to send when the aggregate rejects the command (none by default); they
    /// commit with the record of the message. Their correlation and causation are filled from
    /// the message when unset.
    fn rejected(
        &self,
        message: &Self::Message,
        error: &<Self::Aggregate as Aggregate>::Error,
    ) -> Vec<OutboxMessage> {
        let _ = (message, error);
        Vec::new()
    }
}

/// The [`MessageHandler`] of an [`AggregateHandler`], built by
/// [`Repository::message_handler`].
pub struct AggregateMessageHandler<A: Aggregate, S, H> {
    subscriber: String,
    repository: Repository<A, S>,
    handler: H,
    conflict_retries: u32,
}

impl<A: Aggregate, S, H> fmt::Debug for AggregateMessageHandler<A, S, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateMessageHandler")
            .field("subscriber", &self.subscriber)
            .field("aggregate", &A::TYPE)
            .field("conflict_retries", &self.conflict_retries)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate, S, H> AggregateMessageHandler<A, S, H> {
    /// Runs the command again up to `retries` times on conflicts (default
    /// [`DEFAULT_CONFLICT_RETRIES`]) before handing the message back as a transient failure.
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The wrapped handler.
    pub fn inner(&self) -> &H {
        &self.handler
    }
}

impl<A, S> Repository<A, S>
where
    A: Aggregate,
    S: TransactionalStore,
{
    /// A [`MessageHandler`] that runs `handler`'s command for each message exactly once,
    /// recording messages under `subscriber` (one name per handler, stable across
    /// deployments). Register it in a [`HandlerRegistry`](crate::HandlerRegistry) with
    /// [`on::<H::Message>`](crate::HandlerRegistry::on).
    pub fn message_handler<H>(
        &self,
        subscriber: impl Into<String>,
        handler: H,
    ) -> AggregateMessageHandler<A, S, H>
    where
        H: AggregateHandler<Aggregate = A>,
    {
        AggregateMessageHandler {
            subscriber: subscriber.into(),
            repository: self.clone(),
            handler,
            conflict_retries: DEFAULT_CONFLICT_RETRIES,
        }
    }
}

/// The context of a command a delivered message causes: same correlation, the message as
/// cause, its headers (a trace context, say) carried on.
fn context_of(delivery: &Delivery) -> CommandContext {
    let message = &delivery.message;
    let mut context = CommandContext::caused_by(
        message.correlation_id.unwrap_or(message.message_id),
        message.message_id,
    );
    context.headers = message.headers.clone();
    context
}

fn handler_error<E: std::error::Error + 'static>(error: RepositoryError<E>) -> HandlerError {
    match error {
        RepositoryError::Conflict(conflict) => HandlerError::Conflict(conflict),
        RepositoryError::Store(store) => store.into(),
        other => HandlerError::permanent(other),
    }
}

#[async_trait::async_trait]
impl<A, S, H> MessageHandler for AggregateMessageHandler<A, S, H>
where
    A: Aggregate,
    S: TransactionalStore,
    H: AggregateHandler<Aggregate = A>,
{
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let message: H::Message = payload(delivery)?;
        let stream = self
            .handler
            .stream(&message)
            .map_err(HandlerError::permanent)?;
        let command = self.handler.command(&message);
        let context = context_of(delivery);
        let store = self.repository.store();
        exactly_once(
            store,
            &self.subscriber,
            delivery.message.message_id,
            std::slice::from_ref(&stream),
            self.conflict_retries,
            |mut tx| {
                let (stream, command, context) = (&stream, &command, &context);
                let message = &message;
                async move {
                    match self
                        .repository
                        .execute_in(&mut tx, stream, command, context)
                        .await
                    {
                        Ok(_) => {}
                        Err(RepositoryError::Rejected(error)) => {
                            tracing::debug!(subscriber = %self.subscriber, %stream, %error, "command rejected");
                            let replies: Vec<OutboxMessage> = self
                                .handler
                                .rejected(message, &error)
                                .into_iter()
                                .map(|reply| caused_by_delivery(reply, delivery))
                                .collect();
                            if !replies.is_empty() {
                                let request =
                                    AppendRequest::new(stream.clone(), ExpectedVersion::Any)
                                        .with_stream_type(A::TYPE)
                                        .with_outbox(replies);
                                tx.append(request).await?;
                            }
                        }
                        Err(error) => return Err(handler_error(error)),
                    }
                    Ok(tx)
                }
            },
        )
        .await
        .map(drop)
    }
}

/// Fills a reply's correlation and causation from the message it answers, when unset.
fn caused_by_delivery(mut reply: OutboxMessage, delivery: &Delivery) -> OutboxMessage {
    let cause = &delivery.message;
    reply
        .correlation_id
        .get_or_insert(cause.correlation_id.unwrap_or(cause.message_id));
    reply.causation_id.get_or_insert(cause.message_id);
    reply
}
