//! The spec's invariants, checked over every order once the system is idle: every order ends
//! Shipped, Delivered or Cancelled; a cancelled order holds no reserved stock and no
//! un-refunded payment; no order has two payments; stock never goes negative (nor is any
//! created or lost); every status change was pushed to the order's owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use es_core::{BoxError, DeadlineStore, SagaStore, TransactionalStore};
use es_saga::{SagaRunner, SagaView};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::catalog::seed;
use crate::inventory::{Inventory, ReservationStatus, StockUnit, seeded_quantity};
use crate::orders::{Notification, OrderStatus, OrderSummary, Orders, RebuildError, ViewStatus};
use crate::payments::{PaymentStatus, Payments};
use crate::workflow::saga::{OrderSaga, OrderSagaState};

/// Where an order's payment stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderPayment {
    /// Its status; `None` when the order has no payment.
    pub status: Option<PaymentStatus>,
    /// How many payments were ever created for the order.
    pub created: usize,
}

/// What the invariants read of inventory and payments: in one process their contexts
/// ([`LocalLedgers`]), in the split deployment their services' internal routes
/// (the remote module's `HttpLedgers`).
#[async_trait]
pub trait Ledgers: Send + Sync + 'static {
    /// An order's reservation.
    async fn reservation(&self, order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError>;
    /// A product's stock.
    async fn stock(&self, product_id: Uuid) -> Result<StockUnit, BoxError>;
    /// An order's payment.
    async fn payment(&self, customer_id: Uuid, order_id: Uuid) -> Result<OrderPayment, BoxError>;
}

/// The [`Ledgers`] of inventory and payments wired in this process.
pub struct LocalLedgers<S> {
    /// Inventory.
    pub inventory: Arc<Inventory<S>>,
    /// Payments.
    pub payments: Arc<Payments<S>>,
}

impl<S> std::fmt::Debug for LocalLedgers<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLedgers").finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: TransactionalStore> Ledgers for LocalLedgers<S> {
    async fn reservation(&self, order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError> {
        self.inventory
            .reservation(order_id)
            .await
            .map(|r| r.status)
            .map_err(Into::into)
    }

    async fn stock(&self, product_id: Uuid) -> Result<StockUnit, BoxError> {
        self.inventory.stock(product_id).await.map_err(Into::into)
    }

    async fn payment(&self, customer_id: Uuid, order_id: Uuid) -> Result<OrderPayment, BoxError> {
        let account = self.payments.account(customer_id).await?;
        Ok(OrderPayment {
            status: account.payment(&order_id).map(|p| p.status),
            created: self
                .payments
                .payments_created(customer_id, order_id)
                .await?,
        })
    }
}

/// What the invariants (and the operational view) read of the orders, the stock, the
/// payments and the order saga, whatever the backend.
#[async_trait]
pub trait Books: Send + Sync + std::fmt::Debug + 'static {
    /// Whether these books reach every context the invariants span (a split service other
    /// than orders does not: its status says so instead of checking).
    fn checks_invariants(&self) -> bool {
        true
    }
    /// Every order in the orders view.
    async fn orders(&self) -> Result<Vec<OrderSummary>, BoxError>;
    /// A customer's notifications with an id above `after`.
    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, BoxError>;
    /// Live notifications of every customer.
    fn subscribe(&self) -> broadcast::Receiver<Notification>;
    /// The orders view's projection.
    async fn view_status(&self) -> ViewStatus;
    /// Rebuilds the orders view into a new version; returns it.
    async fn rebuild_view(&self) -> Result<u32, RebuildError>;
    /// An order's reservation.
    async fn reservation(&self, order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError>;
    /// A product's stock.
    async fn stock(&self, product_id: Uuid) -> Result<StockUnit, BoxError>;
    /// An order's payment: its status and how many were ever created.
    async fn payment(&self, customer_id: Uuid, order_id: Uuid) -> Result<OrderPayment, BoxError>;
    /// The order's saga instance.
    async fn saga(&self, order_id: Uuid) -> Result<Option<SagaView<OrderSagaState>>, BoxError>;
}

/// The [`Books`] of the orders context and the order saga in this process, reading
/// inventory and payments through [`Ledgers`] (in this process or over HTTP).
pub struct ContextBooks<S, G> {
    /// Orders.
    pub orders: Arc<Orders<S>>,
    /// Inventory and payments.
    pub ledgers: Arc<dyn Ledgers>,
    /// The order saga.
    pub saga: Arc<SagaRunner<OrderSaga, G>>,
}

impl<S, G> std::fmt::Debug for ContextBooks<S, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextBooks").finish_non_exhaustive()
    }
}

#[async_trait]
impl<S, G> Books for ContextBooks<S, G>
where
    S: TransactionalStore,
    G: SagaStore + DeadlineStore + Clone + Send + Sync + 'static,
{
    async fn orders(&self) -> Result<Vec<OrderSummary>, BoxError> {
        self.orders.all().await.map_err(Into::into)
    }

    async fn notifications(
        &self,
        customer_id: Uuid,
        after: u64,
    ) -> Result<Vec<Notification>, BoxError> {
        self.orders
            .notifications(customer_id, after)
            .await
            .map_err(Into::into)
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.orders.subscribe()
    }

    async fn view_status(&self) -> ViewStatus {
        self.orders.view_status().await
    }

    async fn rebuild_view(&self) -> Result<u32, RebuildError> {
        self.orders.rebuild_view().await
    }

    async fn reservation(&self, order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError> {
        self.ledgers.reservation(order_id).await
    }

    async fn stock(&self, product_id: Uuid) -> Result<StockUnit, BoxError> {
        self.ledgers.stock(product_id).await
    }

    async fn payment(&self, customer_id: Uuid, order_id: Uuid) -> Result<OrderPayment, BoxError> {
        self.ledgers.payment(customer_id, order_id).await
    }

    async fn saga(&self, order_id: Uuid) -> Result<Option<SagaView<OrderSagaState>>, BoxError> {
        self.saga
            .instance(&order_id.to_string())
            .await
            .map_err(Into::into)
    }
}

/// What a check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Orders checked.
    pub orders: usize,
    /// Orders per final status.
    pub by_status: BTreeMap<String, usize>,
    /// Cancelled orders per reason.
    pub by_reason: BTreeMap<String, usize>,
    /// Every broken invariant, one line each.
    pub violations: Vec<String>,
}

impl Report {
    /// Whether every invariant holds.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks every invariant over every order the books know.
pub async fn check(app: &dyn Books) -> Report {
    let mut report = Report::default();
    let orders: Vec<OrderSummary> = match app.orders().await {
        Ok(orders) => orders,
        Err(error) => {
            report
                .violations
                .push(format!("orders view unreadable: {error}"));
            return report;
        }
    };
    report.orders = orders.len();
    for order in &orders {
        *report
            .by_status
            .entry(order.status.text().to_owned())
            .or_default() += 1;
        if let Some(reason) = &order.cancellation_reason {
            *report.by_reason.entry(reason.clone()).or_default() += 1;
        }
        check_order(app, order, &mut report.violations).await;
    }
    for (index, product) in seed().iter().enumerate() {
        match app.stock(product.product_id).await {
            Ok(unit) if unit.available + unit.held == seeded_quantity(index) => {}
            Ok(unit) => report.violations.push(format!(
                "product {}: {} available + {} reserved != {} seeded",
                product.name,
                unit.available,
                unit.held,
                seeded_quantity(index)
            )),
            Err(error) => report.violations.push(format!(
                "product {}: stock unreadable: {error}",
                product.name
            )),
        }
    }
    report
}

async fn check_order(app: &dyn Books, order: &OrderSummary, violations: &mut Vec<String>) {
    let id = order.order_id;
    if !order.status.is_terminal() {
        violations.push(format!("order {id} is still {}", order.status.text()));
    }
    let reservation = match app.reservation(id).await {
        Ok(reservation) => reservation,
        Err(error) => {
            violations.push(format!("order {id}: inventory unreadable: {error}"));
            return;
        }
    };
    let (payment, created) = match app.payment(order.customer_id, id).await {
        Ok(payment) => (payment.status, payment.created),
        Err(error) => {
            violations.push(format!("order {id}: payments unreadable: {error}"));
            return;
        }
    };
    match order.status {
        OrderStatus::Cancelled => {
            if reservation == Some(ReservationStatus::Reserved) {
                violations.push(format!("cancelled order {id} still holds stock"));
            }
            if payment == Some(PaymentStatus::Completed) {
                violations.push(format!("cancelled order {id} has an un-refunded payment"));
            }
        }
        OrderStatus::Shipped | OrderStatus::Delivered => {
            if reservation != Some(ReservationStatus::Reserved) {
                violations.push(format!(
                    "shipped order {id} has no stock reserved ({reservation:?})"
                ));
            }
            if payment != Some(PaymentStatus::Completed) {
                violations.push(format!("shipped order {id} is not paid ({payment:?})"));
            }
        }
        _ => {}
    }
    if created > 1 {
        violations.push(format!("order {id} has {created} payments"));
    }
    match app.saga(id).await {
        Ok(Some(instance)) if instance.completed => {}
        Ok(Some(_)) => violations.push(format!("order {id}: its saga has not completed")),
        Ok(None) => violations.push(format!("order {id}: no saga")),
        Err(error) => violations.push(format!("order {id}: saga unreadable: {error}")),
    }
    let pushed: Vec<String> = app
        .notifications(order.customer_id, 0)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.order_id == id)
        .map(|n| n.status)
        .collect();
    let statuses: Vec<String> = order.statuses.iter().map(|s| s.text().to_owned()).collect();
    if pushed != statuses {
        violations.push(format!(
            "order {id}: pushed {pushed:?}, went through {statuses:?}"
        ));
    }
}

/// Checks until every invariant holds or `timeout` passes; returns the last report.
pub async fn settle(app: &dyn Books, timeout: Duration) -> Report {
    let started = Instant::now();
    loop {
        let report = check(app).await;
        if report.holds() || started.elapsed() >= timeout {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
