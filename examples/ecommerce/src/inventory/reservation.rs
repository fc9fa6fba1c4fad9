//! An order's reservation: whether its stock is held, refused or given back, and which
//! lines. One stream per order; reserving writes it together with every product's stock unit
//! in one unit of work, so an order holds all its lines or none.

use std::collections::BTreeMap;

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::stock::StockLine;

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

/// An order's reservation.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// Where it stands (`None` before the order asked).
    pub status: Option<ReservationStatus>,
    /// What is (or was) held, one line per product, in product order.
    pub lines: Vec<StockLine>,
}

/// What a reservation records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationCommand {
    /// Every line was held (once per order).
    Reserve {
        /// The order.
        order_id: Uuid,
        /// The lines held, merged by product.
        lines: Vec<StockLine>,
    },
    /// Stock was short (once per order).
    Refuse {
        /// The order.
        order_id: Uuid,
        /// The products short of stock.
        product_ids: Vec<Uuid>,
    },
    /// The held lines were given back (only while reserved).
    Release {
        /// The order.
        order_id: Uuid,
    },
}

/// What happened to an order's reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum ReservationEvent {
    /// Stock was held for the order.
    #[serde(rename = "OrderStockReserved", rename_all = "camelCase")]
    Reserved {
        /// The order.
        order_id: Uuid,
        /// What was held, one line per product.
        lines: Vec<StockLine>,
    },
    /// The order could not be served: nothing was held.
    #[serde(rename = "StockReservationRefused", rename_all = "camelCase")]
    Refused {
        /// The order.
        order_id: Uuid,
        /// The products short of stock.
        product_ids: Vec<Uuid>,
    },
    /// The order's stock was given back.
    #[serde(rename = "OrderStockReleased", rename_all = "camelCase")]
    Released {
        /// The order.
        order_id: Uuid,
        /// What was given back.
        lines: Vec<StockLine>,
    },
}

/// A reservation refuses nothing: a second decision for the same order decides nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a reservation refuses nothing")]
pub struct Never;

/// One line per product, quantities summed, in product order.
pub fn merge(lines: &[StockLine]) -> Vec<StockLine> {
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

impl Aggregate for Reservation {
    const TYPE: &'static str = "reservation";
    type Command = ReservationCommand;
    type Event = ReservationEvent;
    type Error = Never;

    fn decide(&self, command: &ReservationCommand) -> Result<Vec<ReservationEvent>, Never> {
        Ok(match (command, self.status) {
            (ReservationCommand::Reserve { order_id, lines }, None) => {
                vec![ReservationEvent::Reserved {
                    order_id: *order_id,
                    lines: lines.clone(),
                }]
            }
            (
                ReservationCommand::Refuse {
                    order_id,
                    product_ids,
                },
                None,
            ) => vec![ReservationEvent::Refused {
                order_id: *order_id,
                product_ids: product_ids.clone(),
            }],
            (ReservationCommand::Release { order_id }, Some(ReservationStatus::Reserved)) => {
                vec![ReservationEvent::Released {
                    order_id: *order_id,
                    lines: self.lines.clone(),
                }]
            }
            _ => Vec::new(),
        })
    }

    fn evolve(&mut self, event: &ReservationEvent) {
        match event {
            ReservationEvent::Reserved { lines, .. } => {
                self.status = Some(ReservationStatus::Reserved);
                self.lines.clone_from(lines);
            }
            ReservationEvent::Refused { .. } => self.status = Some(ReservationStatus::Refused),
            ReservationEvent::Released { .. } => self.status = Some(ReservationStatus::Released),
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    const ORDER: Uuid = Uuid::from_u128(0x1);
    const A: Uuid = Uuid::from_u128(0xa);

    fn lines() -> Vec<StockLine> {
        vec![StockLine {
            product_id: A,
            quantity: 2,
        }]
    }

    #[test]
    fn an_order_reserves_once_and_releases_once() {
        let reserved = ReservationEvent::Reserved {
            order_id: ORDER,
            lines: lines(),
        };
        given::<Reservation>([reserved.clone()])
            .when(ReservationCommand::Reserve {
                order_id: ORDER,
                lines: lines(),
            })
            .then([]);
        let released = ReservationEvent::Released {
            order_id: ORDER,
            lines: lines(),
        };
        given::<Reservation>([reserved.clone()])
            .when(ReservationCommand::Release { order_id: ORDER })
            .then([released.clone()]);
        given::<Reservation>([reserved.clone(), released.clone()])
            .when(ReservationCommand::Release { order_id: ORDER })
            .then([]);
        // A late reservation after the release holds nothing again.
        given::<Reservation>([reserved, released])
            .when(ReservationCommand::Reserve {
                order_id: ORDER,
                lines: lines(),
            })
            .then([]);
        given::<Reservation>([])
            .when(ReservationCommand::Release { order_id: ORDER })
            .then([]);
    }

    #[test]
    fn lines_merge_by_product() {
        let b = Uuid::from_u128(0xb);
        let line = |product_id, quantity| StockLine {
            product_id,
            quantity,
        };
        assert_eq!(
            merge(&[line(b, 1), line(A, 2), line(A, 3)]),
            [line(A, 5), line(b, 1)]
        );
    }
}
