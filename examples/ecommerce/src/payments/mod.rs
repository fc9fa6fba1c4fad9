//! Payments: a credit check with currency conversion against the customer's credit limit,
//! one payment per order whatever the retries (the payment id is derived from the order id),
//! refunds.

mod account;
mod handlers;
pub mod routes;

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Clock, Metadata, OutboxMessage, Repository, StreamId};
use uuid::Uuid;

pub use account::{
    AccountCommand, AccountEvent, CreditAccount, Payment, PaymentError, PaymentStatus, failures,
};

use crate::failures::FailureRules;
use crate::messages::{self, Message};
use crate::money::Money;
use crate::storage::{StorageError, storage};
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
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, CreditUnavailable>;
}

/// Customers did not answer payments' credit query.
#[derive(Debug, thiserror::Error)]
#[error("customers: {0}")]
pub struct CreditUnavailable(#[source] pub es_core::BoxError);

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
            .with_fallible_outbox(integration_messages);
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
    pub async fn account(&self, customer_id: Uuid) -> Result<CreditAccount, StorageError> {
        let stream = stream(customer_id)?;
        self.accounts
            .load(&stream)
            .await
            .map(|loaded| loaded.state)
            .map_err(storage)
    }

    /// How many payments were ever created for `order_id` of `customer_id` (for checks).
    ///
    /// # Errors
    /// When storage fails.
    pub async fn payments_created(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<usize, StorageError> {
        use futures::TryStreamExt;
        let stream = stream(customer_id)?;
        let events: Vec<_> = es_core::EventStore::read_stream(
            self.accounts.store(),
            &stream,
            es_core::StreamRead::forward(),
        )
        .try_collect()
        .await?;
        let key = order_id.to_string();
        Ok(events
            .iter()
            .filter(|e| {
                e.event_type == "PaymentCreated" && e.data["orderId"].as_str() == Some(&key)
            })
            .count())
    }
}

fn integration_messages(
    stream: &StreamId,
    _state: &CreditAccount,
    events: &[(AccountEvent, Metadata)],
) -> Result<Vec<OutboxMessage>, serde_json::Error> {
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
            Some(message.map(|message| {
                message
                    .with_source("payments", stream.as_str())
                    .caused_by(metadata)
            }))
        })
        .collect()
}

fn stream(customer_id: Uuid) -> Result<StreamId, es_core::InvalidStreamId> {
    StreamId::for_aggregate(<CreditAccount as es_core::Aggregate>::TYPE, customer_id)
}
