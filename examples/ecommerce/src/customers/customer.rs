//! The customer aggregate: profile and credit limit.

use es_core::privacy::{FORGOTTEN, Personal, SubjectId};
use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::problem::is_valid_email;
use crate::money::Money;

/// A customer's profile as registered. Name, email and address are personal data of the
/// customer (the data subject is the customer id): stored encrypted, and [`FORGOTTEN`] once
/// the customer is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// The customer id.
    pub customer_id: Uuid,
    /// Name, 2 to 100 characters.
    pub name: Personal<String>,
    /// Email, unique among accounts.
    pub email: Personal<String>,
    /// Shipping address, 5 to 100 characters.
    pub shipping_address: Personal<String>,
    /// Credit limit, above zero.
    pub credit_limit: Money,
}

impl Profile {
    /// A profile of `customer_id` with these values (each personal data of the customer).
    pub fn new(
        customer_id: Uuid,
        name: &str,
        email: &str,
        shipping_address: &str,
        credit_limit: Money,
    ) -> Self {
        let personal = |value: &str| Personal::new(subject(customer_id), value.to_owned());
        Self {
            customer_id,
            name: personal(name),
            email: personal(email),
            shipping_address: personal(shipping_address),
            credit_limit,
        }
    }

    /// The name ([`FORGOTTEN`] once forgotten).
    pub fn name(&self) -> &str {
        self.name.value_or(FORGOTTEN)
    }

    /// The email ([`FORGOTTEN`] once forgotten).
    pub fn email(&self) -> &str {
        self.email.value_or(FORGOTTEN)
    }

    /// The shipping address ([`FORGOTTEN`] once forgotten).
    pub fn shipping_address(&self) -> &str {
        self.shipping_address.value_or(FORGOTTEN)
    }

    /// Whether the customer was forgotten.
    pub fn is_forgotten(&self) -> bool {
        self.name.is_forgotten()
    }
}

/// The data subject of a customer's personal data: the customer id.
pub fn subject(customer_id: Uuid) -> SubjectId {
    SubjectId::from_uuid(customer_id)
}

/// The state of a customer.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    profile: Option<Profile>,
}

impl Customer {
    /// The profile, once registered.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }
}

/// What a customer can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    /// Registers the customer.
    Register(Profile),
    /// Changes name and shipping address (never the credit limit).
    Update {
        /// The new name.
        name: String,
        /// The new shipping address.
        shipping_address: String,
    },
    /// Changes the credit limit (machine clients only).
    ChangeCreditLimit(Money),
}

/// What happened to a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum CustomerEvent {
    /// The customer registered.
    #[serde(rename = "CustomerRegistered")]
    #[event(version = 2)]
    Registered(Profile),
    /// Name or address changed.
    #[serde(rename = "CustomerUpdated", rename_all = "camelCase")]
    #[event(version = 2)]
    Updated {
        /// The customer id.
        customer_id: Uuid,
        /// The new name.
        name: Personal<String>,
        /// The new shipping address.
        shipping_address: Personal<String>,
    },
    /// The credit limit changed.
    #[serde(rename = "CreditLimitChanged", rename_all = "camelCase")]
    CreditLimitChanged {
        /// The customer id.
        customer_id: Uuid,
        /// The new limit.
        credit_limit: Money,
    },
}

/// Why a customer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CustomerError {
    /// A field breaks its rule.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field (camelCase, as on the wire).
        field: &'static str,
        /// The rule it breaks.
        reason: String,
    },
    /// The customer is already registered.
    #[error("the customer is already registered")]
    AlreadyRegistered,
    /// No such customer.
    #[error("no such customer")]
    NotFound,
}

/// The field rules of a customer: `(field, reason)` for each broken one.
pub fn check_fields(
    name: &str,
    email: Option<&str>,
    shipping_address: &str,
    credit_limit: Option<&Money>,
) -> Vec<(&'static str, String)> {
    let mut broken = Vec::new();
    let length = |value: &str| value.trim().chars().count();
    if !(2..=100).contains(&length(name)) {
        broken.push(("name", "must be 2 to 100 characters long".to_owned()));
    }
    if let Some(email) = email
        && !is_valid_email(email.trim())
    {
        broken.push(("email", "must be a valid email address".to_owned()));
    }
    if !(5..=100).contains(&length(shipping_address)) {
        broken.push((
            "shippingAddress",
            "must be 5 to 100 characters long".to_owned(),
        ));
    }
    if let Some(limit) = credit_limit
        && limit.amount().is_zero()
    {
        broken.push(("creditLimit", "must be greater than zero".to_owned()));
    }
    broken
}

fn first_broken(broken: Vec<(&'static str, String)>) -> Result<(), CustomerError> {
    match broken.into_iter().next() {
        Some((field, reason)) => Err(CustomerError::InvalidField { field, reason }),
        None => Ok(()),
    }
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn decide(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            CustomerCommand::Register(profile) => {
                if self.profile.is_some() {
                    return Err(CustomerError::AlreadyRegistered);
                }
                first_broken(check_fields(
                    profile.name(),
                    Some(profile.email()),
                    profile.shipping_address(),
                    Some(&profile.credit_limit),
                ))?;
                let profile = Profile::new(
                    profile.customer_id,
                    profile.name().trim(),
                    profile.email().trim(),
                    profile.shipping_address().trim(),
                    profile.credit_limit,
                );
                Ok(vec![CustomerEvent::Registered(profile)])
            }
            CustomerCommand::Update {
                name,
                shipping_address,
            } => {
                let profile = self.profile.as_ref().ok_or(CustomerError::NotFound)?;
                first_broken(check_fields(name, None, shipping_address, None))?;
                let (name, shipping_address) = (name.trim(), shipping_address.trim());
                if profile.name() == name && profile.shipping_address() == shipping_address {
                    return Ok(Vec::new());
                }
                let personal =
                    |value: &str| Personal::new(subject(profile.customer_id), value.to_owned());
                Ok(vec![CustomerEvent::Updated {
                    customer_id: profile.customer_id,
                    name: personal(name),
                    shipping_address: personal(shipping_address),
                }])
            }
            CustomerCommand::ChangeCreditLimit(limit) => {
                let profile = self.profile.as_ref().ok_or(CustomerError::NotFound)?;
                if limit.amount().is_zero() {
                    return Err(CustomerError::InvalidField {
                        field: "creditLimit",
                        reason: "must be greater than zero".to_owned(),
                    });
                }
                if profile.credit_limit == *limit {
                    return Ok(Vec::new());
                }
                Ok(vec![CustomerEvent::CreditLimitChanged {
                    customer_id: profile.customer_id,
                    credit_limit: *limit,
                }])
            }
        }
    }

    fn evolve(&mut self, event: &CustomerEvent) {
        match (event, self.profile.as_mut()) {
            (CustomerEvent::Registered(profile), _) => self.profile = Some(profile.clone()),
            (
                CustomerEvent::Updated {
                    name,
                    shipping_address,
                    ..
                },
                Some(profile),
            ) => {
                profile.name = name.clone();
                profile.shipping_address = shipping_address.clone();
            }
            (CustomerEvent::CreditLimitChanged { credit_limit, .. }, Some(profile)) => {
                profile.credit_limit = *credit_limit;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;
    use rust_decimal::Decimal;

    use super::*;
    use crate::money::Currency;

    fn usd(amount: i64) -> Money {
        Money::new(Decimal::from(amount), Currency::Usd)
            .unwrap_or_else(|_| Money::zero(Currency::Usd))
    }

    const ADA: Uuid = Uuid::from_u128(1);

    fn profile() -> Profile {
        Profile::new(
            ADA,
            "Ada Lovelace",
            "ada@example.com",
            "12 Analytical Row",
            usd(5000),
        )
    }

    fn personal(value: &str) -> Personal<String> {
        Personal::new(subject(ADA), value.to_owned())
    }

    fn invalid(field: &'static str) -> impl FnOnce(&CustomerError) -> bool {
        move |e| matches!(e, CustomerError::InvalidField { field: f, .. } if *f == field)
    }

    #[test]
    fn registers_with_trimmed_fields() {
        let padded = Profile {
            name: personal("  Ada Lovelace "),
            ..profile()
        };
        given::<Customer>([])
            .when(CustomerCommand::Register(padded))
            .then([CustomerEvent::Registered(profile())]);
    }

    #[test]
    fn registers_once() {
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::Register(profile()))
            .then_error(CustomerError::AlreadyRegistered);
    }

    #[test]
    fn refuses_fields_that_break_their_rules() {
        let cases = [
            (
                Profile {
                    name: personal("A"),
                    ..profile()
                },
                "name",
            ),
            (
                Profile {
                    name: personal(&"x".repeat(101)),
                    ..profile()
                },
                "name",
            ),
            (
                Profile {
                    email: personal("not-an-email"),
                    ..profile()
                },
                "email",
            ),
            (
                Profile {
                    shipping_address: personal("1 St"),
                    ..profile()
                },
                "shippingAddress",
            ),
            (
                Profile {
                    shipping_address: personal(&"y".repeat(101)),
                    ..profile()
                },
                "shippingAddress",
            ),
            (
                Profile {
                    credit_limit: usd(0),
                    ..profile()
                },
                "creditLimit",
            ),
        ];
        for (profile, field) in cases {
            given::<Customer>([])
                .when(CustomerCommand::Register(profile))
                .then_rejected(invalid(field));
        }
    }

    #[test]
    fn updates_name_and_address_only() {
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::Update {
                name: "Ada King".to_owned(),
                shipping_address: "1 Difference Engine Way".to_owned(),
            })
            .then([CustomerEvent::Updated {
                customer_id: profile().customer_id,
                name: personal("Ada King"),
                shipping_address: personal("1 Difference Engine Way"),
            }]);
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::Update {
                name: profile().name().to_owned(),
                shipping_address: profile().shipping_address().to_owned(),
            })
            .then([]);
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::Update {
                name: "Ada King".to_owned(),
                shipping_address: "x".to_owned(),
            })
            .then_rejected(invalid("shippingAddress"));
        given::<Customer>([])
            .when(CustomerCommand::Update {
                name: "Ada King".to_owned(),
                shipping_address: "1 Difference Engine Way".to_owned(),
            })
            .then_error(CustomerError::NotFound);
    }

    #[test]
    fn credit_limit_changes_stay_above_zero() {
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::ChangeCreditLimit(usd(9000)))
            .then([CustomerEvent::CreditLimitChanged {
                customer_id: profile().customer_id,
                credit_limit: usd(9000),
            }]);
        given::<Customer>([CustomerEvent::Registered(profile())])
            .when(CustomerCommand::ChangeCreditLimit(usd(0)))
            .then_rejected(invalid("creditLimit"));
        given::<Customer>([])
            .when(CustomerCommand::ChangeCreditLimit(usd(10)))
            .then_error(CustomerError::NotFound);
    }
}
