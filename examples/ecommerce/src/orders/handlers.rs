//! Orders' message handlers: the saga's commands, each a command on the order, applied
//! exactly once. A command the order no longer accepts (a late one) is acknowledged.

use std::sync::Arc;

use es_core::{
    Aggregate, AggregateHandler, HandlerRegistry, InvalidStreamId, StreamId, TransactionalStore,
};

use super::{Order, OrderCommand, Orders};
use crate::messages::{CancelOrder, Message, ProcessOrder, RecordPayment, RecordShipment};

/// The subscriber name orders' records of handled messages are kept under.
const SUBSCRIBER: &str = "orders";

impl<S: TransactionalStore> Orders<S> {
    /// The handlers of the saga's commands to orders, for its consumer.
    pub fn handlers(self: &Arc<Self>) -> HandlerRegistry {
        let orders = &self.orders;
        let process = OnOrder(|_: &ProcessOrder| OrderCommand::Process);
        let payment = OnOrder(|c: &RecordPayment| OrderCommand::RecordPayment(c.payment_id));
        let shipment = OnOrder(|c: &RecordShipment| OrderCommand::RecordShipment(c.shipment_id));
        let cancel = OnOrder(|c: &CancelOrder| OrderCommand::Cancel(c.reason.clone()));
        HandlerRegistry::new()
            .on::<ProcessOrder>(orders.message_handler(SUBSCRIBER, process))
            .on::<RecordPayment>(orders.message_handler(SUBSCRIBER, payment))
            .on::<RecordShipment>(orders.message_handler(SUBSCRIBER, shipment))
            .on::<CancelOrder>(orders.message_handler(SUBSCRIBER, cancel))
    }
}

/// A saga command about an order, and the order command it asks for.
struct OnOrder<M>(fn(&M) -> OrderCommand);

impl<M: Message + Send + Sync + 'static> AggregateHandler for OnOrder<M> {
    type Message = M;
    type Aggregate = Order;

    fn stream(&self, message: &M) -> Result<StreamId, InvalidStreamId> {
        StreamId::for_aggregate(Order::TYPE, message.order_id())
    }

    fn command(&self, message: &M) -> OrderCommand {
        (self.0)(message)
    }
}
