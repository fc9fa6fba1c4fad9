//! A quote (cart), a stream of its own, and each customer's open-quote slot, which keeps a
//! customer to one open quote at a time.

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
    /// The customer whose quote it is.
    pub customer_id: Uuid,
    /// Its currency.
    pub currency: Currency,
    /// Where it stands.
    pub status: QuoteStatus,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// Its items, in the order they were added (unit prices as when added).
    pub items: Vec<Line>,
}

/// The state of one quote, a stream of its own: nothing until it is created. Its state is the
/// quote alone, however many quotes its customer had before.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRecord {
    quote: Option<Quote>,
}

impl QuoteRecord {
    /// The quote, once created.
    pub fn quote(&self) -> Option<&Quote> {
        self.quote.as_ref()
    }

    fn open_quote(&self) -> Result<&Quote, QuoteError> {
        let quote = self.quote.as_ref().ok_or(QuoteError::NotFound)?;
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

impl Aggregate for QuoteRecord {
    const TYPE: &'static str = "quote";
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
                if self.quote.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![QuoteEvent::Created {
                    quote_id: *quote_id,
                    customer_id: *customer_id,
                    currency: *currency,
                    created_at: *now,
                }])
            }
            QuoteCommand::SetItem { quote_id, line } => {
                let quote = self.open_quote()?;
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
                let quote = self.open_quote()?;
                if !quote.items.iter().any(|i| i.product_id == *product_id) {
                    return Err(QuoteError::ItemNotFound);
                }
                Ok(vec![QuoteEvent::ItemRemoved {
                    quote_id: *quote_id,
                    product_id: *product_id,
                }])
            }
            QuoteCommand::Cancel { quote_id } => {
                self.open_quote()?;
                Ok(vec![QuoteEvent::Cancelled {
                    quote_id: *quote_id,
                }])
            }
            QuoteCommand::Confirm { quote_id, prices } => {
                let quote = self.quote.as_ref().ok_or(QuoteError::NotFound)?;
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
        if let QuoteEvent::Created {
            quote_id,
            customer_id,
            currency,
            created_at,
        } = event
        {
            self.quote = Some(Quote {
                quote_id: *quote_id,
                customer_id: *customer_id,
                currency: *currency,
                status: QuoteStatus::Open,
                created_at: *created_at,
                items: Vec::new(),
            });
            return;
        }
        let Some(quote) = self.quote.as_mut() else {
            return;
        };
        match event {
            QuoteEvent::Created { .. } => {}
            QuoteEvent::ItemAdded { line, .. } => quote.items.push(line.clone()),
            QuoteEvent::ItemQuantityChanged {
                product_id,
                quantity,
                ..
            } => {
                if let Some(item) = quote.items.iter_mut().find(|i| i.product_id == *product_id) {
                    item.quantity = *quantity;
                }
            }
            QuoteEvent::ItemRemoved { product_id, .. } => {
                quote.items.retain(|i| i.product_id != *product_id);
            }
            QuoteEvent::Cancelled { .. } => quote.status = QuoteStatus::Cancelled,
            QuoteEvent::Confirmed { lines, .. } => {
                quote.items = lines.clone();
                quote.status = QuoteStatus::Confirmed;
            }
        }
    }
}

/// Which quote of a customer is open, if any: a stream per customer, taken when a quote is
/// created and freed when it is confirmed or cancelled, in the same unit of work, so a
/// customer has at most one open quote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenQuote {
    quote_id: Option<Uuid>,
}

impl OpenQuote {
    /// The open quote's id.
    pub fn quote_id(&self) -> Option<Uuid> {
        self.quote_id
    }
}

/// What a customer's open-quote slot can be asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenQuoteCommand {
    /// A quote is opened (refused while another is open).
    Take(Uuid),
    /// The quote is closed (nothing when it is not the open one).
    Free(Uuid),
}

/// What happened to a customer's open-quote slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum OpenQuoteEvent {
    /// A quote became the customer's open quote.
    #[serde(rename = "OpenQuoteTaken", rename_all = "camelCase")]
    Taken {
        /// The quote.
        quote_id: Uuid,
    },
    /// The open quote was confirmed or cancelled.
    #[serde(rename = "OpenQuoteFreed", rename_all = "camelCase")]
    Freed {
        /// The quote.
        quote_id: Uuid,
    },
}

impl Aggregate for OpenQuote {
    const TYPE: &'static str = "open-quote";
    type Command = OpenQuoteCommand;
    type Event = OpenQuoteEvent;
    type Error = QuoteError;

    fn decide(&self, command: &OpenQuoteCommand) -> Result<Vec<OpenQuoteEvent>, QuoteError> {
        match (*command, self.quote_id) {
            (OpenQuoteCommand::Take(quote_id), Some(open)) if open == quote_id => Ok(Vec::new()),
            (OpenQuoteCommand::Take(_), Some(open)) => Err(QuoteError::AlreadyOpen(open)),
            (OpenQuoteCommand::Take(quote_id), None) => {
                Ok(vec![OpenQuoteEvent::Taken { quote_id }])
            }
            (OpenQuoteCommand::Free(quote_id), Some(open)) if open == quote_id => {
                Ok(vec![OpenQuoteEvent::Freed { quote_id }])
            }
            (OpenQuoteCommand::Free(_), _) => Ok(Vec::new()),
        }
    }

    fn evolve(&mut self, event: &OpenQuoteEvent) {
        match event {
            OpenQuoteEvent::Taken { quote_id } => self.quote_id = Some(*quote_id),
            OpenQuoteEvent::Freed { .. } => self.quote_id = None,
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
        let other = Uuid::from_u128(0x10);
        let taken = OpenQuoteEvent::Taken { quote_id: QUOTE };
        given::<OpenQuote>([taken])
            .when(OpenQuoteCommand::Take(other))
            .then_error(QuoteError::AlreadyOpen(QUOTE));
        given::<OpenQuote>([taken])
            .when(OpenQuoteCommand::Take(QUOTE))
            .then([]);
        given::<OpenQuote>([taken])
            .when(OpenQuoteCommand::Free(other))
            .then([]);
        given::<OpenQuote>([taken, OpenQuoteEvent::Freed { quote_id: QUOTE }])
            .when(OpenQuoteCommand::Take(other))
            .then([OpenQuoteEvent::Taken { quote_id: other }]);
    }

    #[test]
    fn creating_twice_creates_once() {
        let create = QuoteCommand::Create {
            quote_id: QUOTE,
            customer_id: Uuid::nil(),
            currency: Currency::Eur,
            now: DateTime::<Utc>::MIN_UTC,
        };
        given::<QuoteRecord>([])
            .when(create.clone())
            .then([created()]);
        given::<QuoteRecord>([created()]).when(create).then([]);
    }

    #[test]
    fn adding_a_product_twice_sets_its_quantity() {
        given::<QuoteRecord>([created()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(2),
            })
            .then([added()]);
        let state = given::<QuoteRecord>([created(), added()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(5),
            })
            .then([QuoteEvent::ItemQuantityChanged {
                quote_id: QUOTE,
                product_id: KEYBOARD,
                quantity: 5,
            }]);
        assert_eq!(state.quote().map(|q| q.items[0].quantity), Some(5));
        given::<QuoteRecord>([created(), added()])
            .when(QuoteCommand::SetItem {
                quote_id: QUOTE,
                line: keyboard(2),
            })
            .then([]);
    }

    #[test]
    fn quantities_must_be_positive() {
        given::<QuoteRecord>([created()])
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
            given::<QuoteRecord>(history.clone())
                .when(QuoteCommand::SetItem {
                    quote_id: QUOTE,
                    line: keyboard(3),
                })
                .then_rejected(|e| matches!(e, QuoteError::NotOpen(_)));
            given::<QuoteRecord>(history.clone())
                .when(QuoteCommand::RemoveItem {
                    quote_id: QUOTE,
                    product_id: KEYBOARD,
                })
                .then_rejected(|e| matches!(e, QuoteError::NotOpen(_)));
            given::<QuoteRecord>(history)
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
        given::<QuoteRecord>([created()])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: BTreeMap::new(),
            })
            .then_error(QuoteError::Empty);
        let confirmed = QuoteEvent::Confirmed {
            quote_id: QUOTE,
            lines: vec![keyboard(2)],
        };
        given::<QuoteRecord>([created(), added()])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: prices(),
            })
            .then([confirmed.clone()]);
        given::<QuoteRecord>([created(), added(), confirmed])
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
        given::<QuoteRecord>([created(), added(), added_later])
            .when(QuoteCommand::Confirm {
                quote_id: QUOTE,
                prices: prices(),
            })
            .then_error(QuoteError::Unpriced(mat));
    }

    #[test]
    fn removing_needs_the_item() {
        given::<QuoteRecord>([created()])
            .when(QuoteCommand::RemoveItem {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            })
            .then_error(QuoteError::ItemNotFound);
        given::<QuoteRecord>([created(), added()])
            .when(QuoteCommand::RemoveItem {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            })
            .then([QuoteEvent::ItemRemoved {
                quote_id: QUOTE,
                product_id: KEYBOARD,
            }]);
        given::<QuoteRecord>([])
            .when(QuoteCommand::Cancel { quote_id: QUOTE })
            .then_error(QuoteError::NotFound);
    }
}
