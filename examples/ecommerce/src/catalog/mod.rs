//! The product catalog: a plain table, not event-sourced (the framework does not force event
//! sourcing everywhere). Stock comes from inventory through [`StockClient`].

mod products;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rust_decimal::Decimal;
use uuid::Uuid;

pub use products::{Product, product_id, seed};

use crate::backend::Backend;
use crate::money::{Currency, Money};

/// What the catalog needs of inventory: quantities in stock.
///
/// In one process it is inventory's read model; split into services it would be an HTTP
/// client of inventory's internal routes.
#[async_trait]
pub trait StockClient: Send + Sync {
    /// Quantity in stock per product; products inventory does not know are absent.
    async fn quantities(&self, product_ids: &[Uuid]) -> Result<HashMap<Uuid, u32>, String>;
}

/// Stock before inventory exists: none of anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInventory;

#[async_trait]
impl StockClient for NoInventory {
    async fn quantities(&self, _product_ids: &[Uuid]) -> Result<HashMap<Uuid, u32>, String> {
        Ok(HashMap::new())
    }
}

/// Why the catalog failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// Ids that name no product.
    #[error("no product with id {}", .0.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "))]
    UnknownProducts(Vec<Uuid>),
    /// Storage or inventory failed.
    #[error("{0}")]
    Internal(String),
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

enum Table {
    Memory(Vec<Product>),
    Postgres {
        pool: deadpool_postgres::Pool,
        schema: String,
    },
}

/// The catalog context.
pub struct Catalog {
    table: Table,
    stock: Arc<dyn StockClient>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = match &self.table {
            Table::Memory(_) => "memory".to_owned(),
            Table::Postgres { schema, .. } => schema.clone(),
        };
        f.debug_struct("Catalog")
            .field("table", &table)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog on `backend`, seeded (idempotently) with the 20 products.
    ///
    /// # Errors
    /// [`CatalogError::Internal`] when the table cannot be created or seeded.
    pub async fn open(
        backend: &Backend,
        stock: Arc<dyn StockClient>,
    ) -> Result<Self, CatalogError> {
        let table = match backend {
            Backend::Memory => Table::Memory(seed()),
            Backend::Postgres { pool, .. } => {
                let schema = backend.schema("catalog");
                migrate_and_seed(pool, &schema).await.map_err(internal)?;
                Table::Postgres {
                    pool: pool.clone(),
                    schema,
                }
            }
        };
        Ok(Self { table, stock })
    }

    /// Replaces the stock source (inventory is wired after the catalog).
    pub fn with_stock(mut self, stock: Arc<dyn StockClient>) -> Self {
        self.stock = stock;
        self
    }

    /// Products by id (all of them, in catalog order, when `ids` is empty).
    ///
    /// # Errors
    /// [`CatalogError::UnknownProducts`] naming the ids that match nothing.
    pub async fn products(&self, ids: &[Uuid]) -> Result<Vec<Product>, CatalogError> {
        let all = match &self.table {
            Table::Memory(products) => products.clone(),
            Table::Postgres { pool, schema } => load(pool, schema).await.map_err(internal)?,
        };
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

    /// Products priced in `currency`, with stock.
    ///
    /// # Errors
    /// As [`products`](Self::products); [`CatalogError::Internal`] when inventory fails.
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
            .map_err(CatalogError::Internal)?;
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

fn internal(error: impl std::fmt::Display) -> CatalogError {
    CatalogError::Internal(error.to_string())
}

async fn migrate_and_seed(
    pool: &deadpool_postgres::Pool,
    schema: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("{schema}.catalog")],
    )
    .await?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await?;
    tx.batch_execute(
        &include_str!("../../sql/catalog.sql").replace("__SCHEMA__", &format!("\"{schema}\"")),
    )
    .await?;
    let insert = tx
        .prepare(&format!(
            "INSERT INTO \"{schema}\".products
                 (product_id, name, category, description, image_url, price_cents, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (product_id) DO NOTHING"
        ))
        .await?;
    for (position, product) in seed().iter().enumerate() {
        let cents = i64::try_from(
            (product.price.amount() * Decimal::ONE_HUNDRED)
                .trunc()
                .mantissa(),
        )?;
        let position = i32::try_from(position)?;
        tx.execute(
            &insert,
            &[
                &product.product_id,
                &product.name,
                &product.category,
                &product.description,
                &product.image_url,
                &cents,
                &position,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn load(
    pool: &deadpool_postgres::Pool,
    schema: &str,
) -> Result<Vec<Product>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT product_id, name, category, description, image_url, price_cents
                 FROM \"{schema}\".products ORDER BY position"
            ),
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Product {
                product_id: row.try_get(0)?,
                name: row.try_get(1)?,
                category: row.try_get(2)?,
                description: row.try_get(3)?,
                image_url: row.try_get(4)?,
                price: Money::usd(Decimal::new(row.try_get(5)?, 2))?,
            })
        })
        .collect()
}
