//! The quote book of one customer: every quote (cart) they opened, at most one open at a time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use rust_decimal::Decimal;

use crate::messages::Line;
use crate::money::Currency;

/// Where a quote stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuoteStatus {
    /// Items can change.
    Open,
    /// Turned into an order.
    Confirmed,
    /// Abandoned.
    Cancelled,
}

/// A quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    /// The quote id.
    pub quote_id: Uuid,
    /// Its currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: QuoteStatus,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Its items, in the order they were added (unit prices as when added).
    pub items: Vec<Line>,
}

/// The state of a customer's quotes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteBook {
    quotes: BTreeMap<Uuid, Quote>,
    open: Option<Uuid>,
}

impl QuoteBook {
    /// A quote of this customer.
    pub fn quote(&self, quote_id: &Uuid) -> Option<&Quote> {
        self.quotes.get(quote_id)
    }

    /// The open quote, if any.
    pub fn open(&self) -> Option<&Quote> {
        self.open.and_then(|id| self.quotes.get(&id))
    }

    fn open_quote(&self, quote_id: &Uuid) -> Result<&Quote, QuoteError> {
        let quote = self.quotes.get(quote_id).ok_or(QuoteError::NotFound)?;
        if quote.status != QuoteStatus::Open {
            return Err(QuoteError::NotOpen(quote.status));
        }
        Ok(quote)
    }
}

/// What a customer can do with quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteCommand {
    /// Opens a quote.
    Create {
        /// Its id.
        quote_id: Uuid,
        /// The customer.
        customer_id: Uuid,
        /// Its currency.
        currency: Currency,
        /// Now.
        now: DateTime<Utc>,
    },
    /// Adds a product, or sets its quantity when it is already there.
    SetItem {
        /// The quote.
        quote_id: Uuid,
        /// The product, priced in the quote's currency.
        line: Line,
    },
    /// Removes a product.
    RemoveItem {
        /// The quote.
        quote_id: Uuid,
        /// The product.
        product_id: Uuid,
    },
    /// Abandons the quote.
    Cancel {
        /// The quote.
        quote_id: Uuid,
    },
    /// Turns the quote into an order, at the given (current) prices.
    Confirm {
        /// The quote.
        quote_id: Uuid,
        /// The name and unit price of each product, in the quote's currency: the lines are
        /// the items the quote holds when the command is decided, at these prices.
        prices: BTreeMap<Uuid, (String, Decimal)>,
    },
}

/// What happened to a customer's quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum QuoteEvent {
    /// A quote was opened.
    #[serde(rename = "QuoteCreated", rename_all = "camelCase")]
    Created {
        /// The quote.
        quote_id: Uuid,
        /// The customer.
        customer_id: Uuid,
        /// Its currency.
        currency: Currency,
        /// When.
        created_at: DateTime<Utc>,
    },
    /// A product was added.
    #[serde(rename = "QuoteItemAdded", rename_all = "camelCase")]
    ItemAdded {
        /// The quote.
        quote_id: Uuid,
        /// The item.
        line: Line,
    },
    /// A product's quantity was set.
    #[serde(rename = "QuoteItemQuantityChanged", rename_all = "camelCase")]
    ItemQuantityChanged {
        /// The quote.
        quote_id: Uuid,
        /// The product.
        product_id: Uuid,
        /// The new quantity.
        quantity: u32,
    },
    /// A product was removed.
    #[serde(rename = "QuoteItemRemoved", rename_all = "camelCase")]
    ItemRemoved {
        /// The quote.
        quote_id: Uuid,
        /// The product.
        product_id: Uuid,
    },
    /// The quote was abandoned.
    #[serde(rename = "QuoteCancelled", rename_all = "camelCase")]
    Cancelled {
        /// The quote.
        quote_id: Uuid,
    },
    /// The quote became an order.
    #[serde(rename = "QuoteConfirmed", rename_all = "camelCase")]
    Confirmed {
        /// The quote.
        quote_id: Uuid,
        /// Its lines at the confirmed prices.
        lines: Vec<Line>,
    },
}

impl QuoteEvent {
    /// The quote an event is about.
    pub fn quote_id(&self) -> Uuid {
        match self {
            Self::Created { quote_id, .. }
            | Self::ItemAdded { quote_id, .. }
            | Self::ItemQuantityChanged { quote_id, .. }
            | Self::ItemRemoved { quote_id, .. }
            | Self::Cancelled { quote_id }
            | Self::Confirmed { quote_id, .. } => *quote_id,
        }
    }
}

/// Why a quote command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The customer already has an open quote.
    #[error("quote {0} is already open: confirm or cancel it first")]
    AlreadyOpen(Uuid),
    /// No such quote for this customer.
    #[error("no such quote")]
    NotFound,
    /// The quote is not open.
    #[error("the quote is {0:?}, not Open")]
    NotOpen(QuoteStatus),
    /// A quantity must be above zero.
    #[error("quantity must be greater than zero")]
    InvalidQuantity,
    /// The product is not in the quote.
    #[error("the product is not in the quote")]
    ItemNotFound,
    /// Confirming needs at least one item.
    #[error("a quote needs at least one item to be confirmed")]
    Empty,
    /// An item was added after the quote was priced (price it again).
    #[error("product {0} was added after the quote was priced")]
    Unpriced(Uuid),
}

impl Aggregate for QuoteBook {
    const TYPE: &'static str = "quotes";
    type Command = QuoteCommand;
    type Event = QuoteEvent;
    type Error = QuoteError;

    fn decide(&self, command: &QuoteCommand) -> Result<Vec<QuoteEvent>, QuoteError> {
        match command {
            QuoteCommand::Create {
                quote_id,
                customer_id,
                currency,
                now,
            } => {
                if let Some(open) = self.open {
                    return Err(QuoteError::AlreadyOpen(open));
                }
                Ok(vec![QuoteEvent::Created {
                    quote_id: *quote_id,
                    customer_id: *customer_id,
                    currency: *currency,
                    created_at: *now,
                }])
            }
            QuoteCommand::SetItem { quote_id, line } => {
                let quote = self.open_quote(quote_id)?;
                if line.quantity == 0 {
                    return Err(QuoteError::InvalidQuantity);
                }
                match quote.items.iter().find(|i| i.product_id == line.product_id) {
                    Some(item) if item.quantity == line.quantity => Ok(Vec::new()),
                    Some(_) => Ok(vec![QuoteEvent::ItemQuantityChanged {
                        quote_id: *quote_id,
                        product_id: line.product_id,
                        quantity: line.quantity,
                    }]),
                    None => Ok(vec![QuoteEvent::ItemAdded {
                        quote_id: *quote_id,
                        line: line.clone(),
                    }]),
                }
            }
            QuoteCommand::RemoveItem {
                quote_id,
                product_id,
            } => {
                let quote = self.open_quote(quote_id)?;
                if !quote.items.iter().any(|i| i.product_id == *product_id) {
                    return Err(QuoteError::ItemNotFound);
                }
                Ok(vec![QuoteEvent::ItemRemoved {
                    quote_id: *quote_id,
                    product_id: *product_id,
                }])
            }
            QuoteCommand::Cancel { quote_id } => {
                self.open_quote(quote_id)?;
                Ok(vec![QuoteEvent::Cancelled {
                    quote_id: *quote_id,
                }])
            }
            QuoteCommand::Confirm { quote_id, prices } => {
                let quote = self.quotes.get(quote_id).ok_or(QuoteError::NotFound)?;
                match quote.status {
                    QuoteStatus::Confirmed => return Ok(Vec::new()),
                    QuoteStatus::Cancelled => return Err(QuoteError::NotOpen(quote.status)),
                    QuoteStatus::Open => {}
                }
                if quote.items.is_empty() {
                    return Err(QuoteError::Empty);
                }
                // The items as they are now: an edit that committed before this decision is in
                // the order; one after it finds the quote confirmed and is refused.
                let lines = quote
                    .items
                    .iter()
                    .map(|item| {
                        let (name, price) = prices
                            .get(&item.product_id)
                            .ok_or(QuoteError::Unpriced(item.product_id))?;
                        Ok(Line {
                            product_name: name.clone(),
                            unit_price: *price,
                            ..item.clone()
                        })
                    })
                    .collect::<Result<Vec<Line>, QuoteError>>()?;
                Ok(vec![QuoteEvent::Confirmed {
                    quote_id: *quote_id,
                    lines,
                }])
            }
        }
    }

    fn evolve(&mut self, event: &QuoteEvent) {
        match event {
            QuoteEvent::Created {
                quote_id,
                currency,
                created_at,
                ..
            } => {
                self.quotes.insert(
                    *quote_id,
                    Quote {
                        quote_id: *quote_id,
                        currency: *currency,
                        status: QuoteStatus::Open,
                        created_at: *created_at,
                        items: Vec::new(),
                    },
                );
                self.open = Some(*quote_id);
            }
            QuoteEvent::ItemAdded { quote_id, line } => {
                if let Some(quote) = self.quotes.get_mut(quote_id) {
                    quote.items.push(line.clone());
                }
            }
            QuoteEvent::ItemQuantityChanged {
                quote_id,
                product_id,
                quantity,
            } => {
                if let Some(item) = self
                    .quotes
                    .get_mut(quote_id)
                    .and_then(|q| q.items.iter_mut().find(|i| i.product_id == *product_id))
                {
                    item.quantity = *quantity;
                }
            }
            QuoteEvent::ItemRemoved {
                quote_id,
                product_id,
            } => {
                if let Some(quote) = self.quotes.get_mut(quote_id) {
                    quote.items.retain(|i| i.product_id != *product_id);
                }
            }
            QuoteEvent::Cancelled { quote_id } => self.close(quote_id, QuoteStatus::Cancelled),
            QuoteEvent::Confirmed { quote_id, lines } => {
                if let Some(quote) = self.quotes.get_mut(quote_id) {
                    quote.items = lines.clone();
                }
                self.close(quote_id, QuoteStatus::Confirmed);
            }
        }
    }
}

impl QuoteBook {
    fn close(&mut self, quote_id: &Uuid, status: QuoteStatus) {
        if let Some(quote) = self.quotes.get_mut(quote_id) {
            quote.status = status;
        }
        if self.open == Some(*quote_id) {
            self.open = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;
    use rust_decimal::Decimal;

    use super::*;

    const QUOTE: Uuid = Uuid::from_u128(0x9);
    const KEYBOARD: Uuid = Uuid::from_u128(0xa);

    fn created() -> QuoteEvent {
        QuoteEvent::Created {
            quote_id: QUOTE,
            customer_id: Uuid::nil(),
            currency: Currency::Eur,
            created_at: DateTime::<Utc>::MIN_UTC,
        }
    }

    fn keyboard(quantity: u32) -> Line {
        Line {
            product_id: KEYBOARD,
            product_name: "Keyboard".to_owned(),
            unit_price: Decimal::new(10709, 2),
            quantity,
        }
    }

    fn added() -> QuoteEvent {
        QuoteEvent::ItemAdded {
            quote_id: QUOTE,
            line: keyboard(2),
        }
    }

    #[test]
    fn one_open_quote_per_customer() {
        given::<QuoteBook>([created()])
            .when(QuoteCommand::Create {
                quote_id: Uuid::from_u128(0x10),
                customer_id: Uuid::nil(),
                currency: Currency::Usd,
                now: DateTime::<Utc>::MIN_UTC,
            })
            .then_error(QuoteError::AlreadyOpen(QUOTE));
        let cancelled = QuoteEvent::Cancelled { quote_id: QUOTE };
        given::<QuoteBook>([created(), cancelled])
            .when(QuoteCommand::Create {
                quote_id: Uuid::from_u128(0x10),
                customer_id: Uuid::nil(),
                currency: Currency::Usd,
                now: DateTime::<Utc>::MIN_UTC,
            })
            .then([QuoteEvent::Created {
                quote_id: Uuid::from_u128(0x10),
                customer_id: Uuid::nil(),
                currency: Currency::Usd,
                created_at: DateTime::<Utc>::MIN_UTC,
            }]);
    }

    #[test]
    fn adding_a_product_twice_sets_its_quantity() {
        given::<QuoteBook>([created()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(2),
            })
            .then([added()]);
        let state = given::<QuoteBook>([created(), added()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(5),
            })
            .then([QuoteEvent::ItemQuantityChanged {
                quote_id: QUOTE,
                product_id: KEYBOARD,
                quantity: 5,
            }]);
        assert_eq!(state.open().map(|q| q.items[0].quantity), Some(5));
        given::<QuoteBook>([created(), added()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(2),
            })
            .then([]);
    }

    #[test]
    fn quantities_must_be_positive() {
        given::<QuoteBook>([created()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(0),
            })
            .then_error(QuoteError::InvalidQuantity);
    }

    #[test]
    fn only_open_quotes_change() {
        let confirmed = QuoteEvent::Confirmed {
            quote_id: QUOTE,
            lines: vec![keyboard(2)],
        };
        let cancelled = QuoteEvent::Cancelled { quote_id: QUOTE };
        for closed in [confirmed, cancelled] {
            let history = [created(), added(), closed];
            given::<QuoteBook>(history.clone())
                .when(QuoteCommand::SetItem {
                    quote_id: QUOTE,
                    line: keyboard(3),
                })
                .then_rejected(|e| matches!(e, QuoteError::NotOpen(_)));
            given::<QuoteBook>(history.clone())
                .when(QuoteCommand::RemoveItem {
                    quote_id: QUOTE,
                    product_id: KEYBOARD,
                })
                .then_rejected(|e| matches!(e, QuoteError::NotOpen(_)));
            given::<QuoteBook>(history)
                .when(QuoteCommand::Cancel { quote_id: QUOTE })
                .then_rejected(|e| matches!(e, QuoteError::NotOpen(_)));
        }
    }

    fn prices() -> BTreeMap<Uuid, (String, Decimal)> {
        let line = keyboard(2);
        BTreeMap::from([(KEYBOARD, (line.product_name, line.unit_price))])
    }

    #[test]
    fn confirming_needs_an_item_and_happens_once() {
        given::<QuoteBook>([created()])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: BTreeMap::new(),
            })
            .then_error(QuoteError::Empty);
        let confirmed = QuoteEvent::Confirmed {
            quote_id: QUOTE,
            lines: vec![keyboard(2)],
        };
        given::<QuoteBook>([created(), added()])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: prices(),
            })
            .then([confirmed.clone()]);
        given::<QuoteBook>([created(), added(), confirmed])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: prices(),
            })
            .then([]);
    }

    #[test]
    fn confirming_takes_the_items_the_quote_holds_when_decided() {
        // Priced before a second item came in: refused, so the service prices it again
        // rather than confirm without the item.
        let mat = Uuid::from_u128(0x3a7);
        let added_later = QuoteEvent::ItemAdded {
            quote_id: QUOTE,
            line: Line {
                product_id: mat,
                ..keyboard(1)
            },
        };
        given::<QuoteBook>([created(), added(), added_later])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: prices(),
            })
            .then_error(QuoteError::Unpriced(mat));
    }

    #[test]
    fn removing_needs_the_item() {
        given::<QuoteBook>([created()])
            .when(QuoteCommand::RemoveItem {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            })
            .then_error(QuoteError::ItemNotFound);
        given::<QuoteBook>([created(), added()])
            .when(QuoteCommand::RemoveItem {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            })
            .then([QuoteEvent::ItemRemoved {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            }]);
        given::<QuoteBook>([])
            .when(QuoteCommand::Cancel { quote_id: QUOTE })
            .then_error(QuoteError::NotFound);
    }
}
