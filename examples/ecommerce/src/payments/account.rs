//! A customer's credit account: every payment they made, at most one per order, never
//! beyond their credit limit.

use std::collections::BTreeMap;

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Money, MoneyError};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// Created, not decided.
    Pending,
    /// Charged.
    Completed,
    /// Not charged.
    Cancelled,
    /// Charged, then given back.
    Refunded,
}

/// A payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// The payment (derived from the order id).
    pub payment_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The amount, in the credit limit's currency.
    pub amount: Money,
    /// Where it stands.
    pub status: PaymentStatus,
}

/// The state of a customer's credit account.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditAccount {
    payments: BTreeMap<Uuid, Payment>,
}

impl CreditAccount {
    /// The order's payment.
    pub fn payment(&self, order_id: &Uuid) -> Option<&Payment> {
        self.payments.get(order_id)
    }

    /// Every payment.
    pub fn payments(&self) -> impl Iterator<Item = &Payment> {
        self.payments.values()
    }
}

/// Why a payment did not go through.
pub mod failures {
    /// The amount exceeds the available credit.
    pub const CREDIT_LIMIT_REACHED: &str = "CreditLimitReached";
    /// The payment was declined.
    pub const PAYMENT_FAILED: &str = "PaymentFailed";
}

/// What a credit account can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Charges an order once: completed within the credit limit, cancelled beyond it or when
    /// `declined`.
    Pay {
        /// The order.
        order_id: Uuid,
        /// The payment's id.
        payment_id: Uuid,
        /// The order's total.
        amount: Money,
        /// The customer's credit limit.
        credit_limit: Money,
        /// Whether the payment is declined (the demo's failure rule).
        declined: bool,
    },
    /// Gives a completed payment back (nothing otherwise).
    Refund {
        /// The order.
        order_id: Uuid,
    },
}

/// What happened to a credit account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    /// A payment was created.
    #[serde(rename = "PaymentCreated", rename_all = "camelCase")]
    Created {
        /// The payment.
        payment_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// The amount, in the credit limit's currency.
        amount: Money,
    },
    /// It was charged.
    #[serde(rename = "PaymentCompleted", rename_all = "camelCase")]
    Completed {
        /// The payment.
        payment_id: Uuid,
        /// The order.
        order_id: Uuid,
    },
    /// It was not charged.
    #[serde(rename = "PaymentCancelled", rename_all = "camelCase")]
    Cancelled {
        /// The payment.
        payment_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// `CreditLimitReached` or `PaymentFailed`.
        reason: String,
    },
    /// It was given back.
    #[serde(rename = "PaymentRefunded", rename_all = "camelCase")]
    Refunded {
        /// The payment.
        payment_id: Uuid,
        /// The order.
        order_id: Uuid,
    },
}

/// Why a credit account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentError {
    /// The amount cannot be converted or added up.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Aggregate for CreditAccount {
    const TYPE: &'static str = "payments";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = PaymentError;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, PaymentError> {
        match command {
            AccountCommand::Pay {
                order_id,
                payment_id,
                amount,
                credit_limit,
                declined,
            } => {
                if self.payments.contains_key(order_id) {
                    return Ok(Vec::new());
                }
                let amount = amount.convert_to(credit_limit.currency())?;
                let mut used = Money::zero(credit_limit.currency());
                for payment in self.payments.values() {
                    if payment.status == PaymentStatus::Completed {
                        used = used.add(&payment.amount.convert_to(credit_limit.currency())?)?;
                    }
                }
                let created = AccountEvent::Created {
                    payment_id: *payment_id,
                    order_id: *order_id,
                    amount,
                };
                let reason = if *declined {
                    Some(failures::PAYMENT_FAILED)
                } else if used.add(&amount)?.amount() > credit_limit.amount() {
                    Some(failures::CREDIT_LIMIT_REACHED)
                } else {
                    None
                };
                let outcome = match reason {
                    Some(reason) => AccountEvent::Cancelled {
                        payment_id: *payment_id,
                        order_id: *order_id,
                        reason: reason.to_owned(),
                    },
                    None => AccountEvent::Completed {
                        payment_id: *payment_id,
                        order_id: *order_id,
                    },
                };
                Ok(vec![created, outcome])
            }
            AccountCommand::Refund { order_id } => match self.payments.get(order_id) {
                Some(payment) if payment.status == PaymentStatus::Completed => {
                    Ok(vec![AccountEvent::Refunded {
                        payment_id: payment.payment_id,
                        order_id: *order_id,
                    }])
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Created {
                payment_id,
                order_id,
                amount,
            } => {
                self.payments.insert(
                    *order_id,
                    Payment {
                        payment_id: *payment_id,
                        order_id: *order_id,
                        amount: *amount,
                        status: PaymentStatus::Pending,
                    },
                );
            }
            AccountEvent::Completed { order_id, .. } => {
                self.set(order_id, PaymentStatus::Completed)
            }
            AccountEvent::Cancelled { order_id, .. } => {
                self.set(order_id, PaymentStatus::Cancelled)
            }
            AccountEvent::Refunded { order_id, .. } => self.set(order_id, PaymentStatus::Refunded),
        }
    }
}

impl CreditAccount {
    fn set(&mut self, order_id: &Uuid, status: PaymentStatus) {
        if let Some(payment) = self.payments.get_mut(order_id) {
            payment.status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;
    use rust_decimal::Decimal;

    use super::*;
    use crate::money::Currency;

    const ORDER: Uuid = Uuid::from_u128(1);

    fn money(cents: i64, currency: Currency) -> Money {
        Money::new(Decimal::new(cents, 2), currency).unwrap_or_else(|_| Money::zero(currency))
    }

    fn pay(order: u128, cents: i64, currency: Currency, declined: bool) -> AccountCommand {
        AccountCommand::Pay {
            order_id: Uuid::from_u128(order),
            payment_id: Uuid::from_u128(order + 100),
            amount: money(cents, currency),
            credit_limit: money(100_000, Currency::Usd),
            declined,
        }
    }

    fn paid(order: u128, cents: i64) -> [AccountEvent; 2] {
        [
            AccountEvent::Created {
                payment_id: Uuid::from_u128(order + 100),
                order_id: Uuid::from_u128(order),
                amount: money(cents, Currency::Usd),
            },
            AccountEvent::Completed {
                payment_id: Uuid::from_u128(order + 100),
                order_id: Uuid::from_u128(order),
            },
        ]
    }

    #[test]
    fn pays_within_the_limit_after_converting() {
        // CA$132.00 is US$100.00.
        given::<CreditAccount>([])
            .when(pay(1, 13_200, Currency::Cad, false))
            .then([
                AccountEvent::Created {
                    payment_id: Uuid::from_u128(101),
                    order_id: ORDER,
                    amount: money(10_000, Currency::Usd),
                },
                AccountEvent::Completed {
                    payment_id: Uuid::from_u128(101),
                    order_id: ORDER,
                },
            ]);
    }

    #[test]
    fn refuses_beyond_the_available_credit() {
        given::<CreditAccount>(paid(1, 90_000))
            .when(pay(2, 10_001, Currency::Usd, false))
            .then([
                AccountEvent::Created {
                    payment_id: Uuid::from_u128(102),
                    order_id: Uuid::from_u128(2),
                    amount: money(10_001, Currency::Usd),
                },
                AccountEvent::Cancelled {
                    payment_id: Uuid::from_u128(102),
                    order_id: Uuid::from_u128(2),
                    reason: failures::CREDIT_LIMIT_REACHED.to_owned(),
                },
            ]);
        // Exactly the available credit goes through.
        let state = given::<CreditAccount>(paid(1, 90_000))
            .when(pay(2, 10_000, Currency::Usd, false))
            .then(paid(2, 10_000));
        assert_eq!(
            state.payment(&Uuid::from_u128(2)).map(|p| p.status),
            Some(PaymentStatus::Completed)
        );
    }

    #[test]
    fn one_payment_per_order_whatever_the_retries() {
        given::<CreditAccount>(paid(1, 500))
            .when(pay(1, 500, Currency::Usd, false))
            .then([]);
    }

    #[test]
    fn refunds_free_the_credit_and_happen_once() {
        let refunded = AccountEvent::Refunded {
            payment_id: Uuid::from_u128(101),
            order_id: ORDER,
        };
        given::<CreditAccount>(paid(1, 90_000))
            .when(AccountCommand::Refund { order_id: ORDER })
            .then([refunded.clone()]);
        let mut history = paid(1, 90_000).to_vec();
        history.push(refunded);
        given::<CreditAccount>(history.clone())
            .when(AccountCommand::Refund { order_id: ORDER })
            .then([]);
        given::<CreditAccount>(history)
            .when(pay(2, 100_000, Currency::Usd, false))
            .then([
                AccountEvent::Created {
                    payment_id: Uuid::from_u128(102),
                    order_id: Uuid::from_u128(2),
                    amount: money(100_000, Currency::Usd),
                },
                AccountEvent::Completed {
                    payment_id: Uuid::from_u128(102),
                    order_id: Uuid::from_u128(2),
                },
            ]);
    }

    #[test]
    fn declined_payments_are_cancelled() {
        given::<CreditAccount>([])
            .when(pay(1, 500, Currency::Usd, true))
            .then([
                AccountEvent::Created {
                    payment_id: Uuid::from_u128(101),
                    order_id: ORDER,
                    amount: money(500, Currency::Usd),
                },
                AccountEvent::Cancelled {
                    payment_id: Uuid::from_u128(101),
                    order_id: ORDER,
                    reason: failures::PAYMENT_FAILED.to_owned(),
                },
            ]);
    }
}
