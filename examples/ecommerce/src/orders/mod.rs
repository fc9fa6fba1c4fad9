//! Orders: placed from a confirmed quote (once per quote), moved through the workflow by the
//! order saga's commands, cancelled by the customer until shipped, delivery confirmed by the
//! customer. Status changes are pushed to the order's customer.

mod order;
mod pg_view;
pub mod routes;
mod view;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::memory::MemoryReadModel;
use es_core::{
    Clock, CommandContext, Delivery, EventStore, HandlerError, MessageHandler, Metadata,
    OutboxMessage, Position, Projection, Repository, RepositoryError, StreamId,
};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use order::{Order, OrderCommand, OrderError, OrderEvent, OrderStatus, Placement, reasons};
pub use pg_view::{OrdersTables, PgOrdersView};
pub use view::{Notification, OrderSummary, OrdersProjection, OrdersView};

use crate::backend::ContextStore;
use crate::handling::{caused_by, decode, transient_unless_permanent};
use crate::history::{HistoryEntry, history};
use crate::messages::{self, CancelOrder, Message, ProcessOrder, RecordPayment, RecordShipment};
use crate::quotes::{QuoteError, QuotesClient, QuotesError};

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
    Quote(QuotesError),
    /// Storage failed.
    #[error("{0}")]
    Internal(String),
}

impl From<RepositoryError<OrderError>> for OrdersError {
    fn from(error: RepositoryError<OrderError>) -> Self {
        match error {
            RepositoryError::Rejected(rejected) => OrdersError::Rejected(rejected),
            other => OrdersError::Internal(other.to_string()),
        }
    }
}

/// Where the orders read model lives.
enum ReadModel {
    /// In memory, rebuilt from the log at start-up.
    Memory(MemoryReadModel<OrdersView>),
    /// In tables of the orders schema, kept by the projection daemon.
    Postgres(Arc<PgOrdersView>),
}

/// The state of the orders read model's projection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewStatus {
    /// The projection.
    pub name: String,
    /// `running`, `paused`, `starting` or `unknown` (its state could not be read).
    pub state: String,
    /// Events of the log it has not applied yet (counted up to 10,000 in memory).
    pub lag_events: u64,
    /// How long the oldest of them has waited, in seconds.
    pub lag_seconds: f64,
    /// Why it is paused.
    pub paused_reason: Option<String>,
    /// The last error.
    pub error: Option<String>,
}

impl ViewStatus {
    fn unreadable(error: String) -> Self {
        Self {
            name: "orders-view".to_owned(),
            state: "unknown".to_owned(),
            lag_events: 0,
            lag_seconds: 0.0,
            paused_reason: None,
            error: Some(error),
        }
    }
}

/// The orders context.
pub struct Orders {
    orders: Repository<Order, ContextStore>,
    quotes: Arc<dyn QuotesClient>,
    view: ReadModel,
    push: broadcast::Sender<Notification>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orders")
            .field("orders", &self.orders)
            .finish_non_exhaustive()
    }
}

impl Orders {
    /// The orders context over `store`, confirming quotes through `quotes`. Call
    /// [`run_view`](Self::run_view) to keep the read model and notifications current.
    pub fn new(store: ContextStore, quotes: Arc<dyn QuotesClient>, clock: Arc<dyn Clock>) -> Self {
        let view = match &store {
            ContextStore::Memory(_) => {
                ReadModel::Memory(MemoryReadModel::new(OrdersView::default()))
            }
            ContextStore::Postgres(pg) => {
                ReadModel::Postgres(Arc::new(PgOrdersView::new(pg.clone())))
            }
        };
        let orders = Repository::new(store)
            .with_clock(clock.clone())
            // Every order decision is safe to recompute on newer state.
            .with_conflict_retries(8)
            .with_outbox(integration_messages);
        let (push, _) = broadcast::channel(4096);
        Self {
            orders,
            quotes,
            view,
            push,
            clock,
        }
    }

    /// Creates the read model's tables (PostgreSQL), so reads work before its projection
    /// first runs.
    ///
    /// # Errors
    /// When the database refuses.
    pub async fn prepare(&self) -> Result<(), String> {
        match &self.view {
            ReadModel::Memory(_) => Ok(()),
            ReadModel::Postgres(view) => view.prepare().await,
        }
    }

    /// Keeps the read model and the notification feed current until `stopped` completes:
    /// in memory, catch-up then live on the orders store's global log, restarting after a
    /// failure; on PostgreSQL, the projection daemon (one node leading, its current batch
    /// finished at the stop) and the push of new notifications to this process's
    /// subscribers.
    pub async fn run_view(self: Arc<Self>, stopped: impl Future<Output = ()> + Send) {
        match &self.view {
            ReadModel::Memory(view) => {
                let projection = OrdersProjection::new(self.push.clone());
                let follow = async {
                    loop {
                        if let Err(error) = view.run(self.orders.store(), &projection).await {
                            tracing::error!(%error, "orders view stopped; restarting in 1 s");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                };
                tokio::select! {
                    () = stopped => {}
                    () = follow => {}
                }
            }
            ReadModel::Postgres(view) => view.clone().run(self.push.clone(), stopped).await,
        }
    }

    /// Live notifications of every customer (filter by customer).
    pub fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.push.subscribe()
    }

    /// A customer's notifications with an id above `after`, oldest first.
    ///
    /// # Errors
    /// [`OrdersError::Internal`] when the read model cannot be read.
    pub async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, OrdersError> {
        match &self.view {
            ReadModel::Memory(view) => Ok(view
                .read(|view| view.notifications(&customer_id, after))
                .await),
            ReadModel::Postgres(view) => view
                .notifications(customer_id, after)
                .await
                .map_err(OrdersError::Internal),
        }
    }

    /// Every order in the read model.
    ///
    /// # Errors
    /// [`OrdersError::Internal`] when the read model cannot be read.
    pub async fn all(&self) -> Result<Vec<OrderSummary>, OrdersError> {
        match &self.view {
            ReadModel::Memory(view) => Ok(view.read(|view| view.all().cloned().collect()).await),
            ReadModel::Postgres(view) => view.all().await.map_err(OrdersError::Internal),
        }
    }

    /// The read model's projection: where it is, how far behind, whether paused.
    pub async fn view_status(&self) -> ViewStatus {
        match &self.view {
            ReadModel::Memory(view) => {
                let at = view.checkpoint();
                let filter = OrdersProjection::new(self.push.clone()).filter();
                match self.orders.store().read_log(at, &filter, 10_000).await {
                    Ok(batch) => ViewStatus {
                        name: "orders-view".to_owned(),
                        state: "running".to_owned(),
                        lag_events: batch.events.len() as u64,
                        lag_seconds: batch.events.first().map_or(0.0, |e| {
                            (chrono::Utc::now() - e.metadata.timestamp)
                                .as_seconds_f64()
                                .max(0.0)
                        }),
                        paused_reason: None,
                        error: None,
                    },
                    Err(error) => ViewStatus::unreadable(error.to_string()),
                }
            }
            ReadModel::Postgres(view) => match view.status().await {
                Ok(Some(status)) => ViewStatus {
                    name: status.name,
                    state: status.state.as_str().to_owned(),
                    lag_events: status.lag_events,
                    lag_seconds: status.lag_time.as_secs_f64(),
                    paused_reason: status.paused_reason,
                    error: status.error,
                },
                Ok(None) => ViewStatus {
                    name: "orders-view".to_owned(),
                    state: "starting".to_owned(),
                    lag_events: 0,
                    lag_seconds: 0.0,
                    paused_reason: None,
                    error: None,
                },
                Err(error) => ViewStatus::unreadable(error),
            },
        }
    }

    async fn wait_for_view(&self, position: Position) {
        let reached = match &self.view {
            ReadModel::Memory(view) => view.wait_for(position, READ_YOUR_WRITES).await,
            ReadModel::Postgres(view) => view.wait_for(position, READ_YOUR_WRITES).await,
        };
        if !reached {
            tracing::warn!(%position, "the orders view did not show a write in time");
        }
    }

    /// Places the order of a quote: confirms the quote, then records the order, whose id is
    /// derived from the quote's. Placing the same quote again returns the same order.
    ///
    /// # Errors
    /// [`OrdersError::Quote`] when the quote is not the customer's, is cancelled or empty.
    pub async fn place(&self, customer_id: Uuid, quote_id: Uuid) -> Result<Uuid, OrdersError> {
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
            lines: quote.items,
            currency: quote.currency,
            placed_at: self.clock.now(),
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
    /// [`OrdersError::Internal`] when the read model cannot be read.
    pub async fn list(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, OrdersError> {
        match &self.view {
            ReadModel::Memory(view) => Ok(view.read(|view| view.for_customer(&customer_id)).await),
            ReadModel::Postgres(view) => view
                .for_customer(customer_id)
                .await
                .map_err(OrdersError::Internal),
        }
    }

    /// An order's history.
    ///
    /// # Errors
    /// [`OrderError::NotFound`] when it is not the customer's.
    pub async fn history(
        &self,
        customer_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<HistoryEntry>, OrdersError> {
        self.order(customer_id, order_id).await?;
        history(self.orders.store(), &stream(order_id)?, order_id)
            .await
            .map_err(|e| OrdersError::Internal(e.to_string()))
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

/// Handles the saga's commands: `ProcessOrder`, `RecordPayment`, `RecordShipment`,
/// `CancelOrder`.
#[async_trait]
impl MessageHandler for Orders {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let (order_id, command) = if let Some(c) = decode::<ProcessOrder>(delivery)? {
            (c.order_id, OrderCommand::Process)
        } else if let Some(c) = decode::<RecordPayment>(delivery)? {
            (c.order_id, OrderCommand::RecordPayment(c.payment_id))
        } else if let Some(c) = decode::<RecordShipment>(delivery)? {
            (c.order_id, OrderCommand::RecordShipment(c.shipment_id))
        } else if let Some(c) = decode::<CancelOrder>(delivery)? {
            (c.order_id, OrderCommand::Cancel(c.reason))
        } else {
            return Err(HandlerError::permanent(format!(
                "orders do not handle {}",
                delivery.message.message_type
            )));
        };
        let stream = StreamId::for_aggregate(<Order as es_core::Aggregate>::TYPE, order_id)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let context = caused_by(&delivery.message, "order-saga");
        match self.orders.execute(&stream, &command, &context).await {
            Ok(_) => Ok(()),
            Err(RepositoryError::Rejected(error)) => {
                // A command for an order that is not there (or no longer accepts it) can never
                // succeed: say so once and move on.
                tracing::warn!(%order_id, %error, command = %delivery.message.message_type, "order command refused");
                Ok(())
            }
            Err(error) => Err(transient_unless_permanent(error)),
        }
    }
}

fn integration_messages(
    stream: &StreamId,
    state: &Order,
    events: &[(OrderEvent, Metadata)],
) -> Vec<OutboxMessage> {
    let Some(placement) = &state.placement else {
        return Vec::new();
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
            message
                .with_source("order", stream.as_str())
                .caused_by(metadata)
        })
        .collect()
}

fn stream(order_id: Uuid) -> Result<StreamId, OrdersError> {
    StreamId::for_aggregate(<Order as es_core::Aggregate>::TYPE, order_id)
        .map_err(|e| OrdersError::Internal(e.to_string()))
}

impl From<QuoteError> for OrdersError {
    fn from(error: QuoteError) -> Self {
        OrdersError::Quote(QuotesError::Rejected(error))
    }
}
