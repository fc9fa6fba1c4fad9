//! The warehouse aggregate: every product's stock unit and every order's reservation, in one
//! consistency boundary, so an order's lines are reserved all together or not at all and no
//! quantity ever goes negative, whatever the concurrency.

use std::collections::{BTreeMap, HashMap};

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A quantity of one product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockLine {
    /// The product.
    pub product_id: Uuid,
    /// How many.
    pub quantity: u32,
}

/// Where an order's reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationStatus {
    /// Stock is held for the order.
    Reserved,
    /// Stock was given back.
    Released,
    /// Stock was short: nothing was held.
    Refused,
}

/// The state of the warehouse.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warehouse {
    /// Available quantity per product.
    stock: BTreeMap<Uuid, u32>,
    /// Each order's reservation.
    reservations: HashMap<Uuid, (ReservationStatus, Vec<StockLine>)>,
}

impl Warehouse {
    /// The available quantity of a product (`None` when it has no stock unit).
    pub fn available(&self, product_id: &Uuid) -> Option<u32> {
        self.stock.get(product_id).copied()
    }

    /// The order's reservation status.
    pub fn reservation(&self, order_id: &Uuid) -> Option<ReservationStatus> {
        self.reservations.get(order_id).map(|(status, _)| *status)
    }

    /// The quantity held for reserved orders, per product.
    pub fn reserved(&self) -> BTreeMap<Uuid, u32> {
        let mut reserved = BTreeMap::new();
        for (status, lines) in self.reservations.values() {
            if *status == ReservationStatus::Reserved {
                for line in lines {
                    *reserved.entry(line.product_id).or_insert(0) += line.quantity;
                }
            }
        }
        reserved
    }
}

/// What the warehouse can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarehouseCommand {
    /// Creates the stock units that do not exist yet (seeding; idempotent).
    EnterUnits(Vec<StockLine>),
    /// Holds stock for every line of an order, or for none.
    Reserve {
        /// The order.
        order_id: Uuid,
        /// Its lines (a product may appear more than once).
        lines: Vec<StockLine>,
    },
    /// Gives an order's stock back.
    Release {
        /// The order.
        order_id: Uuid,
    },
    /// Adds stock.
    Increase(StockLine),
    /// Removes stock (never below zero).
    Decrease(StockLine),
}

/// What happened in the warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum WarehouseEvent {
    /// A product got its stock unit.
    #[serde(rename = "UnitEnteredInStock")]
    UnitEntered(StockLine),
    /// Stock was held for an order.
    #[serde(rename = "StockReserved", rename_all = "camelCase")]
    Reserved {
        /// The order.
        order_id: Uuid,
        /// What was held, one line per product.
        lines: Vec<StockLine>,
    },
    /// An order could not be served: nothing was held.
    #[serde(rename = "StockReservationRefused", rename_all = "camelCase")]
    ReservationRefused {
        /// The order.
        order_id: Uuid,
        /// The products short of stock.
        product_ids: Vec<Uuid>,
    },
    /// An order's stock was given back.
    #[serde(rename = "StockReleased", rename_all = "camelCase")]
    Released {
        /// The order.
        order_id: Uuid,
        /// What was given back.
        lines: Vec<StockLine>,
    },
    /// Stock was added.
    #[serde(rename = "StockQuantityIncreased")]
    Increased(StockLine),
    /// Stock was removed.
    #[serde(rename = "StockQuantityDecreased")]
    Decreased(StockLine),
}

impl WarehouseEvent {
    /// The products an event is about.
    pub fn product_ids(&self) -> Vec<Uuid> {
        match self {
            Self::UnitEntered(line) | Self::Increased(line) | Self::Decreased(line) => {
                vec![line.product_id]
            }
            Self::Reserved { lines, .. } | Self::Released { lines, .. } => {
                lines.iter().map(|l| l.product_id).collect()
            }
            Self::ReservationRefused { product_ids, .. } => product_ids.clone(),
        }
    }
}

/// Why the warehouse refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WarehouseError {
    /// No stock unit for the product.
    #[error("product {0} has no stock unit")]
    UnknownProduct(Uuid),
    /// A quantity must be above zero.
    #[error("quantity must be greater than zero")]
    ZeroQuantity,
    /// Removing more than is available.
    #[error("only {available} of product {product_id} are available")]
    NotEnough {
        /// The product.
        product_id: Uuid,
        /// What is available.
        available: u32,
    },
}

/// One line per product, quantities summed, in product order.
fn merge(lines: &[StockLine]) -> Vec<StockLine> {
    let mut merged: BTreeMap<Uuid, u32> = BTreeMap::new();
    for line in lines {
        let total = merged.entry(line.product_id).or_insert(0);
        *total = total.saturating_add(line.quantity);
    }
    merged
        .into_iter()
        .map(|(product_id, quantity)| StockLine {
            product_id,
            quantity,
        })
        .collect()
}

impl Aggregate for Warehouse {
    const TYPE: &'static str = "inventory";
    type Command = WarehouseCommand;
    type Event = WarehouseEvent;
    type Error = WarehouseError;

    fn decide(&self, command: &WarehouseCommand) -> Result<Vec<WarehouseEvent>, WarehouseError> {
        match command {
            WarehouseCommand::EnterUnits(lines) => Ok(merge(lines)
                .into_iter()
                .filter(|line| !self.stock.contains_key(&line.product_id))
                .map(WarehouseEvent::UnitEntered)
                .collect()),
            WarehouseCommand::Reserve { order_id, lines } => {
                if self.reservations.contains_key(order_id) {
                    return Ok(Vec::new());
                }
                let lines = merge(lines);
                if lines.is_empty() || lines.iter().any(|l| l.quantity == 0) {
                    return Err(WarehouseError::ZeroQuantity);
                }
                let short: Vec<Uuid> = lines
                    .iter()
                    .filter(|l| self.available(&l.product_id).is_none_or(|a| a < l.quantity))
                    .map(|l| l.product_id)
                    .collect();
                if short.is_empty() {
                    Ok(vec![WarehouseEvent::Reserved {
                        order_id: *order_id,
                        lines,
                    }])
                } else {
                    Ok(vec![WarehouseEvent::ReservationRefused {
                        order_id: *order_id,
                        product_ids: short,
                    }])
                }
            }
            WarehouseCommand::Release { order_id } => match self.reservations.get(order_id) {
                Some((ReservationStatus::Reserved, lines)) => Ok(vec![WarehouseEvent::Released {
                    order_id: *order_id,
                    lines: lines.clone(),
                }]),
                _ => Ok(Vec::new()),
            },
            WarehouseCommand::Increase(line) => {
                if line.quantity == 0 {
                    return Err(WarehouseError::ZeroQuantity);
                }
                self.available(&line.product_id)
                    .ok_or(WarehouseError::UnknownProduct(line.product_id))?;
                Ok(vec![WarehouseEvent::Increased(*line)])
            }
            WarehouseCommand::Decrease(line) => {
                if line.quantity == 0 {
                    return Err(WarehouseError::ZeroQuantity);
                }
                let available = self
                    .available(&line.product_id)
                    .ok_or(WarehouseError::UnknownProduct(line.product_id))?;
                if available < line.quantity {
                    return Err(WarehouseError::NotEnough {
                        product_id: line.product_id,
                        available,
                    });
                }
                Ok(vec![WarehouseEvent::Decreased(*line)])
            }
        }
    }

    fn evolve(&mut self, event: &WarehouseEvent) {
        match event {
            WarehouseEvent::UnitEntered(line) => {
                self.stock.insert(line.product_id, line.quantity);
            }
            WarehouseEvent::Reserved { order_id, lines } => {
                for line in lines {
                    if let Some(available) = self.stock.get_mut(&line.product_id) {
                        *available = available.saturating_sub(line.quantity);
                    }
                }
                self.reservations
                    .insert(*order_id, (ReservationStatus::Reserved, lines.clone()));
            }
            WarehouseEvent::ReservationRefused { order_id, .. } => {
                self.reservations
                    .insert(*order_id, (ReservationStatus::Refused, Vec::new()));
            }
            WarehouseEvent::Released { order_id, lines } => {
                for line in lines {
                    if let Some(available) = self.stock.get_mut(&line.product_id) {
                        *available = available.saturating_add(line.quantity);
                    }
                }
                if let Some(reservation) = self.reservations.get_mut(order_id) {
                    reservation.0 = ReservationStatus::Released;
                }
            }
            WarehouseEvent::Increased(line) => {
                if let Some(available) = self.stock.get_mut(&line.product_id) {
                    *available = available.saturating_add(line.quantity);
                }
            }
            WarehouseEvent::Decreased(line) => {
                if let Some(available) = self.stock.get_mut(&line.product_id) {
                    *available = available.saturating_sub(line.quantity);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const B: Uuid = Uuid::from_u128(0xb);
    const ORDER: Uuid = Uuid::from_u128(0x1);

    fn line(product_id: Uuid, quantity: u32) -> StockLine {
        StockLine {
            product_id,
            quantity,
        }
    }

    fn stocked() -> [WarehouseEvent; 2] {
        [
            WarehouseEvent::UnitEntered(line(A, 5)),
            WarehouseEvent::UnitEntered(line(B, 1)),
        ]
    }

    #[test]
    fn seeding_is_idempotent() {
        given::<Warehouse>([WarehouseEvent::UnitEntered(line(A, 5))])
            .when(WarehouseCommand::EnterUnits(vec![line(A, 9), line(B, 1)]))
            .then([WarehouseEvent::UnitEntered(line(B, 1))]);
    }

    #[test]
    fn reserves_every_line_merged_by_product() {
        let state = given::<Warehouse>(stocked())
            .when(WarehouseCommand::Reserve {
                order_id: ORDER,
                lines: vec![line(B, 1), line(A, 2), line(A, 3)],
            })
            .then([WarehouseEvent::Reserved {
                order_id: ORDER,
                lines: vec![line(A, 5), line(B, 1)],
            }]);
        assert_eq!(
            (state.available(&A), state.available(&B)),
            (Some(0), Some(0))
        );
    }

    #[test]
    fn reserves_nothing_when_one_line_is_short() {
        let state = given::<Warehouse>(stocked())
            .when(WarehouseCommand::Reserve {
                order_id: ORDER,
                lines: vec![line(A, 1), line(B, 2)],
            })
            .then([WarehouseEvent::ReservationRefused {
                order_id: ORDER,
                product_ids: vec![B],
            }]);
        assert_eq!(state.available(&A), Some(5), "nothing held");
        let unknown = Uuid::from_u128(0xc);
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Reserve {
                order_id: ORDER,
                lines: vec![line(unknown, 1)],
            })
            .then([WarehouseEvent::ReservationRefused {
                order_id: ORDER,
                product_ids: vec![unknown],
            }]);
    }

    #[test]
    fn an_order_reserves_once_and_releases_once() {
        let reserved = WarehouseEvent::Reserved {
            order_id: ORDER,
            lines: vec![line(A, 2)],
        };
        let mut history = stocked().to_vec();
        history.push(reserved);
        given::<Warehouse>(history.clone())
            .when(WarehouseCommand::Reserve {
                order_id: ORDER,
                lines: vec![line(A, 2)],
            })
            .then([]);
        let state = given::<Warehouse>(history.clone())
            .when(WarehouseCommand::Release { order_id: ORDER })
            .then([WarehouseEvent::Released {
                order_id: ORDER,
                lines: vec![line(A, 2)],
            }]);
        assert_eq!(state.available(&A), Some(5));
        history.push(WarehouseEvent::Released {
            order_id: ORDER,
            lines: vec![line(A, 2)],
        });
        given::<Warehouse>(history.clone())
            .when(WarehouseCommand::Release { order_id: ORDER })
            .then([]);
        // A late duplicate reservation after the release holds nothing again.
        given::<Warehouse>(history)
            .when(WarehouseCommand::Reserve {
                order_id: ORDER,
                lines: vec![line(A, 2)],
            })
            .then([]);
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Release { order_id: ORDER })
            .then([]);
    }

    #[test]
    fn quantities_never_go_negative() {
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Decrease(line(B, 2)))
            .then_error(WarehouseError::NotEnough {
                product_id: B,
                available: 1,
            });
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Increase(line(B, 0)))
            .then_error(WarehouseError::ZeroQuantity);
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Increase(line(Uuid::from_u128(0xc), 1)))
            .then_error(WarehouseError::UnknownProduct(Uuid::from_u128(0xc)));
        given::<Warehouse>(stocked())
            .when(WarehouseCommand::Decrease(line(A, 5)))
            .then([WarehouseEvent::Decreased(line(A, 5))]);
    }
}
