//! The client traits over HTTP: what one context needs of another, through the other
//! service's internal routes. Each is the split deployment's counterpart of an in-process
//! adapter (`crate::adapters`), answering the same values and the same typed errors; a
//! service that does not answer is an `Unavailable`-kind error of the trait.

use std::collections::HashMap;

use async_trait::async_trait;
use es_core::privacy::{Personal, SubjectId};
use hyper::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{RemoteError, Reply, ServiceClient};
use crate::catalog::routes::Prices;
use crate::catalog::{StockClient, StockUnavailable};
use crate::customers::routes::{CustomerDetails, ShipToView};
use crate::customers::{AccountRequest, AccountsClient, AccountsError};
use crate::identity::routes::AccountCreated;
use crate::inventory::routes::StockView;
use crate::messages::ShipTo;
use crate::money::{Currency, Money};
use crate::orders::{AddressBook, ConfirmedQuote, QuoteRefused, QuotesClient, ShipToRefused};
use crate::payments::{CreditClient, CreditUnavailable};
use crate::quotes::routes::Confirmation;
use crate::quotes::{PriceClient, PricesError};

/// The catalog's prices, for quotes.
#[derive(Debug, Clone)]
pub struct HttpPrices(pub ServiceClient);

#[async_trait]
impl PriceClient for HttpPrices {
    async fn prices(
        &self,
        product_ids: &[Uuid],
        currency: Currency,
    ) -> Result<HashMap<Uuid, (String, Decimal)>, PricesError> {
        let unavailable = |e: RemoteError| PricesError::Unavailable(e.to_string());
        let body = json!({ "productIds": product_ids, "currencyCode": currency.code() });
        let prices: Prices = self
            .0
            .call(
                Method::POST,
                "/api/v2/internal/catalog/prices",
                Some(&body),
                true,
            )
            .await
            .and_then(|reply| reply.expect(self.0.service(), StatusCode::OK))
            .map_err(unavailable)?;
        if !prices.unknown_product_ids.is_empty() {
            return Err(PricesError::UnknownProducts(prices.unknown_product_ids));
        }
        Ok(prices
            .prices
            .into_iter()
            .map(|p| (p.product_id, (p.name, p.unit_price)))
            .collect())
    }
}

/// Inventory's stock, for the catalog.
#[derive(Debug, Clone)]
pub struct HttpStock(pub ServiceClient);

#[async_trait]
impl StockClient for HttpStock {
    async fn quantities(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, u32>, StockUnavailable> {
        let asked = product_ids.iter().map(|id| async move {
            let reply = self
                .0
                .call(
                    Method::GET,
                    &format!("/api/v2/internal/inventory/{id}"),
                    None,
                    true,
                )
                .await?;
            // No stock unit: the product is not stocked (none available).
            if reply.status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let stock: StockView = reply.expect(self.0.service(), StatusCode::OK)?;
            Ok::<_, RemoteError>(Some((*id, stock.quantity)))
        });
        let found = futures::future::try_join_all(asked)
            .await
            .map_err(|e| StockUnavailable(e.into()))?;
        Ok(found.into_iter().flatten().collect())
    }
}

/// Customers' credit limits and addresses, for payments and orders.
#[derive(Debug, Clone)]
pub struct HttpCustomers(pub ServiceClient);

#[async_trait]
impl CreditClient for HttpCustomers {
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, CreditUnavailable> {
        let reply = self
            .0
            .call(
                Method::GET,
                &format!("/api/v2/internal/customers/{customer_id}"),
                None,
                true,
            )
            .await
            .map_err(|e| CreditUnavailable(e.into()))?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let details: CustomerDetails = reply
            .expect(self.0.service(), StatusCode::OK)
            .map_err(|e| CreditUnavailable(e.into()))?;
        let currency: Currency = details
            .currency_code
            .parse()
            .map_err(|e: crate::money::MoneyError| CreditUnavailable(e.into()))?;
        Money::new(details.credit_limit, currency)
            .map(Some)
            .map_err(|e| CreditUnavailable(e.into()))
    }
}

#[async_trait]
impl AddressBook for HttpCustomers {
    async fn ship_to(&self, customer_id: Uuid) -> Result<Personal<ShipTo>, ShipToRefused> {
        let reply = self
            .0
            .call(
                Method::GET,
                &format!("/api/v2/internal/customers/{customer_id}/ship-to"),
                None,
                true,
            )
            .await
            .map_err(|e| ShipToRefused::Unavailable(e.to_string()))?;
        match reply.status {
            StatusCode::NOT_FOUND => return Err(ShipToRefused::UnknownCustomer(customer_id)),
            StatusCode::GONE => return Err(ShipToRefused::Forgotten),
            _ => {}
        }
        let view: ShipToView = reply
            .expect(self.0.service(), StatusCode::OK)
            .map_err(|e| ShipToRefused::Unavailable(e.to_string()))?;
        let subject =
            SubjectId::new(view.subject).map_err(|e| ShipToRefused::Unavailable(e.to_string()))?;
        Ok(Personal::new(
            subject,
            ShipTo {
                name: view.name,
                address: view.address,
            },
        ))
    }
}

/// Identity's accounts, for customers.
#[derive(Debug, Clone)]
pub struct HttpAccounts(pub ServiceClient);

/// A problem's field errors, as identity's validation answers them.
#[derive(Deserialize, Default)]
struct FieldProblem {
    #[serde(default)]
    errors: HashMap<String, Vec<String>>,
}

#[async_trait]
impl AccountsClient for HttpAccounts {
    async fn create_account(&self, account: AccountRequest) -> Result<Uuid, AccountsError> {
        let body = json!({
            "email": account.email,
            "password": account.password,
            "customerId": account.customer_id,
        });
        // Not idempotent (a second account would be refused as taken): sent again only when
        // it never reached identity.
        let reply = self
            .0
            .call(
                Method::POST,
                "/api/v2/internal/accounts",
                Some(&body),
                false,
            )
            .await
            .map_err(|e| accounts_unavailable(&e))?;
        match reply.status {
            StatusCode::CREATED => {
                let created: AccountCreated = reply
                    .expect(self.0.service(), StatusCode::CREATED)
                    .map_err(|e| accounts_unavailable(&e))?;
                Ok(created.account_id)
            }
            StatusCode::UNPROCESSABLE_ENTITY if email_refused(&reply) => {
                Err(AccountsError::EmailTaken)
            }
            StatusCode::SERVICE_UNAVAILABLE => Err(AccountsError::Busy(retry_after(&reply))),
            _ => Err(accounts_unavailable(&reply.error(self.0.service()))),
        }
    }

    async fn close_account(&self, account_id: Uuid) -> Result<(), AccountsError> {
        let reply = self
            .0
            .call(
                Method::DELETE,
                &format!("/api/v2/internal/accounts/{account_id}"),
                None,
                true,
            )
            .await
            .map_err(|e| accounts_unavailable(&e))?;
        match reply.status {
            // Closed now, or already (a retry of a close that went through).
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(accounts_unavailable(&reply.error(self.0.service()))),
        }
    }

    async fn close_account_of(&self, email: &str) -> Result<(), AccountsError> {
        let body = json!({ "email": email });
        let reply = self
            .0
            .call(
                Method::POST,
                "/api/v2/internal/accounts/closures",
                Some(&body),
                true,
            )
            .await
            .map_err(|e| accounts_unavailable(&e))?;
        match reply.status {
            StatusCode::NO_CONTENT => Ok(()),
            _ => Err(accounts_unavailable(&reply.error(self.0.service()))),
        }
    }
}

fn accounts_unavailable(error: &RemoteError) -> AccountsError {
    AccountsError::Unavailable(error.to_string())
}

/// Whether identity refused the email itself (taken): the customers service validated its
/// format before asking.
fn email_refused(reply: &Reply) -> bool {
    serde_json::from_value::<FieldProblem>(reply.body.clone())
        .unwrap_or_default()
        .errors
        .contains_key("email")
}

/// The wait a busy answer asks for (its `Retry-After`, else a second).
fn retry_after(reply: &Reply) -> std::time::Duration {
    reply
        .retry_after
        .unwrap_or(std::time::Duration::from_secs(1))
        .max(std::time::Duration::from_secs(1))
}

/// Quotes' confirmation, for orders.
#[derive(Debug, Clone)]
pub struct HttpQuotes(pub ServiceClient);

#[async_trait]
impl QuotesClient for HttpQuotes {
    async fn confirm(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
    ) -> Result<ConfirmedQuote, QuoteRefused> {
        let body = json!({ "customerId": customer_id });
        // Confirming again answers the same lines: safe to send twice.
        let reply = self
            .0
            .call(
                Method::POST,
                &format!("/api/v2/internal/quotes/{quote_id}/confirmation"),
                Some(&body),
                true,
            )
            .await
            .map_err(|e| QuoteRefused::Unavailable(e.to_string()))?;
        let detail = || reply.detail().unwrap_or_default().to_owned();
        match reply.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Err(QuoteRefused::NotFound),
            StatusCode::CONFLICT => return Err(QuoteRefused::Conflict),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let problem =
                    serde_json::from_value::<FieldProblem>(reply.body.clone()).unwrap_or_default();
                return Err(match problem.errors.get("items") {
                    Some(items) => QuoteRefused::UnknownProduct(items.join("; ")),
                    None => QuoteRefused::Rule(detail()),
                });
            }
            _ => {
                return Err(QuoteRefused::Unavailable(
                    reply.error(self.0.service()).to_string(),
                ));
            }
        }
        let confirmation: Confirmation = reply
            .expect(self.0.service(), StatusCode::OK)
            .map_err(|e| QuoteRefused::Unavailable(e.to_string()))?;
        let currency = confirmation
            .currency_code
            .parse()
            .map_err(|e: crate::money::MoneyError| QuoteRefused::Unavailable(e.to_string()))?;
        Ok(ConfirmedQuote {
            lines: confirmation.lines,
            currency,
        })
    }
}
