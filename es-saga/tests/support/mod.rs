//! Test support: an order saga (reserve stock → payment → shipment) and the services that
//! answer its commands.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use chrono::TimeDelta;
use es_core::OutboxMessage;
use es_saga::{
    CodecError, CompensatingCommand, CompletedSteps, Decision, Input, MessageType, Route, Saga,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

macro_rules! order_message {
    ($($name:ident = $ty:literal),* $(,)?) => {$(
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, MessageType)]
        #[serde(rename = $ty, rename_all = "camelCase")]
        pub struct $name {
            pub order_id: String,
            #[serde(default)]
            pub amount: u64,
        }
        impl $name {
            pub fn new(order_id: &str) -> Self {
                Self { order_id: order_id.to_owned(), amount: 0 }
            }
            pub fn message(&self) -> OutboxMessage {
                OutboxMessage::new($ty, self.order_id.clone(), serde_json::to_value(self).unwrap())
            }
        }
    )*};
}

order_message! {
    OrderPlaced = "OrderPlaced",
    StockReserved = "StockReserved",
    StockUnavailable = "StockUnavailable",
    PaymentCompleted = "PaymentCompleted",
    PaymentFailed = "PaymentFailed",
    PackageShipped = "PackageShipped",
    ShipmentFailed = "ShipmentFailed",
    CancellationRequested = "CancellationRequested",
    ReserveStock = "ReserveStock",
    ReleaseStock = "ReleaseStock",
    RequestPayment = "RequestPayment",
    RefundPayment = "RefundPayment",
    RequestShipment = "RequestShipment",
    RecordShipment = "RecordShipment",
}

/// The order id a message is about.
pub fn order_id(message: &OutboxMessage) -> Option<String> {
    message.payload["orderId"].as_str().map(str::to_owned)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[default]
    New,
    Reserving,
    Paying,
    Shipping,
    Shipped,
    Cancelled,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderState {
    pub status: Status,
    pub amount: u64,
    pub steps: CompletedSteps,
    pub cancel_reason: Option<String>,
    /// Late replies compensated after cancellation.
    pub late_compensations: u32,
}

pub const STEP_TIMEOUT: TimeDelta = TimeDelta::seconds(60);

#[derive(Debug, Default)]
pub struct OrderSaga;

pub const SAGA: &str = "order-fulfilment";

impl OrderSaga {
    fn cancel(
        mut state: OrderState,
        reason: &str,
        key: &str,
    ) -> Result<Decision<OrderState>, CodecError> {
        let undo = state.steps.compensate();
        state.status = Status::Cancelled;
        state.cancel_reason = Some(reason.to_owned());
        let cancel = OutboxMessage::new(
            "CancelOrder",
            "",
            json!({ "orderId": key, "reason": reason }),
        );
        Ok(Decision::new(state).send_all(undo).send(cancel).complete())
    }
}

impl Saga for OrderSaga {
    const NAME: &'static str = SAGA;
    type State = OrderState;
    type Error = CodecError;

    fn route(&self, message: &OutboxMessage) -> Route {
        let Some(order_id) = order_id(message) else {
            return Route::Ignore;
        };
        match message.message_type.as_str() {
            "OrderPlaced" => Route::Start(order_id),
            "StockReserved"
            | "StockUnavailable"
            | "PaymentCompleted"
            | "PaymentFailed"
            | "PackageShipped"
            | "ShipmentFailed"
            | "CancellationRequested" => Route::Continue(order_id),
            _ => Route::Ignore,
        }
    }

    fn handle(
        &self,
        mut state: OrderState,
        input: &Input<'_>,
    ) -> Result<Decision<OrderState>, CodecError> {
        let key = input.key;
        if let Some(step) = input.deadline_step() {
            let reason = format!("ProcessingError: no answer to {step}");
            return Self::cancel(state, &reason, key);
        }
        use Status::*;
        let decision = match (state.status, input.message_type()) {
            (New, "OrderPlaced") => {
                let placed: OrderPlaced = input.decode()?.expect("an OrderPlaced");
                state.status = Reserving;
                state.amount = placed.amount;
                Decision::new(state)
                    .command(&ReserveStock::new(key))?
                    .set_deadline("stock", STEP_TIMEOUT)
            }
            (Reserving, "StockReserved") => {
                state.steps.record(
                    "stock",
                    Some(CompensatingCommand::new(&ReleaseStock::new(key))?),
                );
                state.status = Paying;
                let request = RequestPayment {
                    order_id: key.to_owned(),
                    amount: state.amount,
                };
                Decision::new(state)
                    .cancel_deadline("stock")
                    .command(&request)?
                    .set_deadline("payment", STEP_TIMEOUT)
            }
            (Reserving, "StockUnavailable") => Self::cancel(state, "OutOfStock", key)?,
            (Paying, "PaymentCompleted") => {
                state.steps.record(
                    "payment",
                    Some(CompensatingCommand::new(&RefundPayment::new(key))?),
                );
                state.status = Shipping;
                Decision::new(state)
                    .cancel_deadline("payment")
                    .command(&RequestShipment::new(key))?
                    .set_deadline("shipment", STEP_TIMEOUT)
            }
            (Paying, "PaymentFailed") => Self::cancel(state, "PaymentFailed", key)?,
            (Shipping, "PackageShipped") => {
                state.status = Shipped;
                Decision::new(state)
                    .cancel_deadline("shipment")
                    .command(&RecordShipment::new(key))?
                    .complete()
            }
            (Shipping, "ShipmentFailed") => Self::cancel(state, "ShipmentFailed", key)?,
            (Reserving | Paying | Shipping, "CancellationRequested") => {
                Self::cancel(state, "CustomerCancelled", key)?
            }
            // Late replies after a cancellation: undo what they did.
            (Cancelled, "StockReserved") => {
                state.late_compensations += 1;
                Decision::new(state).command(&ReleaseStock::new(key))?
            }
            (Cancelled, "PaymentCompleted") => {
                state.late_compensations += 1;
                Decision::new(state).command(&RefundPayment::new(key))?
            }
            _ => Decision::new(state),
        };
        Ok(decision)
    }
}

/// How the services answer an order's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ships,
    OutOfStock,
    PaymentFails,
    ShipmentFails,
}

impl Outcome {
    pub fn for_index(i: usize) -> Self {
        [
            Self::Ships,
            Self::OutOfStock,
            Self::PaymentFails,
            Self::ShipmentFails,
        ][i % 4]
    }
}

/// The replies of the stock, payment and shipping services to `command`.
pub fn respond(command: &OutboxMessage, outcome: Outcome) -> Vec<OutboxMessage> {
    let Some(order) = order_id(command) else {
        return Vec::new();
    };
    let reply = match (command.message_type.as_str(), outcome) {
        ("ReserveStock", Outcome::OutOfStock) => StockUnavailable::new(&order).message(),
        ("ReserveStock", _) => StockReserved::new(&order).message(),
        ("RequestPayment", Outcome::PaymentFails) => PaymentFailed::new(&order).message(),
        ("RequestPayment", _) => PaymentCompleted::new(&order).message(),
        ("RequestShipment", Outcome::ShipmentFails) => ShipmentFailed::new(&order).message(),
        ("RequestShipment", _) => PackageShipped::new(&order).message(),
        _ => return Vec::new(),
    };
    vec![reply]
}

pub fn placed(order: &str, amount: u64) -> OutboxMessage {
    OrderPlaced {
        order_id: order.to_owned(),
        amount,
    }
    .message()
}

/// The message types of `commands`.
pub fn types(commands: &[OutboxMessage]) -> Vec<&str> {
    commands.iter().map(|c| c.message_type.as_str()).collect()
}

pub fn unique_order(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Handles `message`, retrying transient failures (contention, early messages) a while.
pub async fn handle_retrying<St: es_core::SagaStore>(
    runner: &es_saga::SagaRunner<OrderSaga, St>,
    message: &OutboxMessage,
) -> es_saga::Handled {
    let mut attempts = 0;
    loop {
        match runner.handle(message).await {
            Ok(handled) => return handled,
            Err(error) if error.is_transient() && attempts < 200 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(error) => panic!("handling {} failed: {error}", message.message_type),
        }
    }
}

/// Runs one order to its end: handles `first`, answers each command as `outcome` says, and
/// handles the replies (each delivered twice, concurrently, when `twice`). Returns every
/// command sent.
pub async fn drive<St: es_core::SagaStore>(
    runner: &es_saga::SagaRunner<OrderSaga, St>,
    first: OutboxMessage,
    outcome: Outcome,
    twice: bool,
) -> Vec<OutboxMessage> {
    let mut queue = vec![first];
    let mut sent = Vec::new();
    while let Some(message) = queue.pop() {
        let handled = if twice {
            let (a, b) = tokio::join!(
                handle_retrying(runner, &message),
                handle_retrying(runner, &message)
            );
            match (a, b) {
                (committed, es_saga::Handled::Duplicate)
                | (es_saga::Handled::Duplicate, committed) => committed,
                other => panic!("a message delivered twice was committed twice: {other:?}"),
            }
        } else {
            handle_retrying(runner, &message).await
        };
        if let es_saga::Handled::Committed { commands, .. } = handled {
            for command in &commands {
                queue.extend(respond(command, outcome));
            }
            sent.extend(commands);
        }
    }
    sent
}

/// Asserts the invariants of a finished order: completed, Shipped or Cancelled, and a
/// cancelled order holds no reserved stock and no un-refunded payment.
pub fn assert_terminal(
    view: &es_saga::SagaView<OrderState>,
    sent: &[OutboxMessage],
    outcome: Outcome,
) {
    assert!(
        view.completed,
        "order {} not completed: {:?}",
        view.key, view.state
    );
    assert!(view.awaiting.is_empty(), "a completed order awaits nothing");
    let count = |ty: &str| sent.iter().filter(|c| c.message_type == ty).count();
    match outcome {
        Outcome::Ships => {
            assert_eq!(view.state.status, Status::Shipped);
            assert_eq!(count("RecordShipment"), 1);
            assert_eq!(count("CancelOrder"), 0);
        }
        _ => {
            assert_eq!(view.state.status, Status::Cancelled);
            assert_eq!(count("CancelOrder"), 1);
            assert_eq!(
                count("ReserveStock") - usize::from(outcome == Outcome::OutOfStock),
                count("ReleaseStock")
            );
            assert_eq!(
                count("RequestPayment") - usize::from(outcome == Outcome::PaymentFails),
                count("RefundPayment")
            );
        }
    }
    assert!(count("RequestPayment") <= 1, "no order has two payments");
}
