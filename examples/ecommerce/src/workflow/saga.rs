//! The order saga: drives an order from placement to shipment, compensating every completed
//! step when a later one fails, when the customer cancels, or when a step gets no answer in
//! time. Late answers are decided by the state, never dropped: a payment that completes after
//! the order was cancelled is refunded, a reservation confirmed after it is released.

use chrono::TimeDelta;
use es_core::OutboxMessage;
use es_core::privacy::Personal;
use es_saga::{CompensatingCommand, CompletedSteps, Decision, Input, MessageType, Route, Saga};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::reasons;
use crate::messages::{
    self, CancelOrder, CancelShipment, Line, Message, OrderProcessed, PackageShipped,
    PaymentCompleted, PaymentFailed, ProcessOrder, RecordPayment, RecordShipment, RefundPayment,
    ReleaseStock, RequestPayment, RequestShipment, ReserveStock, ShipTo, topics,
};

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
    /// Where the order goes (the customer's personal data: stored encrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_to: Option<Personal<ShipTo>>,
    /// The order's lines, once processed.
    pub lines: Vec<Line>,
    /// The total, once processed.
    #[serde(with = "crate::money::amount")]
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

/// The topics the order saga reads: every context's events.
pub const TOPICS: [&str; 4] = [
    topics::ORDERS,
    topics::INVENTORY,
    topics::PAYMENTS,
    topics::SHIPMENTS,
];

/// The products of an order's lines.
fn product_ids(lines: &[Line]) -> Vec<Uuid> {
    lines.iter().map(|line| line.product_id).collect()
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
    /// A command could not be encoded.
    #[error("cannot encode a command: {0}")]
    Encode(#[from] serde_json::Error),
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
    ) -> Result<Decision<OrderSagaState>, OrderSagaError> {
        let undo: Vec<OutboxMessage> = state.steps.compensate().into_iter().map(routed).collect();
        // A shipment still under way is stopped; one that failed or was cancelled is not.
        let shipping = state.stage == Stage::Shipping
            && reason != reasons::SHIPMENT_FAILED
            && reason != reasons::CANCELLED_BY_CUSTOMER;
        state.stage = Stage::Cancelled;
        state.cancel_reason = Some(reason.to_owned());
        let mut decision = Decision::new(state).send_all(undo);
        if shipping {
            decision = decision.send(CancelShipment { order_id }.to_message()?);
        }
        Ok(decision
            .send(
                CancelOrder {
                    order_id,
                    reason: reason.to_owned(),
                }
                .to_message()?,
            )
            .complete())
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
            return self.cancel(state, order_id, reasons::PROCESSING_ERROR);
        }
        let timeout = self.step_timeout;
        use Stage::*;
        let decision = match (state.stage, input.message_type()) {
            (New, "OrderPlaced") => {
                let placed: messages::OrderPlaced = decode(input)?;
                state.stage = Processing;
                state.customer_id = Some(placed.customer_id);
                state.ship_to = placed.ship_to;
                Decision::new(state)
                    .send(ProcessOrder { order_id }.to_message()?)
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
                        .to_message()?,
                    )
                    .set_deadline("stock", timeout)
            }
            (Reserving, "StockReserved") => {
                state.steps.record(
                    "stock",
                    Some(CompensatingCommand::new(&ReleaseStock {
                        order_id,
                        product_ids: product_ids(&state.lines),
                    })?),
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
                    .send(request.to_message()?)
                    .set_deadline("payment", timeout)
            }
            (Reserving, "StockUnavailable") => {
                self.cancel(state, order_id, reasons::OUT_OF_STOCK)?
            }
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
                    ship_to: state.ship_to.clone(),
                };
                Decision::new(state)
                    .cancel_deadline("payment")
                    .send(
                        RecordPayment {
                            order_id,
                            payment_id: completed.payment_id,
                        }
                        .to_message()?,
                    )
                    .send(ship.to_message()?)
                    .set_deadline("shipment", timeout)
            }
            (Paying, "PaymentFailed") => {
                let failed: PaymentFailed = decode(input)?;
                let reason = if failed.reason == reasons::CREDIT_LIMIT_REACHED {
                    reasons::CREDIT_LIMIT_REACHED
                } else {
                    reasons::PAYMENT_FAILED
                };
                self.cancel(state, order_id, reason)?
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
                        .to_message()?,
                    )
                    .complete()
            }
            (Shipping, "ShipmentFailed") => {
                self.cancel(state, order_id, reasons::SHIPMENT_FAILED)?
            }
            (Shipping, "ShipmentCancelled") => {
                self.cancel(state, order_id, reasons::CANCELLED_BY_CUSTOMER)?
            }
            (Processing | Reserving | Paying, "CancellationRequested") => {
                self.cancel(state, order_id, reasons::CANCELLED_BY_CUSTOMER)?
            }
            (Shipping, "CancellationRequested") => {
                // The package may already be on its way: ask shipments to stop it, and decide
                // on their answer (cancelled → compensate; shipped → too late).
                state.cancel_requested = true;
                Decision::new(state).send(CancelShipment { order_id }.to_message()?)
            }
            (Cancelled, "StockReserved") => {
                state.late.push("StockReserved".to_owned());
                let release = ReleaseStock {
                    order_id,
                    product_ids: product_ids(&state.lines),
                };
                Decision::new(state).send(release.to_message()?)
            }
            (Cancelled, "PaymentCompleted") => {
                state.late.push("PaymentCompleted".to_owned());
                let customer_id = state.customer_id.unwrap_or_default();
                Decision::new(state).send(
                    RefundPayment {
                        order_id,
                        customer_id,
                    }
                    .to_message()?,
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

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use es_saga::{FiredDeadline, Input};
    use serde_json::json;

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x0d);
    const CUSTOMER: Uuid = Uuid::from_u128(0x0c);

    struct Run {
        saga: OrderSaga,
        state: OrderSagaState,
        completed: bool,
        /// The commands of the last decision.
        sent: Vec<OutboxMessage>,
    }

    impl Run {
        fn new() -> Self {
            Self {
                saga: OrderSaga::default(),
                state: OrderSagaState::default(),
                completed: false,
                sent: Vec::new(),
            }
        }

        /// Hands `message` to the saga; returns the types of the commands it sent.
        fn on(&mut self, message: OutboxMessage) -> Vec<String> {
            let key = ORDER.to_string();
            let input = Input {
                key: &key,
                message: &message,
                deadline: None,
                completed: self.completed,
                now: Utc::now(),
            };
            self.decide(&input)
        }

        fn deadline(&mut self, step: &str) -> Vec<String> {
            let key = ORDER.to_string();
            let fired = FiredDeadline {
                id: Uuid::new_v4(),
                saga: ORDER_SAGA.to_owned(),
                key: key.clone(),
                step: step.to_owned(),
                due_at: Utc::now(),
                payload: json!(null),
            };
            let message = fired
                .to_message(Utc::now())
                .unwrap_or_else(|_| OutboxMessage::new("x", "", json!(null)));
            let input = Input {
                key: &key,
                message: &message,
                deadline: Some(&fired),
                completed: self.completed,
                now: Utc::now(),
            };
            self.decide(&input)
        }

        fn decide(&mut self, input: &Input<'_>) -> Vec<String> {
            let decision = match self.saga.handle(self.state.clone(), input) {
                Ok(decision) => decision,
                Err(error) => panic!("{error}"),
            };
            self.state = decision.state;
            self.completed |= decision.completed;
            self.sent.clone_from(&decision.commands);
            for command in &decision.commands {
                assert!(
                    command.topic.is_some(),
                    "{} has no topic",
                    command.message_type
                );
            }
            decision
                .commands
                .iter()
                .map(|c| c.message_type.clone())
                .collect()
        }

        fn reason(&self) -> Option<&str> {
            self.state.cancel_reason.as_deref()
        }
    }

    fn ship_to() -> Personal<ShipTo> {
        Personal::new(
            es_core::privacy::SubjectId::from_uuid(CUSTOMER),
            ShipTo {
                name: "Ada".to_owned(),
                address: "12 Analytical Row".to_owned(),
            },
        )
    }

    fn placed() -> OutboxMessage {
        messages::OrderPlaced {
            order_id: ORDER,
            customer_id: CUSTOMER,
            quote_id: Uuid::from_u128(9),
            ship_to: Some(ship_to()),
        }
        .to_message()
        .unwrap()
    }

    fn processed() -> OutboxMessage {
        let line = Line {
            product_id: Uuid::from_u128(0xa),
            product_name: "Keyboard".to_owned(),
            unit_price: Decimal::new(8999, 2),
            quantity: 1,
        };
        OrderProcessed {
            order_id: ORDER,
            customer_id: CUSTOMER,
            lines: vec![line],
            total: Decimal::new(8999, 2),
            currency_code: "USD".to_owned(),
        }
        .to_message()
        .unwrap()
    }

    fn reserved() -> OutboxMessage {
        messages::StockReserved { order_id: ORDER }
            .to_message()
            .unwrap()
    }

    fn paid() -> OutboxMessage {
        PaymentCompleted {
            order_id: ORDER,
            payment_id: Uuid::from_u128(0xf),
        }
        .to_message()
        .unwrap()
    }

    fn payment_failed(reason: &str) -> OutboxMessage {
        PaymentFailed {
            order_id: ORDER,
            payment_id: Uuid::from_u128(0xf),
            reason: reason.to_owned(),
        }
        .to_message()
        .unwrap()
    }

    fn shipped() -> OutboxMessage {
        PackageShipped {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0xe),
        }
        .to_message()
        .unwrap()
    }

    fn cancellation() -> OutboxMessage {
        messages::CancellationRequested { order_id: ORDER }
            .to_message()
            .unwrap()
    }

    /// A run up to `stage`.
    fn at(stage: Stage) -> Run {
        let mut run = Run::new();
        let steps = [placed(), processed(), reserved(), paid()];
        let count = match stage {
            Stage::Processing => 1,
            Stage::Reserving => 2,
            Stage::Paying => 3,
            Stage::Shipping => 4,
            _ => 0,
        };
        for message in steps.into_iter().take(count) {
            run.on(message);
        }
        assert_eq!(run.state.stage, stage);
        run
    }

    #[test]
    fn happy_path() {
        let mut run = Run::new();
        assert_eq!(run.on(placed()), ["ProcessOrder"]);
        assert_eq!(run.on(processed()), ["ReserveStock"]);
        assert_eq!(run.on(reserved()), ["RequestPayment"]);
        assert_eq!(run.on(paid()), ["RecordPayment", "RequestShipment"]);
        let ship: RequestShipment = serde_json::from_value(run.sent[1].payload.clone()).unwrap();
        assert_eq!(ship.ship_to, Some(ship_to()), "the ship-to travels on");
        assert_eq!(run.on(shipped()), ["RecordShipment"]);
        assert!(run.completed);
        assert_eq!(run.state.stage, Stage::Shipped);
        assert_eq!(
            run.deadline("shipment"),
            Vec::<String>::new(),
            "a deadline after completion does nothing"
        );
    }

    #[test]
    fn out_of_stock_cancels() {
        let mut run = at(Stage::Reserving);
        let unavailable = messages::StockUnavailable {
            order_id: ORDER,
            product_ids: vec![],
        }
        .to_message()
        .unwrap();
        assert_eq!(run.on(unavailable), ["CancelOrder"]);
        assert_eq!(run.reason(), Some(reasons::OUT_OF_STOCK));
        assert!(run.completed);
    }

    #[test]
    fn payment_failures_release_the_stock() {
        for reason in [reasons::CREDIT_LIMIT_REACHED, reasons::PAYMENT_FAILED] {
            let mut run = at(Stage::Paying);
            assert_eq!(
                run.on(payment_failed(reason)),
                ["ReleaseStock", "CancelOrder"]
            );
            assert_eq!(run.reason(), Some(reason));
        }
    }

    #[test]
    fn a_failed_shipment_refunds_and_releases() {
        let mut run = at(Stage::Shipping);
        let failed = messages::ShipmentFailed {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0xe),
        }
        .to_message()
        .unwrap();
        assert_eq!(
            run.on(failed),
            ["RefundPayment", "ReleaseStock", "CancelOrder"]
        );
        assert_eq!(run.reason(), Some(reasons::SHIPMENT_FAILED));
    }

    #[test]
    fn customers_cancel_before_shipment() {
        let mut run = at(Stage::Processing);
        assert_eq!(run.on(cancellation()), ["CancelOrder"]);
        let mut run = at(Stage::Paying);
        assert_eq!(run.on(cancellation()), ["ReleaseStock", "CancelOrder"]);
        assert_eq!(run.reason(), Some(reasons::CANCELLED_BY_CUSTOMER));
        // The payment answered after the cancellation is refunded.
        assert_eq!(run.on(paid()), ["RefundPayment"]);
        assert_eq!(run.state.late, ["PaymentCompleted"]);
    }

    #[test]
    fn a_cancellation_during_shipment_depends_on_the_carrier() {
        let mut run = at(Stage::Shipping);
        assert_eq!(run.on(cancellation()), ["CancelShipment"]);
        assert!(!run.completed);
        let stopped = messages::ShipmentCancelled {
            order_id: ORDER,
            shipment_id: Uuid::from_u128(0xe),
        }
        .to_message()
        .unwrap();
        assert_eq!(
            run.on(stopped),
            ["RefundPayment", "ReleaseStock", "CancelOrder"]
        );
        assert_eq!(run.reason(), Some(reasons::CANCELLED_BY_CUSTOMER));

        let mut late = at(Stage::Shipping);
        late.on(cancellation());
        assert_eq!(late.on(shipped()), ["RecordShipment"], "too late: it ships");
        assert_eq!(late.state.stage, Stage::Shipped);
    }

    #[test]
    fn a_deadline_compensates_and_cancels() {
        let mut run = at(Stage::Paying);
        assert_eq!(run.deadline("payment"), ["ReleaseStock", "CancelOrder"]);
        assert_eq!(run.reason(), Some(reasons::PROCESSING_ERROR));
        // The late payment is refunded, the late reservation released.
        assert_eq!(run.on(paid()), ["RefundPayment"]);
        assert_eq!(run.on(reserved()), ["ReleaseStock"]);
        assert_eq!(run.deadline("payment"), Vec::<String>::new());

        let mut shipping = at(Stage::Shipping);
        assert_eq!(
            shipping.deadline("shipment"),
            [
                "RefundPayment",
                "ReleaseStock",
                "CancelShipment",
                "CancelOrder"
            ]
        );
    }

    #[test]
    fn duplicates_and_strays_decide_nothing() {
        let mut run = at(Stage::Paying);
        assert_eq!(run.on(reserved()), Vec::<String>::new());
        assert_eq!(run.on(placed()), Vec::<String>::new());
        assert_eq!(run.on(shipped()), Vec::<String>::new());
        assert_eq!(run.state.stage, Stage::Paying);
    }

    #[test]
    fn routes_by_order_id() {
        let saga = OrderSaga::default();
        assert_eq!(saga.route(&placed()), Route::Start(ORDER.to_string()));
        assert_eq!(saga.route(&paid()), Route::Continue(ORDER.to_string()));
        let other = messages::PaymentRefunded {
            order_id: ORDER,
            payment_id: Uuid::from_u128(1),
        }
        .to_message()
        .unwrap();
        assert_eq!(saga.route(&other), Route::Ignore);
        assert_eq!(
            saga.route(&OutboxMessage::new("OrderPlaced", "k", json!({}))),
            Route::Ignore
        );
    }
}
