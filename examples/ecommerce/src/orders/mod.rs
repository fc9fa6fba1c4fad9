//! Orders: placed from a confirmed quote (once per quote), moved through the workflow by the
//! order saga's commands, cancelled by the customer until shipped, delivery confirmed by the
//! customer. Status changes are pushed to the order's customer.

mod handlers;
mod order;
mod pg_view;
mod read_model;
pub mod routes;
mod view;

use std::sync::Arc;
use std::time::Duration;

use es_core::privacy::{Personal, Privacy};
use es_core::{
    Clock, CommandContext, Metadata, OutboxMessage, Position, Repository, RepositoryError, StreamId,
};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use order::{Order, OrderCommand, OrderError, OrderEvent, OrderStatus, Placement, reasons};
pub use pg_view::{OrdersTables, PgOrdersView};
pub use read_model::{MemoryOrdersView, OrdersReadModel, Stopped, ViewStatus};
pub use view::{Notification, OrderSummary, OrdersProjection, OrdersView, RebuildError};

use crate::history::{HistoryEntry, Page, Paged, history};
use crate::messages::{self, Line, Message, ShipTo};
use crate::money::Currency;
use crate::storage::{StorageError, storage};
use es_core::TransactionalStore;

/// The namespace of order ids: an order's id is derived from its quote's, so placing a quote
/// twice places one order.
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x2c6a_90d1_5e3f_4b8a_a1c7_7e4d_39b0_f256);

/// The order id of a quote.
pub fn order_id_for(quote_id: Uuid) -> Uuid {
    Uuid::new_v5(&ORDER_NAMESPACE, quote_id.as_bytes())
}

/// How long a request waits for the read model to show its own write.
const READ_YOUR_WRITES: Duration = Duration::from_secs(5);

/// Why an orders operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrdersError {
    /// The order refused.
    #[error(transparent)]
    Rejected(OrderError),
    /// The quote could not be confirmed.
    #[error(transparent)]
    Quote(QuoteRefused),
    /// Where the order goes could not be learnt.
    #[error(transparent)]
    ShipTo(ShipToRefused),
    /// Storage failed (the cause kept).
    #[error("orders storage: {0}")]
    Storage(#[from] StorageError),
}

impl From<RepositoryError<OrderError>> for OrdersError {
    fn from(error: RepositoryError<OrderError>) -> Self {
        match error {
            RepositoryError::Rejected(rejected) => OrdersError::Rejected(rejected),
            other => OrdersError::Storage(storage(other)),
        }
    }
}

/// A quote confirmed for an order: its priced lines and currency.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmedQuote {
    /// The lines, priced when confirmed.
    pub lines: Vec<Line>,
    /// The quote's currency.
    pub currency: Currency,
}

/// Why a quote could not be confirmed into an order.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteRefused {
    /// No such quote for the customer.
    #[error("no such quote")]
    NotFound,
    /// A quote rule refused (cancelled, empty, ...).
    #[error("{0}")]
    Rule(String),
    /// A product of the quote is not in the catalog.
    #[error("{0}")]
    UnknownProduct(String),
    /// The quote kept changing while it was confirmed: try again.
    #[error("the quote changed concurrently; try again")]
    Conflict,
    /// Quotes failed or could not be reached.
    #[error("quotes: {0}")]
    Unavailable(String),
}

/// What orders need of quotes: a quote confirmed into its lines. In one process the
/// composition root adapts quotes itself; split into services it is an HTTP client of
/// quotes' internal routes.
#[async_trait::async_trait]
pub trait QuotesClient: Send + Sync {
    /// Confirms the customer's quote (again, idempotently, if it already is).
    async fn confirm(
        &self,
        customer_id: Uuid,
        quote_id: Uuid,
    ) -> Result<ConfirmedQuote, QuoteRefused>;
}

/// Why orders could not learn where a customer's order goes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipToRefused {
    /// No such customer.
    #[error("no customer {0}")]
    UnknownCustomer(Uuid),
    /// The customer was forgotten: there is nowhere to ship to.
    #[error("the customer's personal data was erased")]
    Forgotten,
    /// Customers could not answer.
    #[error("customers are unavailable: {0}")]
    Unavailable(String),
}

/// What orders need of customers: where an order goes, as the customer's personal data. In
/// one process the composition root adapts customers itself; split into services it is an
/// HTTP client of customers' internal routes.
#[async_trait::async_trait]
pub trait AddressBook: Send + Sync {
    /// The customer's name and shipping address now.
    async fn ship_to(&self, customer_id: Uuid) -> Result<Personal<ShipTo>, ShipToRefused>;
}

/// What an orders context talks to: quotes, customers' address book, and the key store
/// personal data is encrypted with.
#[derive(Clone)]
pub struct OrdersClients {
    /// Confirms quotes.
    pub quotes: Arc<dyn QuotesClient>,
    /// Tells where orders go.
    pub addresses: Arc<dyn AddressBook>,
    /// Encrypts the ship-to of orders in events and messages.
    pub privacy: Privacy,
}

impl std::fmt::Debug for OrdersClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrdersClients").finish_non_exhaustive()
    }
}

/// The orders context.
pub struct Orders<S> {
    orders: Repository<Order, S>,
    quotes: Arc<dyn QuotesClient>,
    addresses: Arc<dyn AddressBook>,
    /// Reveals ship-tos in histories.
    privacy: Privacy,
    view: Arc<dyn OrdersReadModel>,
    clock: Arc<dyn Clock>,
    /// Open notification streams per customer.
    streams: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, usize>>>,
}

/// Notification streams a customer may hold open at once.
pub const MAX_STREAMS_PER_CUSTOMER: usize = 5;

/// One of a customer's open notification streams: the slot frees when it is dropped.
#[derive(Debug)]
pub struct StreamSlot {
    customer_id: Uuid,
    streams: Arc<std::sync::Mutex<std::collections::HashMap<Uuid, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.customer_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.customer_id);
            }
        }
    }
}

impl<S: TransactionalStore> std::fmt::Debug for Orders<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders").finish_non_exhaustive()
    }
}

impl<S: TransactionalStore> Orders<S> {
    /// The orders context over `store`, its read model kept in `view`, confirming quotes
    /// and learning where orders go through `clients`. Run [`run_view`](Self::run_view) to
    /// keep the read model and notifications current.
    pub fn new(
        store: S,
        view: Arc<dyn OrdersReadModel>,
        clients: OrdersClients,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let orders = Repository::new(store)
            .with_clock(clock.clone())
            .with_privacy(clients.privacy.clone())
            // Every order decision is safe to recompute on newer state.
            .with_conflict_retries(8)
            .with_fallible_outbox(integration_messages);
        Self {
            orders,
            quotes: clients.quotes,
            addresses: clients.addresses,
            privacy: clients.privacy,
            view,
            clock,
            streams: Arc::default(),
        }
    }

    /// Creates what the read model's reads need before it first runs.
    ///
    /// # Errors
    /// When the storage refuses.
    pub async fn prepare(&self) -> Result<(), StorageError> {
        self.view.prepare().await
    }

    /// Keeps the read model and the notification feed current until `stopped` completes.
    pub async fn run_view(self: Arc<Self>, stopped: Stopped) {
        self.view.clone().run(stopped).await;
    }

    /// A slot for one more of the customer's notification streams; `None` when they hold
    /// [`MAX_STREAMS_PER_CUSTOMER`] open already.
    pub fn open_stream(&self, customer_id: Uuid) -> Option<StreamSlot> {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = streams.entry(customer_id).or_insert(0);
        if *open >= MAX_STREAMS_PER_CUSTOMER {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            customer_id,
            streams: self.streams.clone(),
        })
    }

    /// Live notifications of every customer (filter by customer).
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.view.subscribe()
    }

    /// A customer's notifications with an id above `after`, oldest first.
    ///
    /// # Errors
    /// [`OrdersError::Storage`] when the read model cannot be read.
    pub async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, OrdersError> {
        self.view
            .notifications(customer_id, after)
            .await
            .map_err(OrdersError::Storage)
    }

    /// Every order in the read model.
    ///
    /// # Errors
    /// [`OrdersError::Storage`] when the read model cannot be read.
    pub async fn all(&self) -> Result<Vec<OrderSummary>, OrdersError> {
        self.view.all().await.map_err(OrdersError::Storage)
    }

    /// The read model's projection: where it is, how far behind, whether paused.
    pub async fn view_status(&self) -> ViewStatus {
        self.view.status().await
    }

    /// Rebuilds the read model from the log into a new version (see
    /// [`OrdersReadModel::rebuild`]).
    ///
    /// # Errors
    /// [`RebuildError`].
    pub async fn rebuild_view(&self) -> Result<u32, RebuildError> {
        self.view.rebuild().await
    }

    async fn wait_for_view(&self, position: Position) {
        if !self.view.wait_for(position, READ_YOUR_WRITES).await {
            tracing::warn!(%position, "the orders view did not show a write in time");
        }
    }

    /// Places the order of a quote: learns where it goes, confirms the quote, then records
    /// the order, whose id is derived from the quote's. Placing the same quote again returns
    /// the same order.
    ///
    /// # Errors
    /// [`OrdersError::Quote`] when the quote is not the customer's, is cancelled or empty;
    /// [`OrdersError::ShipTo`] when the customer is unknown or forgotten.
    pub async fn place(&self, customer_id: Uuid, quote_id: Uuid) -> Result<Uuid, OrdersError> {
        let ship_to = self
            .addresses
            .ship_to(customer_id)
            .await
            .map_err(OrdersError::ShipTo)?;
        let quote = self
            .quotes
            .confirm(customer_id, quote_id)
            .await
            .map_err(OrdersError::Quote)?;
        let order_id = order_id_for(quote_id);
        let placement = Placement {
            order_id,
            customer_id,
            quote_id,
            lines: quote.lines,
            currency: quote.currency,
            placed_at: self.clock.now(),
            ship_to: Some(ship_to),
        };
        let context = CommandContext::new().with_actor(customer_id.to_string());
        let executed = self
            .orders
            .execute(
                &stream(order_id)?,
                &OrderCommand::Place(placement),
                &context,
            )
            .await?;
        if let Some(position) = executed.positions.last() {
            self.wait_for_view(*position).await;
        }
        tracing::info!(%order_id, %customer_id, "order placed");
        Ok(order_id)
    }

    /// The customer's order, loaded from its stream.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] when it is not the customer's.
    pub async fn order(&self, customer_id: Uuid, order_id: Uuid) -> Result<Order, OrdersError> {
        let order = self.orders.load(&stream(order_id)?).await?.state;
        match &order.placement {
            Some(placement) if placement.customer_id == customer_id => Ok(order),
            _ => Err(OrdersError::Rejected(OrderError::NotFound)),
        }
    }

    /// The customer's orders, oldest first.
    ///
    /// # Errors
    /// [`OrdersError::Storage`] when the read model cannot be read.
    pub async fn list(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, OrdersError> {
        self.view
            .for_customer(customer_id)
            .await
            .map_err(OrdersError::Storage)
    }

    /// A page of an order's history.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] when it is not the customer's.
    pub async fn history(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
        page: Page,
    ) -> Result<Paged<HistoryEntry>, OrdersError> {
        self.order(customer_id, order_id).await?;
        history(
            self.orders.store(),
            &stream(order_id)?,
            order_id,
            page,
            Some(&self.privacy),
        )
        .await
        .map_err(|e| OrdersError::Storage(StorageError::other(e)))
    }

    /// The customer asks to cancel; the saga decides (too late once shipped).
    ///
    /// # Errors
    /// [`OrderError::NotFound`], [`OrderError::CannotCancel`].
    pub async fn request_cancellation(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<(), OrdersError> {
        self.customer_command(customer_id, order_id, OrderCommand::RequestCancellation)
            .await
    }

    /// The customer confirms delivery.
    ///
    /// # Errors
    /// [`OrderError::NotFound`], [`OrderError::NotShipped`].
    pub async fn confirm_delivery(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<(), OrdersError> {
        self.customer_command(customer_id, order_id, OrderCommand::ConfirmDelivery)
            .await
    }

    async fn customer_command(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
        command: OrderCommand,
    ) -> Result<(), OrdersError> {
        self.order(customer_id, order_id).await?;
        let context = CommandContext::new().with_actor(customer_id.to_string());
        let executed = self
            .orders
            .execute(&stream(order_id)?, &command, &context)
            .await?;
        if let Some(position) = executed.positions.last() {
            self.wait_for_view(*position).await;
        }
        Ok(())
    }
}

fn integration_messages(
    stream: &StreamId,
    state: &Order,
    events: &[(OrderEvent, Metadata)],
) -> Result<Vec<OutboxMessage>, serde_json::Error> {
    let Some(placement) = &state.placement else {
        return Ok(Vec::new());
    };
    let order_id = placement.order_id;
    events
        .iter()
        .map(|(event, metadata)| {
            let message = match event {
                OrderEvent::Placed(placement) => messages::OrderPlaced {
                    order_id,
                    customer_id: placement.customer_id,
                    quote_id: placement.quote_id,
                    ship_to: placement.ship_to.clone(),
                }
                .to_message(),
                OrderEvent::Processed { total, .. } => messages::OrderProcessed {
                    order_id,
                    customer_id: placement.customer_id,
                    lines: placement.lines.clone(),
                    total: *total,
                    currency_code: placement.currency.code().to_owned(),
                }
                .to_message(),
                OrderEvent::CancellationRequested { .. } => {
                    messages::CancellationRequested { order_id }.to_message()
                }
                other => messages::OrderStatusChanged {
                    order_id,
                    customer_id: placement.customer_id,
                    status: other
                        .status()
                        .map(|s| s.text().to_owned())
                        .unwrap_or_default(),
                    reason: match other {
                        OrderEvent::Cancelled { reason, .. } => Some(reason.clone()),
                        _ => None,
                    },
                }
                .to_message(),
            };
            Ok(message?
                .with_source("order", stream.as_str())
                .caused_by(metadata))
        })
        .collect()
}

fn stream(order_id: Uuid) -> Result<StreamId, OrdersError> {
    StreamId::for_aggregate(<Order as es_core::Aggregate>::TYPE, order_id)
        .map_err(|e| OrdersError::Storage(e.into()))
}
