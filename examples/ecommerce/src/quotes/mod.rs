//! Quotes (the cart): one open quote per customer, items priced from the catalog, confirmed
//! into an order.

mod quote;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{Clock, CommandContext, Repository, RepositoryError, StreamId};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use quote::{Quote, QuoteBook, QuoteCommand, QuoteError, QuoteEvent, QuoteStatus};

use crate::history::{HistoryEntry, history};
use crate::messages::{Line, total};
use crate::money::Currency;
use crate::storage::{StorageError, storage};
use es_core::TransactionalStore;

/// What quotes need of the catalog: current names and prices in a currency.
#[async_trait]
pub trait PriceClient: Send + Sync {
    /// Name and unit price per product; unknown products are an error naming them.
    async fn prices(
        &self,
        product_ids: &[Uuid],
        currency: Currency,
    ) -> Result<HashMap<Uuid, (String, Decimal)>, PricesError>;
}

/// Why prices could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PricesError {
    /// Products the catalog does not have.
    #[error("no product with id {}", .0.iter().map(Uuid::to_string).collect::<Vec<_>>().join(", "))]
    UnknownProducts(Vec<Uuid>),
    /// The catalog failed or could not be reached.
    #[error("catalog: {0}")]
    Unavailable(String),
}

/// Why a quotes operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuotesError {
    /// A quote rule refused.
    #[error(transparent)]
    Rejected(QuoteError),
    /// No such product.
    #[error("{0}")]
    UnknownProduct(String),
    /// The catalog did not price the items.
    #[error(transparent)]
    Prices(PricesError),
    /// Storage failed (the cause kept).
    #[error("quotes storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<RepositoryError<QuoteError>> for QuotesError {
    fn from(error: RepositoryError<QuoteError>) -> Self {
        match error {
            RepositoryError::Rejected(rejected) => QuotesError::Rejected(rejected),
            other => QuotesError::Storage(storage(other)),
        }
    }
}

impl From<PricesError> for QuotesError {
    fn from(error: PricesError) -> Self {
        match error {
            PricesError::UnknownProducts(_) => QuotesError::UnknownProduct(error.to_string()),
            other => QuotesError::Prices(other),
        }
    }
}

/// A quote priced at current catalog prices.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedQuote {
    /// The customer.
    pub customer_id: Uuid,
    /// The quote, its items at current prices.
    pub quote: Quote,
    /// The total.
    pub total: Decimal,
}

/// The quotes context.
pub struct Quotes<S> {
    books: Repository<QuoteBook, S>,
    prices: Arc<dyn PriceClient>,
    clock: Arc<dyn Clock>,
}

impl<S: TransactionalStore> std::fmt::Debug for Quotes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotes").finish_non_exhaustive()
    }
}

impl<S: TransactionalStore> Quotes<S> {
    /// The quotes context over `store`, pricing from `prices`.
    pub fn new(store: S, prices: Arc<dyn PriceClient>, clock: Arc<dyn Clock>) -> Self {
        let books = Repository::new(store)
            .with_clock(clock.clone())
            // Every quote decision is safe to recompute on newer state (a confirmation finds
            // an item it has no price for and is priced again).
            .with_conflict_retries(8);
        Self {
            books,
            prices,
            clock,
        }
    }

    /// Opens a quote in `currency`.
    ///
    /// # Errors
    /// [`QuoteError::AlreadyOpen`] when the customer has an open quote.
    pub async fn create(&self, customer_id: Uuid, currency: Currency) -> Result<Uuid, QuotesError> {
        let quote_id = Uuid::new_v4();
        let command = QuoteCommand::Create {
            quote_id,
            customer_id,
            currency,
            now: self.clock.now(),
        };
        self.execute(customer_id, &command).await?;
        Ok(quote_id)
    }

    /// The customer's open quote at current prices.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] when there is none.
    pub async fn current(&self, customer_id: Uuid) -> Result<PricedQuote, QuotesError> {
        let book = self.book(customer_id).await?;
        let quote = book
            .open()
            .cloned()
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
        self.priced(customer_id, quote).await
    }

    /// Adds a product to the quote, or sets its quantity.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] for another customer's quote, [`QuoteError::NotOpen`],
    /// [`QuoteError::InvalidQuantity`]; [`QuotesError::UnknownProduct`].
    pub async fn set_item(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
        product_id: Uuid,
        quantity: u32,
    ) -> Result<PricedQuote, QuotesError> {
        let book = self.book(customer_id).await?;
        let quote = book
            .quote(&quote_id)
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
        let prices = self.prices.prices(&[product_id], quote.currency).await?;
        let (product_name, unit_price) = prices.get(&product_id).cloned().ok_or_else(|| {
            QuotesError::UnknownProduct(format!("no product with id {product_id}"))
        })?;
        let line = Line {
            product_id,
            product_name,
            unit_price,
            quantity,
        };
        let book = self
            .execute(customer_id, &QuoteCommand::SetItem { quote_id, line })
            .await?;
        self.priced_from(customer_id, &book, quote_id).await
    }

    /// Removes a product from the quote.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`], [`QuoteError::NotOpen`], [`QuoteError::ItemNotFound`].
    pub async fn remove_item(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
        product_id: Uuid,
    ) -> Result<PricedQuote, QuotesError> {
        let command = QuoteCommand::RemoveItem {
            quote_id,
            product_id,
        };
        let book = self.execute(customer_id, &command).await?;
        self.priced_from(customer_id, &book, quote_id).await
    }

    /// Abandons the quote.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`], [`QuoteError::NotOpen`].
    pub async fn cancel(&self, customer_id: Uuid, quote_id: Uuid) -> Result<(), QuotesError> {
        self.execute(customer_id, &QuoteCommand::Cancel { quote_id })
            .await?;
        Ok(())
    }

    /// A quote's history.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] for another customer's quote.
    pub async fn history(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
    ) -> Result<Vec<HistoryEntry>, QuotesError> {
        let key = quote_id.to_string();
        let entries = history(self.books.store(), &stream(customer_id)?, quote_id)
            .await
            .map_err(|e| QuotesError::Storage(StorageError::other(e)))?;
        let entries: Vec<HistoryEntry> = entries
            .into_iter()
            .filter(|e| e.data["quoteId"].as_str() == Some(key.as_str()))
            .collect();
        if entries.is_empty() {
            return Err(QuotesError::Rejected(QuoteError::NotFound));
        }
        Ok(entries)
    }

    async fn book(&self, customer_id: Uuid) -> Result<QuoteBook, QuotesError> {
        Ok(self.books.load(&stream(customer_id)?).await?.state)
    }

    async fn execute(
        &self,
        customer_id: Uuid,
        command: &QuoteCommand,
    ) -> Result<QuoteBook, QuotesError> {
        let context = CommandContext::new().with_actor(customer_id.to_string());
        Ok(self
            .books
            .execute(&stream(customer_id)?, command, &context)
            .await?
            .state)
    }

    async fn priced_from(
        &self,
        customer_id: Uuid,
        book: &QuoteBook,
        quote_id: Uuid,
    ) -> Result<PricedQuote, QuotesError> {
        let quote = book
            .quote(&quote_id)
            .cloned()
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
        self.priced(customer_id, quote).await
    }

    /// The quote's items at current prices (a confirmed quote keeps its confirmed prices).
    async fn priced(
        &self,
        customer_id: Uuid,
        mut quote: Quote,
    ) -> Result<PricedQuote, QuotesError> {
        if quote.status == QuoteStatus::Open && !quote.items.is_empty() {
            let ids: Vec<Uuid> = quote.items.iter().map(|i| i.product_id).collect();
            let prices = self.prices.prices(&ids, quote.currency).await?;
            for item in &mut quote.items {
                if let Some((name, price)) = prices.get(&item.product_id) {
                    item.product_name.clone_from(name);
                    item.unit_price = *price;
                }
            }
        }
        let total = total(&quote.items);
        Ok(PricedQuote {
            customer_id,
            quote,
            total,
        })
    }
}

impl<S: TransactionalStore> Quotes<S> {
    /// Confirms the quote (again, idempotently, if it already is) and returns it with the
    /// confirmed lines.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] when it is not the customer's; the quote's rules.
    pub async fn confirm(&self, customer_id: Uuid, quote_id: Uuid) -> Result<Quote, QuotesError> {
        let mut attempts = 0;
        loop {
            let book = self.book(customer_id).await?;
            let quote = book
                .quote(&quote_id)
                .cloned()
                .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
            if quote.status == QuoteStatus::Confirmed {
                return Ok(quote);
            }
            let ids: Vec<Uuid> = quote.items.iter().map(|i| i.product_id).collect();
            let prices = if ids.is_empty() {
                HashMap::new()
            } else {
                self.prices.prices(&ids, quote.currency).await?
            };
            let command = QuoteCommand::Confirm {
                quote_id,
                prices: prices.into_iter().collect(),
            };
            match self.execute(customer_id, &command).await {
                Ok(book) => {
                    return book
                        .quote(&quote_id)
                        .cloned()
                        .ok_or(QuotesError::Rejected(QuoteError::NotFound));
                }
                // An item came in after the prices were read: price the quote again.
                Err(QuotesError::Rejected(QuoteError::Unpriced(_)))
                    if attempts < CONFIRM_ATTEMPTS =>
                {
                    attempts += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// How often a confirmation prices the quote again when items keep coming in meanwhile.
const CONFIRM_ATTEMPTS: u32 = 8;

fn stream(customer_id: Uuid) -> Result<StreamId, QuotesError> {
    StreamId::for_aggregate(<QuoteBook as es_core::Aggregate>::TYPE, customer_id)
        .map_err(|e| QuotesError::Storage(e.into()))
}
