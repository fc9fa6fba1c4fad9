//! The orders read model: each customer's orders with their status history, and the
//! notification feed pushed to customers. Fed by a projection of the orders store's global
//! log, so a push can never fail a state change: it happens after the change committed.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{EventRegistry, LogFilter, Projection, ProjectionError, RecordedEvent};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use super::order::{Order, OrderEvent, OrderStatus};
use crate::messages::Line;
use crate::messages::total;
use crate::money::Currency;

/// One order as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSummary {
    /// The order.
    pub order_id: Uuid,
    /// Its quote.
    pub quote_id: Uuid,
    /// Its customer.
    pub customer_id: Uuid,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// Where it stands.
    pub status: OrderStatus,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Its currency.
    pub currency: Currency,
    /// Its total.
    pub total: Decimal,
    /// Every status it went through, in order.
    pub statuses: Vec<OrderStatus>,
}

/// A status change pushed to the order's customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Increasing across all notifications (the SSE event id).
    pub id: u64,
    /// The customer it is for.
    pub customer_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The new status (`Placed`, ..., `Cancelled`).
    pub status: String,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the change happened.
    pub at: DateTime<Utc>,
}

/// The read model.
#[derive(Debug, Default)]
pub struct OrdersView {
    orders: HashMap<Uuid, OrderSummary>,
    by_customer: HashMap<Uuid, Vec<Uuid>>,
    notifications: HashMap<Uuid, Vec<Notification>>,
    next_notification: u64,
}

impl OrdersView {
    /// A customer's orders, oldest first.
    pub fn for_customer(&self, customer_id: &Uuid) -> Vec<OrderSummary> {
        self.by_customer
            .get(customer_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.orders.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One order.
    pub fn order(&self, order_id: &Uuid) -> Option<&OrderSummary> {
        self.orders.get(order_id)
    }

    /// Every order.
    pub fn all(&self) -> impl Iterator<Item = &OrderSummary> {
        self.orders.values()
    }

    /// A customer's notifications with an id above `after`.
    pub fn notifications(&self, customer_id: &Uuid, after: u64) -> Vec<Notification> {
        self.notifications
            .get(customer_id)
            .map(|all| all.iter().filter(|n| n.id > after).cloned().collect())
            .unwrap_or_default()
    }
}

/// Projects order events into [`OrdersView`] and pushes each status change.
#[derive(Debug, Clone)]
pub struct OrdersProjection {
    push: broadcast::Sender<Notification>,
}

impl OrdersProjection {
    /// A projection pushing to `push`.
    pub fn new(push: broadcast::Sender<Notification>) -> Self {
        Self { push }
    }
}

#[async_trait]
impl Projection<OrdersView> for OrdersProjection {
    fn name(&self) -> &str {
        "orders-view"
    }

    fn filter(&self) -> LogFilter {
        LogFilter::all().stream_types([<Order as es_core::Aggregate>::TYPE])
    }

    async fn apply(
        &self,
        view: &mut OrdersView,
        recorded: &RecordedEvent,
    ) -> Result<(), ProjectionError> {
        let event: OrderEvent = recorded
            .decode(&EventRegistry::new())
            .map_err(ProjectionError::apply)?;
        let at = recorded.metadata.timestamp;
        if let OrderEvent::Placed(placement) = &event {
            if view.orders.contains_key(&placement.order_id) {
                return Ok(());
            }
            view.orders.insert(
                placement.order_id,
                OrderSummary {
                    order_id: placement.order_id,
                    quote_id: placement.quote_id,
                    customer_id: placement.customer_id,
                    created_at: placement.placed_at,
                    status: OrderStatus::Placed,
                    cancellation_reason: None,
                    lines: placement.lines.clone(),
                    currency: placement.currency,
                    total: total(&placement.lines),
                    statuses: Vec::new(),
                },
            );
            view.by_customer
                .entry(placement.customer_id)
                .or_default()
                .push(placement.order_id);
        }
        let order_id = event.order_id();
        let Some(status) = event.status() else {
            return Ok(());
        };
        let Some(order) = view.orders.get_mut(&order_id) else {
            return Err(ProjectionError::apply(format!(
                "order {order_id} changed before it was placed"
            )));
        };
        order.status = status;
        order.statuses.push(status);
        if let OrderEvent::Processed { total, .. } = &event {
            order.total = *total;
        }
        if let OrderEvent::Cancelled { reason, .. } = &event {
            order.cancellation_reason = Some(reason.clone());
        }
        view.next_notification += 1;
        let notification = Notification {
            id: view.next_notification,
            customer_id: order.customer_id,
            order_id,
            status: status.text().to_owned(),
            reason: order.cancellation_reason.clone(),
            at,
        };
        view.notifications
            .entry(order.customer_id)
            .or_default()
            .push(notification.clone());
        // Nobody listening is fine: the feed keeps it for when someone connects.
        let _ = self.push.send(notification);
        Ok(())
    }
}

/// Why a rebuild did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// One is under way already.
    #[error("a rebuild into version {0} is under way")]
    AlreadyRebuilding(u32),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}
