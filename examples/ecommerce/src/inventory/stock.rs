//! A product's stock unit: how many are available and how many are held for orders. One
//! stream per product, so orders of different products never meet.

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

/// The state of one product's stock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockUnit {
    /// Whether the product has a stock unit (it was entered in stock).
    pub entered: bool,
    /// Available quantity.
    pub available: u32,
    /// Quantity held for reserved orders.
    pub held: u32,
}

/// What a stock unit can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockCommand {
    /// Creates the unit with a quantity, unless it exists (seeding; idempotent).
    Enter(StockLine),
    /// Holds a quantity for an order.
    Hold {
        /// The order.
        order_id: Uuid,
        /// The product and quantity.
        line: StockLine,
    },
    /// Gives an order's held quantity back.
    GiveBack {
        /// The order.
        order_id: Uuid,
        /// The product and quantity.
        line: StockLine,
    },
    /// Adds stock.
    Increase(StockLine),
    /// Removes stock (never below zero).
    Decrease(StockLine),
}

/// What happened to a product's stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum StockEvent {
    /// The product got its stock unit.
    #[serde(rename = "UnitEnteredInStock")]
    Entered(StockLine),
    /// A quantity was held for an order.
    #[serde(rename = "StockReserved", rename_all = "camelCase")]
    Held {
        /// The order.
        order_id: Uuid,
        /// The product and quantity.
        line: StockLine,
    },
    /// An order's quantity was given back.
    #[serde(rename = "StockReleased", rename_all = "camelCase")]
    GivenBack {
        /// The order.
        order_id: Uuid,
        /// The product and quantity.
        line: StockLine,
    },
    /// Stock was added.
    #[serde(rename = "StockQuantityIncreased")]
    Increased(StockLine),
    /// Stock was removed.
    #[serde(rename = "StockQuantityDecreased")]
    Decreased(StockLine),
}

/// How a product's stock moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum MovementKind {
    /// The product got its stock unit with a quantity.
    Entered,
    /// A quantity was held for an order.
    Reserved,
    /// An order's held quantity came back.
    Released,
    /// Stock was added.
    Increased,
    /// Stock was removed.
    Decreased,
}

/// One movement of a product's stock, as its history shows it: what moved and how much, not
/// for which order (another customer's orders are not the reader's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockMovement {
    /// The movement's position in the product's history (1 for the first): pass the last one
    /// seen as `after` to read the next page.
    pub version: u64,
    /// What moved.
    pub kind: MovementKind,
    /// How many.
    pub quantity: u32,
    /// When.
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

impl StockEvent {
    /// The movement this event records, and how many.
    pub fn movement(&self) -> (MovementKind, u32) {
        match self {
            Self::Entered(line) => (MovementKind::Entered, line.quantity),
            Self::Held { line, .. } => (MovementKind::Reserved, line.quantity),
            Self::GivenBack { line, .. } => (MovementKind::Released, line.quantity),
            Self::Increased(line) => (MovementKind::Increased, line.quantity),
            Self::Decreased(line) => (MovementKind::Decreased, line.quantity),
        }
    }
}

/// Why a stock unit refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StockError {
    /// No stock unit for the product.
    #[error("product {0} has no stock unit")]
    UnknownProduct(Uuid),
    /// A quantity must be above zero.
    #[error("quantity must be greater than zero")]
    ZeroQuantity,
    /// Removing or holding more than is available.
    #[error("only {available} of product {product_id} are available")]
    NotEnough {
        /// The product.
        product_id: Uuid,
        /// What is available.
        available: u32,
    },
}

impl StockUnit {
    /// The quantity available, `Err` when the product has no unit or the quantity is zero or
    /// more than available.
    fn take(&self, line: &StockLine) -> Result<(), StockError> {
        if !self.entered {
            return Err(StockError::UnknownProduct(line.product_id));
        }
        if line.quantity == 0 {
            return Err(StockError::ZeroQuantity);
        }
        if self.available < line.quantity {
            return Err(StockError::NotEnough {
                product_id: line.product_id,
                available: self.available,
            });
        }
        Ok(())
    }
}

impl Aggregate for StockUnit {
    const TYPE: &'static str = "stock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;

    fn decide(&self, command: &StockCommand) -> Result<Vec<StockEvent>, StockError> {
        match *command {
            StockCommand::Enter(line) if self.entered => {
                let _ = line;
                Ok(Vec::new())
            }
            StockCommand::Enter(line) => Ok(vec![StockEvent::Entered(line)]),
            StockCommand::Hold { order_id, line } => {
                self.take(&line)?;
                Ok(vec![StockEvent::Held { order_id, line }])
            }
            StockCommand::GiveBack { order_id, line } => {
                if !self.entered {
                    return Err(StockError::UnknownProduct(line.product_id));
                }
                Ok(vec![StockEvent::GivenBack { order_id, line }])
            }
            StockCommand::Increase(line) => {
                if !self.entered {
                    return Err(StockError::UnknownProduct(line.product_id));
                }
                if line.quantity == 0 {
                    return Err(StockError::ZeroQuantity);
                }
                Ok(vec![StockEvent::Increased(line)])
            }
            StockCommand::Decrease(line) => {
                self.take(&line)?;
                Ok(vec![StockEvent::Decreased(line)])
            }
        }
    }

    fn evolve(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Entered(line) => {
                self.entered = true;
                self.available = line.quantity;
            }
            StockEvent::Held { line, .. } => {
                self.available = self.available.saturating_sub(line.quantity);
                self.held = self.held.saturating_add(line.quantity);
            }
            StockEvent::GivenBack { line, .. } => {
                self.available = self.available.saturating_add(line.quantity);
                self.held = self.held.saturating_sub(line.quantity);
            }
            StockEvent::Increased(line) => {
                self.available = self.available.saturating_add(line.quantity);
            }
            StockEvent::Decreased(line) => {
                self.available = self.available.saturating_sub(line.quantity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    const A: Uuid = Uuid::from_u128(0xa);
    const ORDER: Uuid = Uuid::from_u128(0x1);

    fn line(quantity: u32) -> StockLine {
        StockLine {
            product_id: A,
            quantity,
        }
    }

    #[test]
    fn entering_is_idempotent() {
        given::<StockUnit>([StockEvent::Entered(line(5))])
            .when(StockCommand::Enter(line(9)))
            .then([]);
    }

    #[test]
    fn a_hold_moves_stock_from_available_to_held_and_back() {
        let held = given::<StockUnit>([StockEvent::Entered(line(5))])
            .when(StockCommand::Hold {
                order_id: ORDER,
                line: line(2),
            })
            .then([StockEvent::Held {
                order_id: ORDER,
                line: line(2),
            }]);
        assert_eq!((held.available, held.held), (3, 2));
        let back = given::<StockUnit>([
            StockEvent::Entered(line(5)),
            StockEvent::Held {
                order_id: ORDER,
                line: line(2),
            },
        ])
        .when(StockCommand::GiveBack {
            order_id: ORDER,
            line: line(2),
        })
        .then([StockEvent::GivenBack {
            order_id: ORDER,
            line: line(2),
        }]);
        assert_eq!((back.available, back.held), (5, 0));
    }

    #[test]
    fn quantities_never_go_negative() {
        given::<StockUnit>([StockEvent::Entered(line(1))])
            .when(StockCommand::Decrease(line(2)))
            .then_error(StockError::NotEnough {
                product_id: A,
                available: 1,
            });
        given::<StockUnit>([StockEvent::Entered(line(1))])
            .when(StockCommand::Hold {
                order_id: ORDER,
                line: line(2),
            })
            .then_error(StockError::NotEnough {
                product_id: A,
                available: 1,
            });
        given::<StockUnit>([StockEvent::Entered(line(1))])
            .when(StockCommand::Increase(line(0)))
            .then_error(StockError::ZeroQuantity);
        given::<StockUnit>([])
            .when(StockCommand::Increase(line(1)))
            .then_error(StockError::UnknownProduct(A));
    }
}
