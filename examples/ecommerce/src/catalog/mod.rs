//! The product catalog: a plain table, not event-sourced (the framework does not force event
//! sourcing everywhere). Stock comes from inventory through [`StockClient`].

mod pg;
mod products;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

pub use pg::PgProducts;
pub use products::{Product, product_id, seed};

use crate::money::{Currency, Money};
use crate::storage::StorageError;

/// What the catalog needs of inventory: quantities in stock.
///
/// In one process it is inventory's read model; split into services it would be an HTTP
/// client of inventory's internal routes.
#[async_trait]
pub trait StockClient: Send + Sync {
    /// Quantity in stock per product; products inventory does not know are absent.
    async fn quantities(
        &self,
        product_ids: &[Uuid],
    ) -> Result<HashMap<Uuid, u32>, StockUnavailable>;
}

/// Inventory did not answer the catalog's stock query.
#[derive(Debug, thiserror::Error)]
#[error("inventory: {0}")]
pub struct StockUnavailable(#[source] pub es_core::BoxError);

/// Why the catalog failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Ids that name no product.
    #[error("no product with id {}", .0.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "))]
    UnknownProducts(Vec<Uuid>),
    /// Inventory did not answer.
    #[error(transparent)]
    Stock(StockUnavailable),
    /// Storage failed (the cause kept).
    #[error("catalog storage: {0}")]
    Storage(#[from] StorageError),
}

/// A product priced in a currency, with its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedProduct {
    /// The product.
    pub product: Product,
    /// Its price in the requested currency.
    pub price: Money,
    /// Quantity in stock.
    pub quantity_in_stock: u32,
}

/// The ids of the seeded products, in catalog order.
pub fn product_ids() -> Vec<Uuid> {
    seed().iter().map(|p| p.product_id).collect()
}

/// Where the catalog's products are kept: a table the catalog reads whole.
#[async_trait]
pub trait ProductTable: Send + Sync + 'static {
    /// Every product, in catalog order.
    ///
    /// # Errors
    /// When the storage fails.
    async fn all(&self) -> Result<Vec<Product>, CatalogError>;
}

/// The 20 seeded products, in memory.
#[derive(Debug, Clone)]
pub struct MemoryProducts(Vec<Product>);

impl Default for MemoryProducts {
    fn default() -> Self {
        Self(seed())
    }
}

#[async_trait]
impl ProductTable for MemoryProducts {
    async fn all(&self) -> Result<Vec<Product>, CatalogError> {
        Ok(self.0.clone())
    }
}

/// The catalog context.
pub struct Catalog {
    table: Arc<dyn ProductTable>,
    stock: Arc<dyn StockClient>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog of the products in `table`, with stock from `stock`.
    pub fn new(table: Arc<dyn ProductTable>, stock: Arc<dyn StockClient>) -> Self {
        Self { table, stock }
    }

    /// Products by id (all of them, in catalog order, when `ids` is empty).
    ///
    /// # Errors
    /// [`CatalogError::UnknownProducts`] naming the ids that match nothing.
    pub async fn products(&self, ids: &[Uuid]) -> Result<Vec<Product>, CatalogError> {
        let all = self.table.all().await?;
        if ids.is_empty() {
            return Ok(all);
        }
        let by_id: HashMap<Uuid, &Product> = all.iter().map(|p| (p.product_id, p)).collect();
        let unknown: Vec<Uuid> = ids
            .iter()
            .filter(|id| !by_id.contains_key(id))
            .copied()
            .collect();
        if !unknown.is_empty() {
            return Err(CatalogError::UnknownProducts(unknown));
        }
        let mut seen = std::collections::HashSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(**id))
            .filter_map(|id| by_id.get(id).map(|p| (*p).clone()))
            .collect())
    }

    /// The name and unit price in `currency` of each product of `ids` (each once, in the
    /// order asked), without stock: what a quote needs.
    ///
    /// # Errors
    /// As [`products`](Self::products).
    pub async fn prices(
        &self,
        ids: &[Uuid],
        currency: Currency,
    ) -> Result<Vec<(Uuid, String, Money)>, CatalogError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.products(ids)
            .await?
            .into_iter()
            .map(|product| {
                let price = product.price.convert_to(currency).map_err(internal)?;
                Ok((product.product_id, product.name, price))
            })
            .collect()
    }

    /// Products priced in `currency`, with stock.
    ///
    /// # Errors
    /// As [`products`](Self::products); [`CatalogError::Stock`] when inventory fails.
    pub async fn priced(
        &self,
        ids: &[Uuid],
        currency: Currency,
    ) -> Result<Vec<PricedProduct>, CatalogError> {
        let products = self.products(ids).await?;
        let ids: Vec<Uuid> = products.iter().map(|p| p.product_id).collect();
        let stock = self
            .stock
            .quantities(&ids)
            .await
            .map_err(CatalogError::Stock)?;
        products
            .into_iter()
            .map(|product| {
                let price = product.price.convert_to(currency).map_err(internal)?;
                let quantity_in_stock = stock.get(&product.product_id).copied().unwrap_or(0);
                Ok(PricedProduct {
                    product,
                    price,
                    quantity_in_stock,
                })
            })
            .collect()
    }
}

fn internal(error: impl Into<es_core::BoxError>) -> CatalogError {
    CatalogError::Storage(StorageError::other(error))
}
