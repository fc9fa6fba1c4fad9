//! The spec's invariants, checked over every order once the system is idle: every order ends
//! Shipped, Delivered or Cancelled; a cancelled order holds no reserved stock and no
//! un-refunded payment; no order has two payments; stock never goes negative (nor is any
//! created or lost); every status change was pushed to the order's owner.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use es_core::SagaStore;
use uuid::Uuid;

use super::runtime::OrderSagaRunner;
use super::saga::ORDER_SAGA;
use crate::catalog::seed;
use crate::inventory::{Inventory, ReservationStatus, seeded_quantity};
use crate::orders::{OrderStatus, OrderSummary, Orders};
use crate::payments::{PaymentStatus, Payments};

/// What the invariants read: the orders, the stock, the payments and the order saga.
#[derive(Debug, Clone)]
pub struct Books {
    /// Orders.
    pub orders: Arc<Orders>,
    /// Inventory.
    pub inventory: Arc<Inventory>,
    /// Payments.
    pub payments: Arc<Payments>,
    /// The order saga.
    pub saga: Arc<OrderSagaRunner>,
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
pub async fn check(app: &Books) -> Report {
    let mut report = Report::default();
    let orders: Vec<OrderSummary> = match app.orders.all().await {
        Ok(orders) => orders,
        Err(error) => {
            report
                .violations
                .push(format!("orders view unreadable: {error}"));
            return report;
        }
    };
    report.orders = orders.len();
    let warehouse = match app.inventory.warehouse().await {
        Ok(warehouse) => warehouse,
        Err(error) => {
            report
                .violations
                .push(format!("inventory unreadable: {error}"));
            return report;
        }
    };
    for order in &orders {
        *report
            .by_status
            .entry(order.status.text().to_owned())
            .or_default() += 1;
        if let Some(reason) = &order.cancellation_reason {
            *report.by_reason.entry(reason.clone()).or_default() += 1;
        }
        check_order(app, order, &warehouse, &mut report.violations).await;
    }
    let held = warehouse.reserved();
    for (index, product) in seed().iter().enumerate() {
        let available = warehouse.available(&product.product_id).unwrap_or(0);
        let reserved = held.get(&product.product_id).copied().unwrap_or(0);
        if available + reserved != seeded_quantity(index) {
            report.violations.push(format!(
                "product {}: {available} available + {reserved} reserved != {} seeded",
                product.name,
                seeded_quantity(index)
            ));
        }
    }
    report
}

async fn check_order(
    app: &Books,
    order: &OrderSummary,
    warehouse: &crate::inventory::Warehouse,
    violations: &mut Vec<String>,
) {
    let id = order.order_id;
    if !order.status.is_terminal() {
        violations.push(format!("order {id} is still {}", order.status.text()));
    }
    let reservation = warehouse.reservation(&id);
    let payment = match app.payments.account(order.customer_id).await {
        Ok(account) => account.payment(&id).map(|p| p.status),
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
    match app.payments.payments_created(order.customer_id, id).await {
        Ok(count) if count > 1 => violations.push(format!("order {id} has {count} payments")),
        Ok(_) => {}
        Err(error) => violations.push(format!("order {id}: payments unreadable: {error}")),
    }
    match app.saga.store().load(ORDER_SAGA, &id.to_string()).await {
        Ok(Some(instance)) if instance.completed => {}
        Ok(Some(_)) => violations.push(format!("order {id}: its saga has not completed")),
        Ok(None) => violations.push(format!("order {id}: no saga")),
        Err(error) => violations.push(format!("order {id}: saga unreadable: {error}")),
    }
    let pushed: Vec<String> = app
        .orders
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
pub async fn settle(app: &Books, timeout: Duration) -> Report {
    let started = Instant::now();
    loop {
        let report = check(app).await;
        if report.holds() || started.elapsed() >= timeout {
            return report;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of every order, for reports.
pub async fn order_ids(app: &Books) -> Vec<Uuid> {
    app.orders
        .all()
        .await
        .map(|all| all.into_iter().map(|o| o.order_id).collect())
        .unwrap_or_default()
}
