//! The order saga: drives an order from placement to shipment, compensating every completed
//! step when a later one fails, when the customer cancels, or when a step gets no answer in
//! time. Late answers are decided by the state, never dropped: a payment that completes after
//! the order was cancelled is refunded, a reservation confirmed after it is released.

use chrono::TimeDelta;
use es_core::OutboxMessage;
use es_saga::{CompensatingCommand, CompletedSteps, Decision, Input, MessageType, Route, Saga};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::{
    self, CancelOrder, CancelShipment, Line, Message, OrderProcessed, PackageShipped,
    PaymentCompleted, PaymentFailed, ProcessOrder, RecordPayment, RecordShipment, RefundPayment,
    ReleaseStock, RequestPayment, RequestShipment, ReserveStock, topics,
};
use crate::orders::reasons;

/// The saga's persisted name.
pub const ORDER_SAGA: &str = "order-saga";

/// Where an order's workflow stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Before `OrderPlaced`.
    #[default]
    New,
    /// `ProcessOrder` sent.
    Processing,
    /// `ReserveStock` sent.
    Reserving,
    /// `RequestPayment` sent.
    Paying,
    /// `RequestShipment` sent.
    Shipping,
    /// Shipped: done.
    Shipped,
    /// Cancelled: done (late answers are still compensated).
    Cancelled,
}

/// The saga's state for one order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderSagaState {
    /// Where the workflow stands.
    pub stage: Stage,
    /// The customer.
    pub customer_id: Option<Uuid>,
    /// The order's lines, once processed.
    pub lines: Vec<Line>,
    /// The total, once processed.
    #[serde(with = "rust_decimal::serde::float")]
    pub total: Decimal,
    /// Its currency code.
    pub currency_code: String,
    /// Completed steps and what undoes them.
    pub steps: CompletedSteps,
    /// Why the order was cancelled.
    pub cancel_reason: Option<String>,
    /// The customer asked to cancel while the shipment was under way.
    pub cancel_requested: bool,
    /// Late answers compensated after the cancellation, by type.
    pub late: Vec<String>,
}

/// The order saga, with the time each step may take.
#[derive(Debug, Clone, Copy)]
pub struct OrderSaga {
    /// How long a step may go unanswered before the order is cancelled.
    pub step_timeout: TimeDelta,
}

impl Default for OrderSaga {
    fn default() -> Self {
        Self {
            step_timeout: TimeDelta::seconds(60),
        }
    }
}

/// Why the saga could not handle a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrderSagaError {
    /// A message's payload does not fit its type.
    #[error("malformed {0}: {1}")]
    Malformed(&'static str, serde_json::Error),
    /// A compensating command could not be encoded.
    #[error(transparent)]
    Codec(#[from] es_saga::CodecError),
}

fn decode<T: Message>(input: &Input<'_>) -> Result<T, OrderSagaError> {
    serde_json::from_value(input.message.payload.clone())
        .map_err(|e| OrderSagaError::Malformed(T::MESSAGE_TYPE, e))
}

/// Puts a compensating command on its context's command topic.
fn routed(mut command: OutboxMessage) -> OutboxMessage {
    let topic = match command.message_type.as_str() {
        t if t == ReleaseStock::MESSAGE_TYPE => topics::INVENTORY_COMMANDS,
        t if t == RefundPayment::MESSAGE_TYPE => topics::PAYMENT_COMMANDS,
        t if t == CancelShipment::MESSAGE_TYPE => topics::SHIPMENT_COMMANDS,
        _ => topics::ORDER_COMMANDS,
    };
    command.topic = Some(topic.to_owned());
    command
}

impl OrderSaga {
    fn cancel(
        &self,
        mut state: OrderSagaState,
        order_id: Uuid,
        reason: &str,
    ) -> Decision<OrderSagaState> {
        let undo: Vec<OutboxMessage> = state.steps.compensate().into_iter().map(routed).collect();
        let shipping = state.stage == Stage::Shipping;
        state.stage = Stage::Cancelled;
        state.cancel_reason = Some(reason.to_owned());
        let mut decision = Decision::new(state).send_all(undo);
        if shipping {
            decision = decision.send(CancelShipment { order_id }.to_message());
        }
        decision
            .send(
                CancelOrder {
                    order_id,
                    reason: reason.to_owned(),
                }
                .to_message(),
            )
            .complete()
    }
}

impl Saga for OrderSaga {
    const NAME: &'static str = ORDER_SAGA;
    type State = OrderSagaState;
    type Error = OrderSagaError;

    fn route(&self, message: &OutboxMessage) -> Route {
        let Some(order_id) = message.payload.get("orderId").and_then(|v| v.as_str()) else {
            return Route::Ignore;
        };
        let order_id = order_id.to_owned();
        match message.message_type.as_str() {
            t if t == messages::OrderPlaced::MESSAGE_TYPE => Route::Start(order_id),
            "OrderProcessed"
            | "CancellationRequested"
            | "StockReserved"
            | "StockUnavailable"
            | "PaymentCompleted"
            | "PaymentFailed"
            | "PackageShipped"
            | "ShipmentFailed"
            | "ShipmentCancelled" => Route::Continue(order_id),
            _ => Route::Ignore,
        }
    }

    fn handle(
        &self,
        mut state: OrderSagaState,
        input: &Input<'_>,
    ) -> Result<Decision<OrderSagaState>, OrderSagaError> {
        let order_id = Uuid::parse_str(input.key).map_err(|e| {
            OrderSagaError::Malformed("order id", serde_json::Error::io(std::io::Error::other(e)))
        })?;
        if let Some(step) = input.deadline_step() {
            if matches!(state.stage, Stage::Shipped | Stage::Cancelled) {
                return Ok(Decision::new(state));
            }
            tracing::warn!(%order_id, step, "step timed out; cancelling the order");
            return Ok(self.cancel(state, order_id, reasons::PROCESSING_ERROR));
        }
        let timeout = self.step_timeout;
        use Stage::*;
        let decision = match (state.stage, input.message_type()) {
            (New, "OrderPlaced") => {
                let placed: messages::OrderPlaced = decode(input)?;
                state.stage = Processing;
                state.customer_id = Some(placed.customer_id);
                Decision::new(state)
                    .send(ProcessOrder { order_id }.to_message())
                    .set_deadline("process", timeout)
            }
            (Processing, "OrderProcessed") => {
                let processed: OrderProcessed = decode(input)?;
                state.stage = Reserving;
                state.lines.clone_from(&processed.lines);
                state.total = processed.total;
                state.currency_code.clone_from(&processed.currency_code);
                Decision::new(state)
                    .cancel_deadline("process")
                    .send(
                        ReserveStock {
                            order_id,
                            lines: processed.lines,
                        }
                        .to_message(),
                    )
                    .set_deadline("stock", timeout)
            }
            (Reserving, "StockReserved") => {
                state.steps.record(
                    "stock",
                    Some(CompensatingCommand::new(&ReleaseStock { order_id })?),
                );
                state.stage = Paying;
                let customer_id = state.customer_id.unwrap_or_default();
                let request = RequestPayment {
                    order_id,
                    customer_id,
                    amount: state.total,
                    currency_code: state.currency_code.clone(),
                };
                Decision::new(state)
                    .cancel_deadline("stock")
                    .send(request.to_message())
                    .set_deadline("payment", timeout)
            }
            (Reserving, "StockUnavailable") => self.cancel(state, order_id, reasons::OUT_OF_STOCK),
            (Paying, "PaymentCompleted") => {
                let completed: PaymentCompleted = decode(input)?;
                let customer_id = state.customer_id.unwrap_or_default();
                state.steps.record(
                    "payment",
                    Some(CompensatingCommand::new(&RefundPayment {
                        order_id,
                        customer_id,
                    })?),
                );
                state.stage = Shipping;
                let ship = RequestShipment {
                    order_id,
                    customer_id,
                    total: state.total,
                };
                Decision::new(state)
                    .cancel_deadline("payment")
                    .send(
                        RecordPayment {
                            order_id,
                            payment_id: completed.payment_id,
                        }
                        .to_message(),
                    )
                    .send(ship.to_message())
                    .set_deadline("shipment", timeout)
            }
            (Paying, "PaymentFailed") => {
                let failed: PaymentFailed = decode(input)?;
                let reason = if failed.reason == reasons::CREDIT_LIMIT_REACHED {
                    reasons::CREDIT_LIMIT_REACHED
                } else {
                    reasons::PAYMENT_FAILED
                };
                self.cancel(state, order_id, reason)
            }
            (Shipping, "PackageShipped") => {
                let shipped: PackageShipped = decode(input)?;
                state.stage = Shipped;
                Decision::new(state)
                    .cancel_deadline("shipment")
                    .send(
                        RecordShipment {
                            order_id,
                            shipment_id: shipped.shipment_id,
                        }
                        .to_message(),
                    )
                    .complete()
            }
            (Shipping, "ShipmentFailed") => self.cancel(state, order_id, reasons::SHIPMENT_FAILED),
            (Shipping, "ShipmentCancelled") => {
                self.cancel(state, order_id, reasons::CANCELLED_BY_CUSTOMER)
            }
            (Processing | Reserving | Paying, "CancellationRequested") => {
                self.cancel(state, order_id, reasons::CANCELLED_BY_CUSTOMER)
            }
            (Shipping, "CancellationRequested") => {
                // The package may already be on its way: ask shipments to stop it, and decide
                // on their answer (cancelled → compensate; shipped → too late).
                state.cancel_requested = true;
                Decision::new(state).send(CancelShipment { order_id }.to_message())
            }
            (Cancelled, "StockReserved") => {
                state.late.push("StockReserved".to_owned());
                Decision::new(state).send(ReleaseStock { order_id }.to_message())
            }
            (Cancelled, "PaymentCompleted") => {
                state.late.push("PaymentCompleted".to_owned());
                let customer_id = state.customer_id.unwrap_or_default();
                Decision::new(state).send(
                    RefundPayment {
                        order_id,
                        customer_id,
                    }
                    .to_message(),
                )
            }
            (Cancelled, "PackageShipped") => {
                // Nothing can call a package back; the order stays cancelled and refunded.
                tracing::warn!(%order_id, "a package shipped after its order was cancelled");
                state.late.push("PackageShipped".to_owned());
                Decision::new(state)
            }
            _ => Decision::new(state),
        };
        Ok(decision)
    }
}
