//! Customers: registration (with the account, all or nothing), profile, history and credit
//! limit.

mod customer;
pub mod keys;
pub mod routes;

use std::sync::Arc;

use es_core::privacy::{Privacy, mark_personal};
use es_core::{Clock, CommandContext, EventRegistry, Repository, RepositoryError, StreamId};
use uuid::Uuid;

pub use customer::{
    Customer, CustomerCommand, CustomerError, CustomerEvent, Profile, check_fields, subject,
};

use crate::history::{HistoryEntry, Page, Paged, history};
use crate::money::Money;
use crate::storage::{StorageError, storage};
use es_core::TransactionalStore;

/// Why a customers operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustomersError {
    /// Fields break their rules: `(field, reason)` each.
    #[error("invalid customer fields")]
    Invalid(Vec<(&'static str, String)>),
    /// An account already uses the email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// No such customer.
    #[error("no such customer")]
    NotFound,
    /// The customer changed concurrently.
    #[error("the customer changed concurrently; try again")]
    Conflict,
    /// Identity did not create the account.
    #[error("account not created: {0}")]
    Accounts(#[source] AccountsError),
    /// Storage failed (the cause kept).
    #[error("customers storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<RepositoryError<CustomerError>> for CustomersError {
    fn from(error: RepositoryError<CustomerError>) -> Self {
        match error {
            RepositoryError::Rejected(CustomerError::InvalidField { field, reason }) => {
                CustomersError::Invalid(vec![(field, reason)])
            }
            RepositoryError::Rejected(CustomerError::NotFound) => CustomersError::NotFound,
            RepositoryError::Rejected(CustomerError::AlreadyRegistered)
            | RepositoryError::Conflict(_) => CustomersError::Conflict,
            other => CustomersError::Storage(storage(other)),
        }
    }
}

/// What registration needs.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Name.
    pub name: String,
    /// Email (also the account's sign-in).
    pub email: String,
    /// Password of the account.
    pub password: String,
    /// Shipping address.
    pub shipping_address: String,
    /// Credit limit.
    pub credit_limit: Money,
}

/// A sign-in account for a new customer, as customers ask identity for it.
#[derive(Debug, Clone)]
pub struct AccountRequest {
    /// The sign-in email.
    pub email: String,
    /// The password in clear (identity hashes it).
    pub password: String,
    /// The customer the account signs in as.
    pub customer_id: Uuid,
}

/// Why identity did not create or close an account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountsError {
    /// An account with this email exists.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Identity is busy (every password-hashing slot taken): try again after this long.
    #[error("the server is busy; try again in {0:?}")]
    Busy(std::time::Duration),
    /// Identity failed or could not be reached.
    #[error("identity: {0}")]
    Unavailable(String),
}

/// What customers need of identity: sign-in accounts for new customers. In one process the
/// composition root adapts identity itself; split into services it is an HTTP client of
/// identity's internal routes.
#[async_trait::async_trait]
pub trait AccountsClient: Send + Sync {
    /// Creates the account of a new customer; returns the account id.
    async fn create_account(&self, account: AccountRequest) -> Result<Uuid, AccountsError>;
    /// Closes an account (registration's compensation).
    async fn close_account(&self, account_id: Uuid) -> Result<(), AccountsError>;
    /// Closes the account that signs in with `email`, if any (forgetting its customer).
    async fn close_account_of(&self, email: &str) -> Result<(), AccountsError>;
}

/// The customers context.
#[derive(Debug)]
pub struct Customers<S> {
    customers: Repository<Customer, S>,
    accounts: Arc<dyn AccountsClient>,
    privacy: Privacy,
}

impl std::fmt::Debug for dyn AccountsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountsClient")
    }
}

impl<S: TransactionalStore> Customers<S> {
    /// The customers context over `store`, creating accounts through `accounts`, the
    /// customers' personal data kept with `privacy`'s keys.
    pub fn new(
        store: S,
        accounts: Arc<dyn AccountsClient>,
        clock: Arc<dyn Clock>,
        privacy: Privacy,
    ) -> Self {
        let customers = Repository::new(store)
            .with_clock(clock)
            .with_registry(Arc::new(upcasters()))
            .with_privacy(privacy.clone());
        Self {
            customers,
            accounts,
            privacy,
        }
    }

    /// Forgets the customer (crypto-shredding): their account is closed, then their keys are
    /// destroyed, so their name, email and address read as forgotten in every event,
    /// snapshot and message that held them, while their orders and payments keep their
    /// amounts and statuses. Idempotent; `by` (who asked) is recorded.
    ///
    /// # Errors
    /// [`CustomersError::NotFound`] for a customer never registered; failures (retry: the
    /// steps are idempotent).
    pub async fn forget(&self, customer_id: Uuid, by: &str) -> Result<(), CustomersError> {
        let profile = self.profile(customer_id).await?;
        if !profile.is_forgotten() {
            self.accounts
                .close_account_of(profile.email())
                .await
                .map_err(CustomersError::Accounts)?;
        }
        // The keys go, and the forgetting is recorded in customers' log, where any read model
        // of customers (through `Privacy::revealing`) learns of it.
        self.privacy
            .forget_recorded(self.customers.store(), &customer::subject(customer_id), by)
            .await
            .map_err(|e| CustomersError::Storage(StorageError::other(e)))?;
        tracing::info!(%customer_id, "customer forgotten");
        Ok(())
    }

    /// Registers a customer and its account together: if the account cannot be created no
    /// customer exists, and if the customer cannot be stored the account is closed again.
    ///
    /// # Errors
    /// [`CustomersError::Invalid`], [`CustomersError::EmailTaken`], or a failure.
    pub async fn register(&self, registration: Registration) -> Result<Uuid, CustomersError> {
        let customer_id = Uuid::new_v4();
        let profile = Profile::new(
            customer_id,
            &registration.name,
            registration.email.trim(),
            &registration.shipping_address,
            registration.credit_limit,
        );
        let broken = check_fields(
            profile.name(),
            Some(profile.email()),
            profile.shipping_address(),
            Some(&profile.credit_limit),
        );
        if !broken.is_empty() {
            return Err(CustomersError::Invalid(broken));
        }
        let account = AccountRequest {
            email: profile.email().to_owned(),
            password: registration.password,
            customer_id,
        };
        let account_id = self
            .accounts
            .create_account(account)
            .await
            .map_err(|e| match e {
                AccountsError::EmailTaken => CustomersError::EmailTaken,
                other => CustomersError::Accounts(other),
            })?;
        let stream = customer_stream(customer_id)?;
        let registered = self
            .customers
            .execute(
                &stream,
                &CustomerCommand::Register(profile),
                &context("customer"),
            )
            .await;
        if let Err(error) = registered {
            if let Err(close) = self.accounts.close_account(account_id).await {
                tracing::error!(%account_id, %close, "account of a failed registration left open");
            }
            return Err(error.into());
        }
        tracing::info!(%customer_id, "customer registered");
        Ok(customer_id)
    }

    /// The customer's profile.
    ///
    /// # Errors
    /// [`CustomersError::NotFound`], or a failure.
    pub async fn profile(&self, customer_id: Uuid) -> Result<Profile, CustomersError> {
        let stream = customer_stream(customer_id)?;
        let loaded = self.customers.load(&stream).await?;
        loaded
            .state
            .profile()
            .cloned()
            .ok_or(CustomersError::NotFound)
    }

    /// A page of the customer's event history, oldest first.
    ///
    /// # Errors
    /// [`CustomersError::NotFound`] when the customer has no events, or a failure.
    pub async fn history(
        &self,
        customer_id: Uuid,
        page: Page,
    ) -> Result<Paged<HistoryEntry>, CustomersError> {
        let stream = customer_stream(customer_id)?;
        let entries = history(
            self.customers.store(),
            &stream,
            customer_id,
            page,
            Some(&self.privacy),
        )
        .await
        .map_err(|e| CustomersError::Storage(StorageError::other(e)))?;
        if entries.entries.is_empty() && page.after.is_none() {
            return Err(CustomersError::NotFound);
        }
        Ok(entries)
    }

    /// Changes name and shipping address.
    ///
    /// # Errors
    /// [`CustomersError::Invalid`], [`CustomersError::NotFound`], [`CustomersError::Conflict`].
    pub async fn update(
        &self,
        customer_id: Uuid,
        name: String,
        shipping_address: String,
    ) -> Result<Profile, CustomersError> {
        let command = CustomerCommand::Update {
            name,
            shipping_address,
        };
        self.execute(customer_id, &command, "customer").await
    }

    /// Changes the credit limit (for machine clients).
    ///
    /// # Errors
    /// [`CustomersError::Invalid`], [`CustomersError::NotFound`], [`CustomersError::Conflict`].
    pub async fn change_credit_limit(
        &self,
        customer_id: Uuid,
        limit: Money,
    ) -> Result<Profile, CustomersError> {
        self.execute(
            customer_id,
            &CustomerCommand::ChangeCreditLimit(limit),
            "m2m",
        )
        .await
    }

    async fn execute(
        &self,
        customer_id: Uuid,
        command: &CustomerCommand,
        actor: &str,
    ) -> Result<Profile, CustomersError> {
        let stream = customer_stream(customer_id)?;
        let executed = self
            .customers
            .execute(&stream, command, &context(actor))
            .await?;
        executed
            .state
            .profile()
            .cloned()
            .ok_or(CustomersError::NotFound)
    }
}

/// The upcasters of customer events: version 1 held name, email and address in clear; version
/// 2 holds them as personal values of the customer.
fn upcasters() -> EventRegistry {
    let mut registry = EventRegistry::new();
    let registered = registry.upcaster("CustomerRegistered", 1, |mut data| {
        mark_personal(
            &mut data,
            "customerId",
            &["name", "email", "shippingAddress"],
        )?;
        Ok(data)
    });
    let updated = registered.and_then(|registry| {
        registry.upcaster("CustomerUpdated", 1, |mut data| {
            mark_personal(&mut data, "customerId", &["name", "shippingAddress"])?;
            Ok(data)
        })
    });
    if let Err(error) = updated {
        tracing::error!(%error, "customer upcasters not registered");
    }
    registry
}

fn customer_stream(customer_id: Uuid) -> Result<StreamId, CustomersError> {
    StreamId::for_aggregate(<Customer as es_core::Aggregate>::TYPE, customer_id)
        .map_err(|e| CustomersError::Storage(e.into()))
}

fn context(actor: &str) -> CommandContext {
    CommandContext::new().with_actor(actor)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use es_core::memory::MemoryEventStore;
    use es_core::privacy::{MemoryKeyStore, Privacy};
    use es_core::{AppendRequest, EventStore, ExpectedVersion, NewEvent, Repository};
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_customer_registered_in_clear_reads_through_the_upcaster() {
        let store = MemoryEventStore::new();
        let customer_id = Uuid::from_u128(42);
        let stream = customer_stream(customer_id).unwrap_or_else(|e| panic!("{e}"));
        let v1 = NewEvent {
            event_type: "CustomerRegistered".to_owned(),
            schema_version: 1,
            data: json!({
                "customerId": customer_id,
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "shippingAddress": "12 Analytical Row",
                "creditLimit": { "amount": 5000, "currency": "USD" },
            }),
            metadata: CommandContext::new().metadata(&es_core::SystemClock),
        };
        store
            .append(
                AppendRequest::new(stream.clone(), ExpectedVersion::NoStream)
                    .with_stream_type("customer")
                    .with_events([v1]),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let customers = Repository::<Customer, _>::new(store)
            .with_registry(Arc::new(upcasters()))
            .with_privacy(Privacy::new(Arc::new(MemoryKeyStore::new())));
        let loaded = customers
            .load(&stream)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let profile = loaded
            .state
            .profile()
            .cloned()
            .unwrap_or_else(|| panic!("no profile"));
        assert_eq!(profile.name(), "Ada Lovelace");
        assert_eq!(profile.email(), "ada@example.com");
        assert_eq!(profile.name.subject(), &subject(customer_id));
    }
}
