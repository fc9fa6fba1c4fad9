//! Payments: a credit check with currency conversion against the customer's credit limit,
//! one payment per order whatever the retries (the payment id is derived from the order id),
//! refunds.

mod account;

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Clock, Delivery, HandlerError, MessageHandler, Metadata, OutboxMessage, Repository,
    RepositoryError, StreamId,
};
use uuid::Uuid;

pub use account::{
    AccountCommand, AccountEvent, CreditAccount, Payment, PaymentError, PaymentStatus, failures,
};

use crate::failures::FailureRules;
use crate::handling::{caused_by, decode, transient_unless_permanent};
use crate::messages::{self, Message, RefundPayment, RequestPayment};
use crate::money::{Currency, Money};
use es_core::TransactionalStore;

/// The namespace of payment ids.
const PAYMENT_NAMESPACE: Uuid = Uuid::from_u128(0x7b1e_44c2_9d0a_4f6e_8c35_1a2b_6d9e_0f47);

/// The payment id of an order: one payment per order, whatever the retries.
pub fn payment_id_for(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&PAYMENT_NAMESPACE, order_id.as_bytes())
}

/// What payments need of customers: the credit limit.
#[async_trait]
pub trait CreditClient: Send + Sync {
    /// The customer's credit limit; `None` for an unknown customer.
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, String>;
}

/// The payments context.
pub struct Payments<S> {
    accounts: Repository<CreditAccount, S>,
    credit: Arc<dyn CreditClient>,
    failures: FailureRules,
}

impl<S: TransactionalStore> std::fmt::Debug for Payments<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<S: TransactionalStore> Payments<S> {
    /// The context's store (its outbox is relayed from here).
    pub fn store(&self) -> &S {
        self.accounts.store()
    }

    /// The payments context over `store`, checking credit through `credit`.
    pub fn new(
        store: S,
        credit: Arc<dyn CreditClient>,
        failures: FailureRules,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let accounts = Repository::new(store)
            .with_clock(clock)
            // The credit check is recomputed on the newest state of the account.
            .with_conflict_retries(16)
            .with_outbox(integration_messages);
        Self {
            accounts,
            credit,
            failures,
        }
    }

    /// A customer's credit account.
    ///
    /// # Errors
    /// When storage fails.
    pub async fn account(&self, customer_id: Uuid) -> Result<CreditAccount, String> {
        let stream = stream(customer_id).map_err(|e| e.to_string())?;
        self.accounts
            .load(&stream)
            .await
            .map(|loaded| loaded.state)
            .map_err(|e| e.to_string())
    }

    /// How many payments were ever created for `order_id` of `customer_id` (for checks).
    ///
    /// # Errors
    /// When storage fails.
    pub async fn payments_created(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<usize, String> {
        use futures::TryStreamExt;
        let stream = stream(customer_id).map_err(|e| e.to_string())?;
        let events: Vec<_> = es_core::EventStore::read_stream(
            self.accounts.store(),
            &stream,
            es_core::StreamRead::forward(),
        )
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
        let key = order_id.to_string();
        Ok(events
            .iter()
            .filter(|e| {
                e.event_type == "PaymentCreated" && e.data["orderId"].as_str() == Some(&key)
            })
            .count())
    }

    async fn pay(&self, request: &RequestPayment, delivery: &Delivery) -> Result<(), HandlerError> {
        let currency: Currency = request
            .currency_code
            .parse()
            .map_err(|e: crate::money::MoneyError| HandlerError::permanent(e.to_string()))?;
        let amount = Money::new(request.amount, currency)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let credit_limit = self
            .credit
            .credit_limit(request.customer_id)
            .await
            .map_err(HandlerError::transient)?
            // An unknown customer has no credit.
            .unwrap_or_else(|| Money::zero(Currency::Usd));
        let command = AccountCommand::Pay {
            order_id: request.order_id,
            payment_id: payment_id_for(request.order_id),
            amount,
            credit_limit,
            declined: self.failures.declines_payment(request.amount),
        };
        self.execute(request.customer_id, &command, delivery).await
    }

    async fn execute(
        &self,
        customer_id: Uuid,
        command: &AccountCommand,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let stream = stream(customer_id).map_err(|e| HandlerError::permanent(e.to_string()))?;
        let context = caused_by(&delivery.message, "payments");
        match self.accounts.execute(&stream, command, &context).await {
            Ok(_) => Ok(()),
            Err(RepositoryError::Rejected(error)) => {
                Err(HandlerError::permanent(error.to_string()))
            }
            Err(error) => Err(transient_unless_permanent(error)),
        }
    }
}

/// Handles `RequestPayment` and `RefundPayment`.
#[async_trait]
impl<S: TransactionalStore> MessageHandler for Payments<S> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        if let Some(request) = decode::<RequestPayment>(delivery)? {
            return self.pay(&request, delivery).await;
        }
        if let Some(refund) = decode::<RefundPayment>(delivery)? {
            let customer_id = refund.customer_id;
            let command = AccountCommand::Refund {
                order_id: refund.order_id,
            };
            return self.execute(customer_id, &command, delivery).await;
        }
        Err(HandlerError::permanent(format!(
            "payments do not handle {}",
            delivery.message.message_type
        )))
    }
}

fn integration_messages(
    stream: &StreamId,
    _state: &CreditAccount,
    events: &[(AccountEvent, Metadata)],
) -> Vec<OutboxMessage> {
    events
        .iter()
        .filter_map(|(event, metadata)| {
            let message = match event {
                AccountEvent::Completed {
                    payment_id,
                    order_id,
                } => messages::PaymentCompleted {
                    order_id: *order_id,
                    payment_id: *payment_id,
                }
                .to_message(),
                AccountEvent::Cancelled {
                    payment_id,
                    order_id,
                    reason,
                } => messages::PaymentFailed {
                    order_id: *order_id,
                    payment_id: *payment_id,
                    reason: reason.clone(),
                }
                .to_message(),
                AccountEvent::Refunded {
                    payment_id,
                    order_id,
                } => messages::PaymentRefunded {
                    order_id: *order_id,
                    payment_id: *payment_id,
                }
                .to_message(),
                AccountEvent::Created { .. } => return None,
            };
            Some(
                message
                    .with_source("payments", stream.as_str())
                    .caused_by(metadata),
            )
        })
        .collect()
}

fn stream(customer_id: Uuid) -> Result<StreamId, es_core::InvalidStreamId> {
    StreamId::for_aggregate(<CreditAccount as es_core::Aggregate>::TYPE, customer_id)
}
