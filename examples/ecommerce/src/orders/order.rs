//! The order aggregate: Placed → Processed → Paid → Shipped → Delivered, or Cancelled with a
//! reason. Every command the saga sends is idempotent: a duplicate decides nothing.

pub use crate::messages::reasons;
use chrono::{DateTime, Utc};
use es_core::privacy::Personal;
use es_core::{Aggregate, DomainEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::total;
use crate::messages::{Line, ShipTo};
use crate::money::Currency;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Placed from a confirmed quote.
    Placed,
    /// Lines and total priced.
    Processed,
    /// Paid.
    Paid,
    /// Shipped.
    Shipped,
    /// Delivery confirmed by the customer.
    Delivered,
    /// Cancelled (see the reason).
    Cancelled,
}

impl OrderStatus {
    /// The wire text (`statusText`).
    pub fn text(self) -> &'static str {
        match self {
            Self::Placed => "Placed",
            Self::Processed => "Processed",
            Self::Paid => "Paid",
            Self::Shipped => "Shipped",
            Self::Delivered => "Delivered",
            Self::Cancelled => "Cancelled",
        }
    }

    /// The wire code (`statusCode`).
    pub fn code(self) -> u8 {
        match self {
            Self::Placed => 1,
            Self::Processed => 2,
            Self::Paid => 3,
            Self::Shipped => 4,
            Self::Delivered => 5,
            Self::Cancelled => 6,
        }
    }

    /// Whether the order can still change through the workflow.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Shipped | Self::Delivered | Self::Cancelled)
    }
}

/// An order as placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The order id (derived from the quote id).
    pub order_id: Uuid,
    /// The customer.
    pub customer_id: Uuid,
    /// The confirmed quote.
    pub quote_id: Uuid,
    /// The lines, priced at confirmation.
    pub lines: Vec<Line>,
    /// The currency.
    pub currency: Currency,
    /// When.
    pub placed_at: DateTime<Utc>,
    /// Where it goes (absent for orders placed before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to: Option<Personal<ShipTo>>,
}

/// The state of an order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// The placement, once placed.
    pub placement: Option<Placement>,
    /// Where it stands.
    pub status: Option<OrderStatus>,
    /// The total, once processed.
    pub total: Option<Decimal>,
    /// The payment, once paid.
    pub payment_id: Option<Uuid>,
    /// The shipment, once shipped.
    pub shipment_id: Option<Uuid>,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// Whether the customer asked to cancel.
    pub cancellation_requested: bool,
}

/// What an order can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Places the order (once; again is a no-op).
    Place(Placement),
    /// Prices lines and total.
    Process,
    /// Records the payment.
    RecordPayment(Uuid),
    /// Records the shipment.
    RecordShipment(Uuid),
    /// Cancels (the saga's decision).
    Cancel(String),
    /// The customer asks to cancel (allowed until shipped).
    RequestCancellation,
    /// The customer confirms delivery.
    ConfirmDelivery,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OrderEvent {
    /// Placed.
    #[serde(rename = "OrderPlaced")]
    Placed(Placement),
    /// Lines and total priced.
    #[serde(rename = "OrderProcessed", rename_all = "camelCase")]
    Processed {
        /// The order.
        order_id: Uuid,
        /// The total.
        #[serde(with = "crate::money::amount")]
        total: Decimal,
    },
    /// Paid.
    #[serde(rename = "OrderPaid", rename_all = "camelCase")]
    Paid {
        /// The order.
        order_id: Uuid,
        /// The payment.
        payment_id: Uuid,
    },
    /// Shipped.
    #[serde(rename = "OrderShipped", rename_all = "camelCase")]
    Shipped {
        /// The order.
        order_id: Uuid,
        /// The shipment.
        shipment_id: Uuid,
    },
    /// Delivered.
    #[serde(rename = "OrderDelivered", rename_all = "camelCase")]
    Delivered {
        /// The order.
        order_id: Uuid,
    },
    /// Cancelled.
    #[serde(rename = "OrderCancelled", rename_all = "camelCase")]
    Cancelled {
        /// The order.
        order_id: Uuid,
        /// Why.
        reason: String,
    },
    /// The customer asked to cancel.
    #[serde(rename = "OrderCancellationRequested", rename_all = "camelCase")]
    CancellationRequested {
        /// The order.
        order_id: Uuid,
    },
}

impl OrderEvent {
    /// The order the event belongs to.
    pub fn order_id(&self) -> Uuid {
        match self {
            Self::Placed(placement) => placement.order_id,
            Self::Processed { order_id, .. }
            | Self::Paid { order_id, .. }
            | Self::Shipped { order_id, .. }
            | Self::Delivered { order_id }
            | Self::Cancelled { order_id, .. }
            | Self::CancellationRequested { order_id } => *order_id,
        }
    }

    /// The status an event moves the order to, if it does.
    pub fn status(&self) -> Option<OrderStatus> {
        match self {
            Self::Placed(_) => Some(OrderStatus::Placed),
            Self::Processed { .. } => Some(OrderStatus::Processed),
            Self::Paid { .. } => Some(OrderStatus::Paid),
            Self::Shipped { .. } => Some(OrderStatus::Shipped),
            Self::Delivered { .. } => Some(OrderStatus::Delivered),
            Self::Cancelled { .. } => Some(OrderStatus::Cancelled),
            Self::CancellationRequested { .. } => None,
        }
    }
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// No such order.
    #[error("no such order")]
    NotFound,
    /// Too late to cancel.
    #[error("the order is {0:?}: it can no longer be cancelled")]
    CannotCancel(OrderStatus),
    /// Delivery can only be confirmed once shipped.
    #[error("the order is {0:?}: delivery can be confirmed once it has shipped")]
    NotShipped(OrderStatus),
    /// An order needs a line.
    #[error("an order needs at least one line")]
    NoLines,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn decide(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        use OrderStatus::*;
        let Some(status) = self.status else {
            return match command {
                OrderCommand::Place(placement) if placement.lines.is_empty() => {
                    Err(OrderError::NoLines)
                }
                OrderCommand::Place(placement) => Ok(vec![OrderEvent::Placed(placement.clone())]),
                _ => Err(OrderError::NotFound),
            };
        };
        let order_id = self
            .placement
            .as_ref()
            .map(|p| p.order_id)
            .unwrap_or_default();
        let events = match (command, status) {
            (OrderCommand::Process, Placed) => {
                let lines = self
                    .placement
                    .as_ref()
                    .map(|p| p.lines.as_slice())
                    .unwrap_or_default();
                vec![OrderEvent::Processed {
                    order_id,
                    total: total(lines),
                }]
            }
            (OrderCommand::RecordPayment(payment_id), Processed) => vec![OrderEvent::Paid {
                order_id,
                payment_id: *payment_id,
            }],
            (OrderCommand::RecordShipment(shipment_id), Paid) => vec![OrderEvent::Shipped {
                order_id,
                shipment_id: *shipment_id,
            }],
            (OrderCommand::Cancel(reason), Placed | Processed | Paid) => {
                vec![OrderEvent::Cancelled {
                    order_id,
                    reason: reason.clone(),
                }]
            }
            (OrderCommand::RequestCancellation, Placed | Processed | Paid) => {
                if self.cancellation_requested {
                    Vec::new()
                } else {
                    vec![OrderEvent::CancellationRequested { order_id }]
                }
            }
            (OrderCommand::RequestCancellation, other) => {
                return Err(OrderError::CannotCancel(other));
            }
            (OrderCommand::ConfirmDelivery, Shipped) => vec![OrderEvent::Delivered { order_id }],
            (OrderCommand::ConfirmDelivery, Delivered) => Vec::new(),
            (OrderCommand::ConfirmDelivery, other) => return Err(OrderError::NotShipped(other)),
            // Duplicates and commands overtaken by a cancellation decide nothing.
            _ => Vec::new(),
        };
        Ok(events)
    }

    fn evolve(&mut self, event: &OrderEvent) {
        if let Some(status) = event.status() {
            self.status = Some(status);
        }
        match event {
            OrderEvent::Placed(placement) => self.placement = Some(placement.clone()),
            OrderEvent::Processed { total, .. } => self.total = Some(*total),
            OrderEvent::Paid { payment_id, .. } => self.payment_id = Some(*payment_id),
            OrderEvent::Shipped { shipment_id, .. } => self.shipment_id = Some(*shipment_id),
            OrderEvent::Cancelled { reason, .. } => self.cancellation_reason = Some(reason.clone()),
            OrderEvent::CancellationRequested { .. } => self.cancellation_requested = true,
            OrderEvent::Delivered { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0d);

    fn placement() -> Placement {
        Placement {
            order_id: ORDER,
            customer_id: Uuid::from_u128(0xc),
            quote_id: Uuid::from_u128(0x9),
            lines: vec![Line {
                product_id: Uuid::from_u128(0xa),
                product_name: "Keyboard".to_owned(),
                unit_price: Decimal::new(8999, 2),
                quantity: 2,
            }],
            currency: Currency::Usd,
            placed_at: DateTime::<Utc>::MIN_UTC,
            ship_to: None,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::Placed(placement())
    }

    fn processed() -> OrderEvent {
        OrderEvent::Processed {
            order_id: ORDER,
            total: Decimal::new(17998, 2),
        }
    }

    fn paid() -> OrderEvent {
        OrderEvent::Paid {
            order_id: ORDER,
            payment_id: Uuid::from_u128(0xf),
        }
    }

    fn shipped() -> OrderEvent {
        OrderEvent::Shipped {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0xe),
        }
    }

    #[test]
    fn places_once() {
        given::<Order>([])
            .when(OrderCommand::Place(placement()))
            .then([placed()]);
        given::<Order>([placed()])
            .when(OrderCommand::Place(placement()))
            .then([]);
        given::<Order>([])
            .when(OrderCommand::Place(Placement {
                lines: Vec::new(),
                ..placement()
            }))
            .then_error(OrderError::NoLines);
    }

    #[test]
    fn moves_through_the_workflow_once_per_step() {
        given::<Order>([placed()])
            .when(OrderCommand::Process)
            .then([processed()]);
        given::<Order>([placed(), processed()])
            .when(OrderCommand::Process)
            .then([]);
        given::<Order>([placed(), processed()])
            .when(OrderCommand::RecordPayment(Uuid::from_u128(0xf)))
            .then([paid()]);
        given::<Order>([placed(), processed(), paid()])
            .when(OrderCommand::RecordPayment(Uuid::from_u128(0xf)))
            .then([]);
        let state = given::<Order>([placed(), processed(), paid()])
            .when(OrderCommand::RecordShipment(Uuid::from_u128(0xe)))
            .then([shipped()]);
        assert_eq!(state.status, Some(OrderStatus::Shipped));
        given::<Order>([placed(), processed(), paid(), shipped()])
            .when(OrderCommand::ConfirmDelivery)
            .then([OrderEvent::Delivered { order_id: ORDER }]);
    }

    #[test]
    fn delivery_needs_a_shipment() {
        given::<Order>([placed(), processed(), paid()])
            .when(OrderCommand::ConfirmDelivery)
            .then_error(OrderError::NotShipped(OrderStatus::Paid));
        given::<Order>([])
            .when(OrderCommand::ConfirmDelivery)
            .then_error(OrderError::NotFound);
    }

    #[test]
    fn customers_cancel_until_shipped() {
        for history in [
            vec![placed()],
            vec![placed(), processed()],
            vec![placed(), processed(), paid()],
        ] {
            given::<Order>(history)
                .when(OrderCommand::RequestCancellation)
                .then([OrderEvent::CancellationRequested { order_id: ORDER }]);
        }
        given::<Order>([
            placed(),
            OrderEvent::CancellationRequested { order_id: ORDER },
        ])
        .when(OrderCommand::RequestCancellation)
        .then([]);
        given::<Order>([placed(), processed(), paid(), shipped()])
            .when(OrderCommand::RequestCancellation)
            .then_error(OrderError::CannotCancel(OrderStatus::Shipped));
    }

    #[test]
    fn a_cancelled_order_ignores_later_steps() {
        let cancelled = OrderEvent::Cancelled {
            order_id: ORDER,
            reason: reasons::OUT_OF_STOCK.to_owned(),
        };
        given::<Order>([placed(), processed()])
            .when(OrderCommand::Cancel(reasons::OUT_OF_STOCK.to_owned()))
            .then([cancelled.clone()]);
        for command in [
            OrderCommand::RecordPayment(Uuid::from_u128(0xf)),
            OrderCommand::Cancel(reasons::PAYMENT_FAILED.to_owned()),
            OrderCommand::Process,
        ] {
            given::<Order>([placed(), processed(), cancelled.clone()])
                .when(command)
                .then([]);
        }
        given::<Order>([placed(), processed(), cancelled])
            .when(OrderCommand::RequestCancellation)
            .then_error(OrderError::CannotCancel(OrderStatus::Cancelled));
    }
}
