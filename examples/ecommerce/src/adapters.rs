//! Adapters between contexts, in the composition root: a context states what it needs of
//! another as a client trait with its own types, and the in-process implementation lives
//! here (a split deployment implements the same trait over HTTP), so that no context imports
//! another.

use std::collections::HashMap;

use async_trait::async_trait;
use es_core::TransactionalStore;
use es_core::privacy::Personal;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::catalog::{Catalog, CatalogError, StockClient, StockUnavailable};
use crate::customers::{AccountRequest, AccountsClient, AccountsError, Customers, CustomersError};
use crate::identity::{Identity, IdentityError, NewAccount};
use crate::inventory::Inventory;
use crate::messages::ShipTo;
use crate::money::{Currency, Money};
use crate::orders::{AddressBook, ConfirmedQuote, QuoteRefused, QuotesClient, ShipToRefused};
use crate::payments::{CreditClient, CreditUnavailable};
use crate::quotes::{PriceClient, PricesError, QuoteError, Quotes, QuotesError};

#[async_trait]
impl<S: TransactionalStore> CreditClient for Customers<S> {
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, CreditUnavailable> {
        match self.profile(customer_id).await {
            Ok(profile) => Ok(Some(profile.credit_limit)),
            Err(CustomersError::NotFound) => Ok(None),
            Err(other) => Err(CreditUnavailable(other.into())),
        }
    }
}

#[async_trait]
impl<S: TransactionalStore> AddressBook for Customers<S> {
    async fn ship_to(&self, customer_id: Uuid) -> Result<Personal<ShipTo>, ShipToRefused> {
        let profile = match self.profile(customer_id).await {
            Ok(profile) => profile,
            Err(CustomersError::NotFound) => {
                return Err(ShipToRefused::UnknownCustomer(customer_id));
            }
            Err(other) => return Err(ShipToRefused::Unavailable(other.to_string())),
        };
        let subject = profile.name.subject().clone();
        match (profile.name.value(), profile.shipping_address.value()) {
            (Some(name), Some(address)) => Ok(Personal::new(
                subject,
                ShipTo {
                    name: name.clone(),
                    address: address.clone(),
                },
            )),
            _ => Err(ShipToRefused::Forgotten),
        }
    }
}

#[async_trait]
impl PriceClient for Catalog {
    async fn prices(
        &self,
        product_ids: &[Uuid],
        currency: Currency,
    ) -> Result<HashMap<Uuid, (String, Decimal)>, PricesError> {
        let prices = Catalog::prices(self, product_ids, currency)
            .await
            .map_err(|e| match e {
                CatalogError::UnknownProducts(ids) => PricesError::UnknownProducts(ids),
                other => PricesError::Unavailable(other.to_string()),
            })?;
        Ok(prices
            .into_iter()
            .map(|(id, name, price)| (id, (name, price.amount())))
            .collect())
    }
}

#[async_trait]
impl<S: TransactionalStore> StockClient for Inventory<S> {
    async fn quantities(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, u32>, StockUnavailable> {
        let units = futures::future::try_join_all(
            product_ids
                .iter()
                .map(|id| async move { self.stock(*id).await.map(|unit| (*id, unit)) }),
        )
        .await
        .map_err(|e| StockUnavailable(e.into()))?;
        Ok(units
            .into_iter()
            .filter(|(_, unit)| unit.entered)
            .map(|(id, unit)| (id, unit.available))
            .collect())
    }
}

#[async_trait]
impl<S: TransactionalStore> AccountsClient for Identity<S> {
    async fn create_account(&self, account: AccountRequest) -> Result<Uuid, AccountsError> {
        let account = NewAccount {
            email: account.email,
            password: account.password,
            customer_id: account.customer_id,
        };
        Identity::create_account(self, account)
            .await
            .map_err(accounts_error)
    }

    async fn close_account(&self, account_id: Uuid) -> Result<(), AccountsError> {
        Identity::close_account(self, account_id)
            .await
            .map_err(accounts_error)
    }

    async fn close_account_of(&self, email: &str) -> Result<(), AccountsError> {
        Identity::close_account_of(self, email)
            .await
            .map_err(accounts_error)
    }
}

fn accounts_error(error: IdentityError) -> AccountsError {
    match error {
        IdentityError::EmailTaken => AccountsError::EmailTaken,
        IdentityError::Throttled(throttled) => AccountsError::Busy(throttled.retry_after()),
        other => AccountsError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl<S: TransactionalStore> QuotesClient for Quotes<S> {
    async fn confirm(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
    ) -> Result<ConfirmedQuote, QuoteRefused> {
        match Quotes::confirm(self, customer_id, quote_id).await {
            Ok(quote) => Ok(ConfirmedQuote {
                lines: quote.items,
                currency: quote.currency,
            }),
            Err(QuotesError::Rejected(QuoteError::NotFound)) => Err(QuoteRefused::NotFound),
            Err(QuotesError::Rejected(rule)) => Err(QuoteRefused::Rule(rule.to_string())),
            Err(QuotesError::UnknownProduct(message)) => Err(QuoteRefused::UnknownProduct(message)),
            Err(QuotesError::Storage(storage)) if storage.is_conflict() => {
                Err(QuoteRefused::Conflict)
            }
            Err(other) => Err(QuoteRefused::Unavailable(other.to_string())),
        }
    }
}
