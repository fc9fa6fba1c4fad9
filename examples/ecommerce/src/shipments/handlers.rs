//! Shipments' message handlers: the saga's `RequestShipment` and `CancelShipment`, each a
//! command on the order's shipment, applied exactly once.

use std::sync::Arc;

use es_core::{AggregateHandler, HandlerRegistry, InvalidStreamId, StreamId, TransactionalStore};

use super::{Shipment, ShipmentCommand, Shipments, stream};
use crate::failures::FailureRules;
use crate::messages::{CancelShipment, RequestShipment};

/// The subscriber name shipments' records of handled messages are kept under.
const SUBSCRIBER: &str = "shipments";

impl<S: TransactionalStore> Shipments<S> {
    /// The handlers of shipments' commands, for its consumer.
    pub fn handlers(self: &Arc<Self>) -> HandlerRegistry {
        HandlerRegistry::new()
            .with_privacy(self.privacy.clone())
            .on::<RequestShipment>(
                self.shipments
                    .message_handler(SUBSCRIBER, Ship(self.failures)),
            )
            .on::<CancelShipment>(self.shipments.message_handler(SUBSCRIBER, Cancel))
    }
}

/// Ships an order (or fails it, as the failure rules say).
struct Ship(FailureRules);

impl AggregateHandler for Ship {
    type Message = RequestShipment;
    type Aggregate = Shipment;

    fn stream(&self, request: &RequestShipment) -> Result<StreamId, InvalidStreamId> {
        stream(request.order_id)
    }

    fn command(&self, request: &RequestShipment) -> ShipmentCommand {
        ShipmentCommand::Ship {
            order_id: request.order_id,
            customer_id: request.customer_id,
            ship_to: request.ship_to.clone(),
            fails: self.0.fails_shipment(request.total),
        }
    }
}

/// Cancels an order's shipment if it has not left.
struct Cancel;

impl AggregateHandler for Cancel {
    type Message = CancelShipment;
    type Aggregate = Shipment;

    fn stream(&self, cancel: &CancelShipment) -> Result<StreamId, InvalidStreamId> {
        stream(cancel.order_id)
    }

    fn command(&self, cancel: &CancelShipment) -> ShipmentCommand {
        ShipmentCommand::Cancel {
            order_id: cancel.order_id,
        }
    }
}
