//! Adapters between contexts, in the composition root: a context states what it needs of
//! another as a client trait, and the in-process implementation lives here (a split
//! deployment implements the same trait over HTTP), so that no context imports another.

use std::collections::HashMap;

use async_trait::async_trait;
use es_core::TransactionalStore;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::catalog::{Catalog, CatalogError};
use crate::customers::{Customers, CustomersError};
use crate::money::{Currency, Money};
use crate::payments::CreditClient;
use crate::quotes::PriceClient;

#[async_trait]
impl<S: TransactionalStore> CreditClient for Customers<S> {
    async fn credit_limit(&self, customer_id: Uuid) -> Result<Option<Money>, String> {
        match self.profile(customer_id).await {
            Ok(profile) => Ok(Some(profile.credit_limit)),
            Err(CustomersError::NotFound) => Ok(None),
            Err(other) => Err(other.to_string()),
        }
    }
}

#[async_trait]
impl PriceClient for Catalog {
    async fn prices(
        &self,
        product_ids: &[Uuid],
        currency: Currency,
    ) -> Result<HashMap<Uuid, (String, Decimal)>, CatalogError> {
        let products = self.products(product_ids).await?;
        let mut prices = HashMap::new();
        for product in products {
            let price = product
                .price
                .convert_to(currency)
                .map_err(|e| CatalogError::Internal(e.to_string()))?;
            prices.insert(product.product_id, (product.name, price.amount()));
        }
        Ok(prices)
    }
}
