//! The shipment aggregate: one per order (the shipment id is derived from the order id),
//! shipped or failed by the carrier, cancelled while pending.

use es_core::privacy::Personal;
use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::messages::ShipTo;

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
    /// Where it goes (the customer's personal data).
    pub ship_to: Option<Personal<ShipTo>>,
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
        /// Where it goes.
        ship_to: Option<Personal<ShipTo>>,
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
        /// Where it goes (absent for shipments created before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ship_to: Option<Personal<ShipTo>>,
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
                ship_to,
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
                    ship_to: ship_to.clone(),
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
        if let ShipmentEvent::Created { ship_to, .. } = event {
            self.ship_to.clone_from(ship_to);
        }
        self.status = Some(match event {
            ShipmentEvent::Created { .. } => ShipmentStatus::Pending,
            ShipmentEvent::Shipped { .. } => ShipmentStatus::Shipped,
            ShipmentEvent::Cancelled { .. } => ShipmentStatus::Cancelled,
        });
    }
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
            ship_to: None,
            fails,
        }
    }

    fn created() -> ShipmentEvent {
        ShipmentEvent::Created {
            shipment_id: shipment_id_for(ORDER),
            order_id: ORDER,
            customer_id: CUSTOMER,
            ship_to: None,
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
