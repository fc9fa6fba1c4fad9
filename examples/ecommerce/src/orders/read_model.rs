//! Where the orders read model lives, behind one port: in memory (rebuilt from the log at
//! start-up, on any store) or in tables of the orders schema kept by the projection daemon
//! (PostgreSQL). The composition root picks one; the orders service reads through the port.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use es_core::memory::MemoryReadModel;
use es_core::privacy::Privacy;
use es_core::{EventStore, LogFilter, Position, Projection};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::pg_view::PgOrdersView;
use super::view::{Notification, OrderSummary, OrdersProjection, OrdersView, RebuildError};
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
    /// The version serving reads.
    pub version: u32,
    /// The version a rebuild is filling, while one is under way.
    pub rebuilding: Option<u32>,
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
            version: 1,
            rebuilding: None,
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

    /// Rebuilds the model from the start of the log into a new version while the current one
    /// serves reads, then switches to it; returns the new version (the switch may come
    /// later: [`status`](Self::status) shows it).
    ///
    /// # Errors
    /// [`RebuildError::AlreadyRebuilding`], or the storage failed.
    async fn rebuild(&self) -> Result<u32, RebuildError>;
}

/// The read model in memory, following the orders store's global log (catch-up, then live).
pub struct MemoryOrdersView<S> {
    store: S,
    privacy: Privacy,
    /// The model serving reads (replaced by a rebuilt one).
    view: std::sync::RwLock<MemoryReadModel<OrdersView>>,
    /// The version of `view`, and the one being rebuilt (0: none).
    version: AtomicU32,
    rebuilding: AtomicU32,
    /// Tells the loop following the log that `view` was replaced.
    switched: Notify,
    push: broadcast::Sender<Notification>,
}

/// How long an in-memory rebuild may take to catch up.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(300);

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
            view: std::sync::RwLock::new(MemoryReadModel::new(OrdersView::default())),
            version: AtomicU32::new(1),
            rebuilding: AtomicU32::new(0),
            switched: Notify::new(),
            push: broadcast::channel(4096).0,
        }
    }

    /// The model serving reads now.
    fn model(&self) -> MemoryReadModel<OrdersView> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The position up to which the log reaches now (past events the view skips).
    async fn head(&self, filter: &LogFilter) -> Result<Position, StorageError> {
        let mut at = Position::START;
        loop {
            let batch = self.store.read_log(at, filter, 10_000).await?;
            at = at.max(batch.checkpoint);
            if batch.reached_end {
                return Ok(at);
            }
        }
    }

    /// Fills a fresh model up to the head of the log, then puts it in place of the serving
    /// one (the loop following the log goes on with it).
    async fn rebuild_into(&self, version: u32) -> Result<(), StorageError>
    where
        S: Clone + 'static,
    {
        let fresh = MemoryReadModel::new(OrdersView::default());
        // A rebuild pushes nothing: its notifications were pushed when they happened.
        let projection = self
            .privacy
            .revealing(OrdersProjection::new(broadcast::channel(1).0));
        let head = self.head(&projection.filter()).await?;
        let catch_up = tokio::spawn({
            let (fresh, store) = (fresh.clone(), self.store.clone());
            async move { fresh.run(&store, &projection).await }
        });
        let caught_up = fresh.wait_for(head, REBUILD_TIMEOUT).await;
        catch_up.abort();
        if !caught_up {
            let why = match catch_up.await {
                Ok(Err(error)) => error.to_string(),
                _ => format!("it did not reach {head} within {REBUILD_TIMEOUT:?}"),
            };
            return Err(StorageError::other(format!("the rebuild failed: {why}")));
        }
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        self.version.store(version, Ordering::SeqCst);
        self.switched.notify_one();
        Ok(())
    }
}

#[async_trait]
impl<S: EventStore + Clone + 'static> OrdersReadModel for MemoryOrdersView<S> {
    async fn prepare(&self) -> Result<(), StorageError> {
        Ok(())
    }

    async fn run(self: Arc<Self>, stopped: Stopped) {
        let projection = self
            .privacy
            .revealing(OrdersProjection::new(self.push.clone()));
        let follow = async {
            loop {
                let model = self.model();
                tokio::select! {
                    result = model.run(&self.store, &projection) => {
                        if let Err(error) = result {
                            tracing::error!(%error, "orders view stopped; restarting in 1 s");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    // A rebuilt model replaced this one: follow it from its checkpoint.
                    () = self.switched.notified() => {}
                }
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
        Ok(self
            .model()
            .read(|view| view.for_customer(&customer_id))
            .await)
    }

    async fn all(&self) -> Result<Vec<OrderSummary>, StorageError> {
        Ok(self
            .model()
            .read(|view| view.all().cloned().collect())
            .await)
    }

    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, StorageError> {
        Ok(self
            .model()
            .read(|view| view.notifications(&customer_id, after))
            .await)
    }

    async fn wait_for(&self, position: Position, timeout: Duration) -> bool {
        self.model().wait_for(position, timeout).await
    }

    async fn status(&self) -> ViewStatus {
        let filter = OrdersProjection::new(self.push.clone()).filter();
        match self
            .store
            .read_log(self.model().checkpoint(), &filter, 10_000)
            .await
        {
            Ok(batch) => ViewStatus {
                lag_events: batch.events.len() as u64,
                lag_seconds: batch.events.first().map_or(0.0, |e| {
                    (chrono::Utc::now() - e.metadata.timestamp)
                        .as_seconds_f64()
                        .max(0.0)
                }),
                version: self.version.load(Ordering::SeqCst),
                rebuilding: Some(self.rebuilding.load(Ordering::SeqCst)).filter(|v| *v > 0),
                ..ViewStatus::new("running")
            },
            Err(error) => ViewStatus::unreadable(error.to_string()),
        }
    }

    async fn rebuild(&self) -> Result<u32, RebuildError> {
        let version = self.version.load(Ordering::SeqCst) + 1;
        if let Err(under_way) =
            self.rebuilding
                .compare_exchange(0, version, Ordering::SeqCst, Ordering::SeqCst)
        {
            return Err(RebuildError::AlreadyRebuilding(under_way));
        }
        let rebuilt = self.rebuild_into(version).await;
        self.rebuilding.store(0, Ordering::SeqCst);
        rebuilt?;
        Ok(version)
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

    async fn rebuild(&self) -> Result<u32, RebuildError> {
        PgOrdersView::rebuild(self).await
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
                version: status.active_version,
                rebuilding: status.rebuild.map(|rebuild| rebuild.version),
            },
            Ok(None) => ViewStatus::new("starting"),
            Err(error) => ViewStatus::unreadable(error.to_string()),
        }
    }
}
