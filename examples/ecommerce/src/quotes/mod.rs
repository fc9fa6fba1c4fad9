//! Quotes (the cart): one open quote per customer, items priced from the catalog, confirmed
//! into an order.

mod quote;
pub mod routes;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Clock, CommandContext, Loaded, Repository, RepositoryError, Rerun, SnapshotPolicy, StreamId,
    UnitError, UnitOfWork,
};
use rust_decimal::Decimal;
use uuid::Uuid;

pub use quote::{
    OpenQuote, OpenQuoteCommand, OpenQuoteEvent, Quote, QuoteCommand, QuoteError, QuoteEvent,
    QuoteRecord, QuoteStatus,
};

use crate::history::{HistoryEntry, Page, Paged, history};
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

impl UnitError for QuotesError {
    fn rerun(&self) -> Option<Rerun<'_>> {
        match self {
            Self::Storage(error) => error.rerun(),
            _ => None,
        }
    }
}

impl From<es_core::StoreError> for QuotesError {
    fn from(error: es_core::StoreError) -> Self {
        Self::Storage(error.into())
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
    quotes: Repository<QuoteRecord, S>,
    open: Repository<OpenQuote, S>,
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
        let quotes = Repository::new(store.clone())
            .with_clock(clock.clone())
            // Every quote decision is safe to recompute on newer state (a confirmation finds
            // an item it has no price for and is priced again).
            .with_conflict_retries(CONFLICT_RETRIES);
        // Two events per quote a customer ever had: a snapshot keeps loading it short.
        let open = Repository::new(store)
            .with_clock(clock.clone())
            .with_snapshots(SnapshotPolicy::EveryNEvents(20));
        Self {
            quotes,
            open,
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
        self.with_slot(
            customer_id,
            quote_id,
            OpenQuoteCommand::Take(quote_id),
            &command,
        )
        .await?;
        Ok(quote_id)
    }

    /// The customer's open quote at current prices.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] when there is none.
    pub async fn current(&self, customer_id: Uuid) -> Result<PricedQuote, QuotesError> {
        let open = self.open.load(&open_stream(customer_id)?).await?.state;
        let quote_id = open
            .quote_id()
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
        let quote = self.quote(customer_id, quote_id).await?;
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
        let stream = quote_stream(quote_id)?;
        let mut attempts = 0;
        let quote = loop {
            let (loaded, currency) = self.load_owned(customer_id, &stream).await?;
            let prices = self.prices.prices(&[product_id], currency).await?;
            let (product_name, unit_price) = prices.get(&product_id).cloned().ok_or_else(|| {
                QuotesError::UnknownProduct(format!("no product with id {product_id}"))
            })?;
            let line = Line {
                product_id,
                product_name,
                unit_price,
                quantity,
            };
            let command = QuoteCommand::SetItem { quote_id, line };
            if let Some(quote) = self
                .save_loaded(customer_id, &stream, loaded, &command, &mut attempts)
                .await?
            {
                break quote;
            }
        };
        self.priced(customer_id, quote).await
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
        let stream = quote_stream(quote_id)?;
        let command = QuoteCommand::RemoveItem {
            quote_id,
            product_id,
        };
        let mut attempts = 0;
        let quote = loop {
            let (loaded, _) = self.load_owned(customer_id, &stream).await?;
            if let Some(quote) = self
                .save_loaded(customer_id, &stream, loaded, &command, &mut attempts)
                .await?
            {
                break quote;
            }
        };
        self.priced(customer_id, quote).await
    }

    /// Abandons the quote.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`], [`QuoteError::NotOpen`].
    pub async fn cancel(&self, customer_id: Uuid, quote_id: Uuid) -> Result<(), QuotesError> {
        self.quote(customer_id, quote_id).await?;
        let command = QuoteCommand::Cancel { quote_id };
        self.with_slot(
            customer_id,
            quote_id,
            OpenQuoteCommand::Free(quote_id),
            &command,
        )
        .await?;
        Ok(())
    }

    /// A page of a quote's history (its own stream).
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] for another customer's quote.
    pub async fn history(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
        page: Page,
    ) -> Result<Paged<HistoryEntry>, QuotesError> {
        self.quote(customer_id, quote_id).await?;
        history(
            self.quotes.store(),
            &quote_stream(quote_id)?,
            quote_id,
            page,
            None,
        )
        .await
        .map_err(|e| QuotesError::Storage(StorageError::other(e)))
    }

    /// The customer's quote (another customer's is [`QuoteError::NotFound`]).
    async fn quote(&self, customer_id: Uuid, quote_id: Uuid) -> Result<Quote, QuotesError> {
        let record = self.quotes.load(&quote_stream(quote_id)?).await?.state;
        record
            .quote()
            .filter(|quote| quote.customer_id == customer_id)
            .cloned()
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))
    }

    /// The quote's stream as loaded, and its currency, when it is the customer's.
    async fn load_owned(
        &self,
        customer_id: Uuid,
        stream: &StreamId,
    ) -> Result<(Loaded<QuoteRecord>, Currency), QuotesError> {
        let loaded = self.quotes.load(stream).await?;
        let currency = loaded
            .state
            .quote()
            .filter(|quote| quote.customer_id == customer_id)
            .map(|quote| quote.currency)
            .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
        Ok((loaded, currency))
    }

    /// Executes `command` on the quote as `loaded` (read once, by [`load_owned`](Self::load_owned),
    /// to check and price the command): `None` when the stream moved meanwhile and fewer
    /// than [`CONFLICT_RETRIES`] `attempts` were made, for the caller to load it again.
    async fn save_loaded(
        &self,
        customer_id: Uuid,
        stream: &StreamId,
        loaded: Loaded<QuoteRecord>,
        command: &QuoteCommand,
        attempts: &mut u32,
    ) -> Result<Option<Quote>, QuotesError> {
        let context = CommandContext::new().with_actor(customer_id.to_string());
        match self
            .quotes
            .execute_loaded(stream, loaded, command, &context)
            .await
        {
            Err(RepositoryError::Conflict(_)) if *attempts < CONFLICT_RETRIES => {
                *attempts += 1;
                Ok(None)
            }
            executed => executed?
                .state
                .quote()
                .cloned()
                .map(Some)
                .ok_or(QuotesError::Rejected(QuoteError::NotFound)),
        }
    }

    /// Executes `command` on the quote and `slot` on the customer's open-quote slot in one
    /// unit of work: a quote opens, or closes, with the slot.
    async fn with_slot(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
        slot: OpenQuoteCommand,
        command: &QuoteCommand,
    ) -> Result<Quote, QuotesError> {
        let context = CommandContext::new().with_actor(customer_id.to_string());
        let streams = [open_stream(customer_id)?, quote_stream(quote_id)?];
        let done = UnitOfWork::new(self.quotes.store())
            .lock(&streams)
            .conflict_retries(CONFLICT_RETRIES)
            .run(|mut tx| {
                let (streams, context) = (&streams, &context);
                async move {
                    let quote = self
                        .quotes
                        .execute_in(&mut tx, &streams[1], command, context)
                        .await?
                        .state;
                    self.open
                        .execute_in(&mut tx, &streams[0], &slot, context)
                        .await?;
                    let quote = quote
                        .quote()
                        .cloned()
                        .ok_or(QuotesError::Rejected(QuoteError::NotFound))?;
                    Ok::<_, QuotesError>((tx, quote))
                }
            })
            .await?;
        Ok(done.value)
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
    /// confirmed lines; the customer's open-quote slot is freed with it.
    ///
    /// # Errors
    /// [`QuoteError::NotFound`] when it is not the customer's; the quote's rules.
    pub async fn confirm(&self, customer_id: Uuid, quote_id: Uuid) -> Result<Quote, QuotesError> {
        let mut attempts = 0;
        loop {
            let quote = self.quote(customer_id, quote_id).await?;
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
            let free = OpenQuoteCommand::Free(quote_id);
            match self.with_slot(customer_id, quote_id, free, &command).await {
                Ok(quote) => return Ok(quote),
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

/// How often a quote's decision is made again when its stream moved meanwhile (concurrent
/// edits of one quote).
const CONFLICT_RETRIES: u32 = 8;

fn quote_stream(quote_id: Uuid) -> Result<StreamId, QuotesError> {
    StreamId::for_aggregate(<QuoteRecord as es_core::Aggregate>::TYPE, quote_id)
        .map_err(|e| QuotesError::Storage(e.into()))
}

fn open_stream(customer_id: Uuid) -> Result<StreamId, QuotesError> {
    StreamId::for_aggregate(<OpenQuote as es_core::Aggregate>::TYPE, customer_id)
        .map_err(|e| QuotesError::Storage(e.into()))
}
