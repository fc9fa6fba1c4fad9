//! Shipments: one per order (the shipment id is derived from the order id); a configurable
//! failure rule lets demos and tests exercise the compensation path deterministically.

use std::sync::Arc;

use async_trait::async_trait;
use es_core::{
    Aggregate, Clock, Delivery, DomainEvent, HandlerError, MessageHandler, Metadata, OutboxMessage,
    Repository, RepositoryError, StreamId,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::failures::FailureRules;
use crate::handling::{caused_by, decode, transient_unless_permanent};
use crate::messages::{self, CancelShipment, Message, RequestShipment};
use es_core::TransactionalStore;

/// The namespace of shipment ids.
const SHIPMENT_NAMESPACE: Uuid = Uuid::from_u128(0x4e8d_2f71_0b6c_4a93_9e15_c7a0_58d2_13bf);

/// The shipment id of an order.
pub fn shipment_id_for(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&SHIPMENT_NAMESPACE, order_id.as_bytes())
}

/// Where a shipment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentStatus {
    /// Created, not left.
    Pending,
    /// Left.
    Shipped,
    /// Will not leave.
    Cancelled,
}

/// The state of a shipment.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// Where it stands (`None` before it exists).
    pub status: Option<ShipmentStatus>,
}

/// What a shipment can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipmentCommand {
    /// Creates the shipment and ships it (or fails it, when `fails`).
    Ship {
        /// The order.
        order_id: Uuid,
        /// The customer.
        customer_id: Uuid,
        /// Whether it fails (the failure rule).
        fails: bool,
    },
    /// Cancels it if it has not left.
    Cancel {
        /// The order.
        order_id: Uuid,
    },
}

/// What happened to a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum ShipmentEvent {
    /// Created.
    #[serde(rename = "ShipmentCreated", rename_all = "camelCase")]
    Created {
        /// The shipment.
        shipment_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// The customer.
        customer_id: Uuid,
    },
    /// Left.
    #[serde(rename = "PackageShipped", rename_all = "camelCase")]
    Shipped {
        /// The shipment.
        shipment_id: Uuid,
        /// The order.
        order_id: Uuid,
    },
    /// Will not leave.
    #[serde(rename = "ShipmentCancelled", rename_all = "camelCase")]
    Cancelled {
        /// The shipment.
        shipment_id: Uuid,
        /// The order.
        order_id: Uuid,
        /// `Failed` (the carrier refused) or `Cancelled` (asked to).
        reason: String,
    },
}

/// Shipments refuse nothing: duplicates and late commands decide nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("never")]
pub struct NeverRefused;

/// Reason of a shipment the carrier refused.
pub const FAILED: &str = "Failed";
/// Reason of a shipment cancelled on request.
pub const CANCELLED: &str = "Cancelled";

impl Aggregate for Shipment {
    const TYPE: &'static str = "shipment";
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type Error = NeverRefused;

    fn decide(&self, command: &ShipmentCommand) -> Result<Vec<ShipmentEvent>, NeverRefused> {
        match command {
            ShipmentCommand::Ship {
                order_id,
                customer_id,
                fails,
            } => {
                if self.status.is_some() {
                    return Ok(Vec::new());
                }
                let shipment_id = shipment_id_for(*order_id);
                let created = ShipmentEvent::Created {
                    shipment_id,
                    order_id: *order_id,
                    customer_id: *customer_id,
                };
                let outcome = if *fails {
                    ShipmentEvent::Cancelled {
                        shipment_id,
                        order_id: *order_id,
                        reason: FAILED.to_owned(),
                    }
                } else {
                    ShipmentEvent::Shipped {
                        shipment_id,
                        order_id: *order_id,
                    }
                };
                Ok(vec![created, outcome])
            }
            ShipmentCommand::Cancel { order_id } => match self.status {
                Some(ShipmentStatus::Pending) => Ok(vec![ShipmentEvent::Cancelled {
                    shipment_id: shipment_id_for(*order_id),
                    order_id: *order_id,
                    reason: CANCELLED.to_owned(),
                }]),
                _ => Ok(Vec::new()),
            },
        }
    }

    fn evolve(&mut self, event: &ShipmentEvent) {
        self.status = Some(match event {
            ShipmentEvent::Created { .. } => ShipmentStatus::Pending,
            ShipmentEvent::Shipped { .. } => ShipmentStatus::Shipped,
            ShipmentEvent::Cancelled { .. } => ShipmentStatus::Cancelled,
        });
    }
}

/// The shipments context.
#[derive(Debug)]
pub struct Shipments<S> {
    shipments: Repository<Shipment, S>,
    failures: FailureRules,
}

impl<S: TransactionalStore> Shipments<S> {
    /// The context's store (its outbox is relayed from here).
    pub fn store(&self) -> &S {
        self.shipments.store()
    }

    /// The shipments context over `store`.
    pub fn new(store: S, failures: FailureRules, clock: Arc<dyn Clock>) -> Self {
        let shipments = Repository::new(store)
            .with_clock(clock)
            .with_conflict_retries(8)
            .with_outbox(integration_messages);
        Self {
            shipments,
            failures,
        }
    }

    /// An order's shipment.
    ///
    /// # Errors
    /// When storage fails.
    pub async fn shipment(&self, order_id: Uuid) -> Result<Shipment, String> {
        let stream = stream(order_id).map_err(|e| e.to_string())?;
        self.shipments
            .load(&stream)
            .await
            .map(|l| l.state)
            .map_err(|e| e.to_string())
    }
}

/// Handles `RequestShipment` and `CancelShipment`.
#[async_trait]
impl<S: TransactionalStore> MessageHandler for Shipments<S> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let (order_id, command) = if let Some(request) = decode::<RequestShipment>(delivery)? {
            let command = ShipmentCommand::Ship {
                order_id: request.order_id,
                customer_id: request.customer_id,
                fails: self.failures.fails_shipment(request.total),
            };
            (request.order_id, command)
        } else if let Some(cancel) = decode::<CancelShipment>(delivery)? {
            (
                cancel.order_id,
                ShipmentCommand::Cancel {
                    order_id: cancel.order_id,
                },
            )
        } else {
            return Err(HandlerError::permanent(format!(
                "shipments do not handle {}",
                delivery.message.message_type
            )));
        };
        let stream = stream(order_id).map_err(|e| HandlerError::permanent(e.to_string()))?;
        let context = caused_by(&delivery.message, "shipments");
        match self.shipments.execute(&stream, &command, &context).await {
            Ok(_) => Ok(()),
            Err(RepositoryError::Rejected(never)) => {
                Err(HandlerError::permanent(never.to_string()))
            }
            Err(error) => Err(transient_unless_permanent(error)),
        }
    }
}

fn integration_messages(
    stream: &StreamId,
    _state: &Shipment,
    events: &[(ShipmentEvent, Metadata)],
) -> Vec<OutboxMessage> {
    events
        .iter()
        .filter_map(|(event, metadata)| {
            let message = match event {
                ShipmentEvent::Shipped {
                    shipment_id,
                    order_id,
                } => messages::PackageShipped {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Cancelled {
                    shipment_id,
                    order_id,
                    reason,
                } if reason == FAILED => messages::ShipmentFailed {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Cancelled {
                    shipment_id,
                    order_id,
                    ..
                } => messages::ShipmentCancelled {
                    order_id: *order_id,
                    shipment_id: *shipment_id,
                }
                .to_message(),
                ShipmentEvent::Created { .. } => return None,
            };
            Some(
                message
                    .with_source("shipment", stream.as_str())
                    .caused_by(metadata),
            )
        })
        .collect()
}

fn stream(order_id: Uuid) -> Result<StreamId, es_core::InvalidStreamId> {
    StreamId::for_aggregate(<Shipment as Aggregate>::TYPE, order_id)
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(1);
    const CUSTOMER: Uuid = Uuid::from_u128(2);

    fn ship(fails: bool) -> ShipmentCommand {
        ShipmentCommand::Ship {
            order_id: ORDER,
            customer_id: CUSTOMER,
            fails,
        }
    }

    fn created() -> ShipmentEvent {
        ShipmentEvent::Created {
            shipment_id: shipment_id_for(ORDER),
            order_id: ORDER,
            customer_id: CUSTOMER,
        }
    }

    #[test]
    fn ships_once() {
        let shipped = ShipmentEvent::Shipped {
            shipment_id: shipment_id_for(ORDER),
            order_id: ORDER,
        };
        given::<Shipment>([])
            .when(ship(false))
            .then([created(), shipped.clone()]);
        given::<Shipment>([created(), shipped.clone()])
            .when(ship(false))
            .then([]);
        given::<Shipment>([created(), shipped])
            .when(ShipmentCommand::Cancel { order_id: ORDER })
            .then([]);
    }

    #[test]
    fn fails_by_rule_and_cancels_while_pending() {
        given::<Shipment>([]).when(ship(true)).then([
            created(),
            ShipmentEvent::Cancelled {
                shipment_id: shipment_id_for(ORDER),
                order_id: ORDER,
                reason: FAILED.to_owned(),
            },
        ]);
        given::<Shipment>([created()])
            .when(ShipmentCommand::Cancel { order_id: ORDER })
            .then([ShipmentEvent::Cancelled {
                shipment_id: shipment_id_for(ORDER),
                order_id: ORDER,
                reason: CANCELLED.to_owned(),
            }]);
    }
}
