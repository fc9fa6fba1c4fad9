//! Where the orders read model lives, behind one port: in memory (rebuilt from the log at
//! start-up, on any store) or in tables of the orders schema kept by the projection daemon
//! (PostgreSQL). The composition root picks one; the orders service reads through the port.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::memory::MemoryReadModel;
use es_core::privacy::Privacy;
use es_core::{EventStore, Position, Projection};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::pg_view::PgOrdersView;
use super::view::{Notification, OrderSummary, OrdersProjection, OrdersView};
use crate::storage::StorageError;

/// Completes when the read model should stop.
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

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
    fn new(state: &str) -> Self {
        Self {
            name: "orders-view".to_owned(),
            state: state.to_owned(),
            lag_events: 0,
            lag_seconds: 0.0,
            paused_reason: None,
            error: None,
        }
    }

    fn unreadable(error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new("unknown")
        }
    }
}

/// The orders read model and its feed of notifications.
#[async_trait]
pub trait OrdersReadModel: Send + Sync + 'static {
    /// Creates what reads need before the model first runs (tables).
    ///
    /// # Errors
    /// When the storage refuses.
    async fn prepare(&self) -> Result<(), StorageError>;

    /// Keeps the model and the notification feed current until `stopped` completes.
    async fn run(self: Arc<Self>, stopped: Stopped);

    /// Live notifications of every customer (filter by customer).
    fn subscribe(&self) -> broadcast::Receiver<Notification>;

    /// A customer's orders, oldest first.
    ///
    /// # Errors
    /// When the model cannot be read.
    async fn for_customer(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, StorageError>;

    /// Every order.
    ///
    /// # Errors
    /// When the model cannot be read.
    async fn all(&self) -> Result<Vec<OrderSummary>, StorageError>;

    /// A customer's notifications with an id above `after`, oldest first.
    ///
    /// # Errors
    /// When the model cannot be read.
    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, StorageError>;

    /// Waits until the model has applied `position`; false after `timeout`.
    async fn wait_for(&self, position: Position, timeout: Duration) -> bool;

    /// Where the projection is, how far behind, whether paused.
    async fn status(&self) -> ViewStatus;
}

/// The read model in memory, following the orders store's global log (catch-up, then live).
pub struct MemoryOrdersView<S> {
    store: S,
    privacy: Privacy,
    view: MemoryReadModel<OrdersView>,
    push: broadcast::Sender<Notification>,
}

impl<S> std::fmt::Debug for MemoryOrdersView<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryOrdersView").finish_non_exhaustive()
    }
}

impl<S: EventStore> MemoryOrdersView<S> {
    /// A model over `store`'s log, reading events through `privacy`.
    pub fn new(store: S, privacy: Privacy) -> Self {
        Self {
            store,
            privacy,
            view: MemoryReadModel::new(OrdersView::default()),
            push: broadcast::channel(4096).0,
        }
    }
}

#[async_trait]
impl<S: EventStore + 'static> OrdersReadModel for MemoryOrdersView<S> {
    async fn prepare(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn run(self: Arc<Self>, stopped: Stopped) {
        let projection = self
            .privacy
            .revealing(OrdersProjection::new(self.push.clone()));
        let follow = async {
            loop {
                if let Err(error) = self.view.run(&self.store, &projection).await {
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

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.push.subscribe()
    }

    async fn for_customer(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, StorageError> {
        Ok(self.view.read(|view| view.for_customer(&customer_id)).await)
    }

    async fn all(&self) -> Result<Vec<OrderSummary>, StorageError> {
        Ok(self.view.read(|view| view.all().cloned().collect()).await)
    }

    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, StorageError> {
        Ok(self
            .view
            .read(|view| view.notifications(&customer_id, after))
            .await)
    }

    async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        self.view.wait_for(position, timeout).await
    }

    async fn status(&self) -> ViewStatus {
        let filter = OrdersProjection::new(self.push.clone()).filter();
        match self
            .store
            .read_log(self.view.checkpoint(), &filter, 10_000)
            .await
        {
            Ok(batch) => ViewStatus {
                lag_events: batch.events.len() as u64,
                lag_seconds: batch.events.first().map_or(0.0, |e| {
                    (chrono::Utc::now() - e.metadata.timestamp)
                        .as_seconds_f64()
                        .max(0.0)
                }),
                ..ViewStatus::new("running")
            },
            Err(error) => ViewStatus::unreadable(error.to_string()),
        }
    }
}

#[async_trait]
impl OrdersReadModel for PgOrdersView {
    async fn prepare(&self) -> Result<(), StorageError> {
        PgOrdersView::prepare(self).await
    }

    async fn run(self: Arc<Self>, stopped: Stopped) {
        PgOrdersView::run(self, stopped).await;
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        PgOrdersView::subscribe(self)
    }

    async fn for_customer(&self, customer_id: Uuid) -> Result<Vec<OrderSummary>, StorageError> {
        PgOrdersView::for_customer(self, customer_id).await
    }

    async fn all(&self) -> Result<Vec<OrderSummary>, StorageError> {
        PgOrdersView::all(self).await
    }

    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, StorageError> {
        PgOrdersView::notifications(self, customer_id, after).await
    }

    async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        PgOrdersView::wait_for(self, position, timeout).await
    }

    async fn status(&self) -> ViewStatus {
        match PgOrdersView::status(self).await {
            Ok(Some(status)) => ViewStatus {
                name: status.name,
                state: status.state.as_str().to_owned(),
                lag_events: status.lag_events,
                lag_seconds: status.lag_time.as_secs_f64(),
                paused_reason: status.paused_reason,
                error: status.error,
            },
            Ok(None) => ViewStatus::new("starting"),
            Err(error) => ViewStatus::unreadable(error.to_string()),
        }
    }
}
