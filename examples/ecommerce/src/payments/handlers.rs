//! Payments' message handlers: the saga's `RequestPayment` (a credit check, then a payment,
//! once per order) and `RefundPayment`, each applied exactly once.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    AggregateHandler, Delivery, HandlerError, HandlerRegistry, InboxHandler, InvalidStreamId,
    RepositoryError, StreamId, TransactionalHandler, TransactionalStore,
};

use super::{AccountCommand, CreditAccount, Payments, payment_id_for, stream};
use crate::handling::{caused_by, repository_failure};
use crate::messages::{RefundPayment, RequestPayment};
use crate::money::{Currency, Money, MoneyError};

/// The subscriber name payments' records of handled messages are kept under.
const SUBSCRIBER: &str = "payments";

/// How often a payment is decided again when the account moved (the credit check is
/// recomputed on the newest state).
const CONFLICT_RETRIES: u32 = 16;

impl<S: TransactionalStore> Payments<S> {
    /// The handlers of payments' commands, for its consumer.
    pub fn handlers(self: &Arc<Self>) -> HandlerRegistry {
        let pay = InboxHandler::new(SUBSCRIBER, self.store().clone(), Pay(self.clone()))
            .with_conflict_retries(CONFLICT_RETRIES);
        let refund = self
            .accounts
            .message_handler(SUBSCRIBER, Refund)
            .with_conflict_retries(CONFLICT_RETRIES);
        HandlerRegistry::new()
            .on::<RequestPayment>(pay)
            .on::<RefundPayment>(refund)
    }
}

/// Checks the customer's credit, then pays (or declines) the order.
struct Pay<S>(Arc<Payments<S>>);

#[async_trait]
impl<S: TransactionalStore> TransactionalHandler<S::Transaction> for Pay<S> {
    type Message = RequestPayment;

    fn streams(&self, request: &RequestPayment) -> Vec<StreamId> {
        stream(request.customer_id).into_iter().collect()
    }

    async fn handle(
        &self,
        tx: &mut S::Transaction,
        request: &RequestPayment,
        delivery: &Delivery,
    ) -> Result<(), HandlerError> {
        let payments = &self.0;
        let currency: Currency = request
            .currency_code
            .parse()
            .map_err(|e: MoneyError| HandlerError::permanent(e))?;
        let amount = Money::new(request.amount, currency).map_err(HandlerError::permanent)?;
        let credit_limit = payments
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
            declined: payments.failures.declines_payment(request.amount),
        };
        let stream = stream(request.customer_id).map_err(HandlerError::permanent)?;
        let context = caused_by(&delivery.message, SUBSCRIBER);
        match payments
            .accounts
            .execute_in(tx, &stream, &command, &context)
            .await
        {
            Ok(_) => Ok(()),
            // A payment that cannot be decided (a currency that does not convert) never will.
            Err(RepositoryError::Rejected(error)) => Err(HandlerError::permanent(error)),
            Err(error) => Err(repository_failure(error)),
        }
    }
}

/// Refunds an order's payment, if it completed.
struct Refund;

impl AggregateHandler for Refund {
    type Message = RefundPayment;
    type Aggregate = CreditAccount;

    fn stream(&self, refund: &RefundPayment) -> Result<StreamId, InvalidStreamId> {
        stream(refund.customer_id)
    }

    fn command(&self, refund: &RefundPayment) -> AccountCommand {
        AccountCommand::Refund {
            order_id: refund.order_id,
        }
    }
}
