//! The catalog's table on PostgreSQL, in the catalog's schema.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use es_postgres::PgEventStore;
use rust_decimal::Decimal;

use super::{CatalogError, Product, ProductTable, internal, seed};
use crate::money::Money;

/// How long a read of the table serves: a product changed in the table shows within it.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// The products in the table `products` of a PostgreSQL schema.
///
/// The app never writes the table after seeding it, and each quote reads it to price every
/// item, so one read serves every caller for a second: a price or product changed in the
/// table (by an operator, or by another process) is seen within it.
#[derive(Debug, Clone)]
pub struct PgProducts {
    pool: deadpool_postgres::Pool,
    schema: String,
    /// The last read and when it was made; held while reading, so that callers arriving
    /// meanwhile wait for that read instead of making their own.
    last: Arc<tokio::sync::Mutex<Option<Read>>>,
}

/// A read of the table and when it was made.
type Read = (Instant, Arc<Vec<Product>>);

impl PgProducts {
    /// The table in `store`'s schema, created and seeded (idempotently) with the 20 products.
    ///
    /// # Errors
    /// [`CatalogError::Storage`] when the table cannot be created or seeded.
    pub async fn open(store: &PgEventStore) -> Result<Self, CatalogError> {
        let products = Self {
            pool: store.pool().clone(),
            schema: store.schema().to_owned(),
            last: Arc::default(),
        };
        migrate_and_seed(&products.pool, &products.schema)
            .await
            .map_err(internal)?;
        Ok(products)
    }
}

#[async_trait]
impl ProductTable for PgProducts {
    async fn all(&self) -> Result<Vec<Product>, CatalogError> {
        let mut last = self.last.lock().await;
        if let Some((read_at, products)) = last.as_ref()
            && read_at.elapsed() < FRESH_FOR
        {
            return Ok(products.as_ref().clone());
        }
        let read_at = Instant::now();
        let products = Arc::new(load(&self.pool, &self.schema).await.map_err(internal)?);
        *last = Some((read_at, Arc::clone(&products)));
        Ok(products.as_ref().clone())
    }
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
    let statement = client
        .prepare_cached(&format!(
            "SELECT product_id, name, category, description, image_url, price_cents
             FROM \"{schema}\".products ORDER BY position"
        ))
        .await?;
    let rows = client.query(&statement, &[]).await?;
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
