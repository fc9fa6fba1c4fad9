//! Deterministic failures for demos and tests: payments or shipments of orders whose total
//! ends in given cents fail, so every compensation path can be exercised on purpose.

use rust_decimal::Decimal;

use crate::money::cents;

/// Which orders fail on purpose (none by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailureRules {
    /// Payments of totals ending in these cents are declined.
    pub payment_cents: Option<u32>,
    /// Shipments of totals ending in these cents fail.
    pub shipment_cents: Option<u32>,
}

impl FailureRules {
    /// The demo's rules: totals ending in .39 are declined (three of a product priced .13,
    /// say), totals ending in .13 fail to ship.
    pub fn demo() -> Self {
        Self {
            payment_cents: Some(39),
            shipment_cents: Some(13),
        }
    }

    /// Whether a payment of `amount` is declined.
    pub fn declines_payment(&self, amount: Decimal) -> bool {
        self.payment_cents == Some(cents(amount))
    }

    /// Whether a shipment of an order totalling `amount` fails.
    pub fn fails_shipment(&self, amount: Decimal) -> bool {
        self.shipment_cents == Some(cents(amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_look_at_the_cents() {
        let rules = FailureRules::demo();
        assert!(rules.fails_shipment(Decimal::new(1213, 2)));
        assert!(!rules.fails_shipment(Decimal::new(1214, 2)));
        assert!(rules.declines_payment(Decimal::new(5739, 2)));
        assert!(!FailureRules::default().declines_payment(Decimal::new(5739, 2)));
        assert_eq!(cents(Decimal::new(100, 0)), 0);
    }
}
