//! The shopping cart of `docs/getting-started.md`, tested: the page quotes this file verbatim.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Step 2: events.

use std::collections::BTreeMap;

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Everything that can happen to a shopping cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
enum CartEvent {
    #[serde(rename = "CartOpened")]
    Opened { customer: String },
    #[serde(rename = "CartItemAdded")]
    ItemAdded {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
    },
    #[serde(rename = "CartItemRemoved")]
    ItemRemoved { sku: String },
    #[serde(rename = "CartQuantityChanged")]
    QuantityChanged { sku: String, quantity: u32 },
    #[serde(rename = "CartCouponApplied")]
    CouponApplied { code: String, percent_off: u8 },
    #[serde(rename = "CartCouponRemoved")]
    CouponRemoved { code: String },
    #[serde(rename = "CartShippingAddressSet")]
    ShippingAddressSet { address: String },
    #[serde(rename = "CartCleared")]
    Cleared,
    #[serde(rename = "CartCheckedOut")]
    CheckedOut { total_cents: u64 },
    #[serde(rename = "CartAbandoned")]
    Abandoned,
}

// Step 3: the aggregate.

/// What a shopping cart can be asked to do.
#[derive(Debug, Clone)]
enum CartCommand {
    Open {
        customer: String,
    },
    AddItem {
        sku: String,
        quantity: u32,
        unit_price_cents: u64,
    },
    RemoveItem {
        sku: String,
    },
    ChangeQuantity {
        sku: String,
        quantity: u32,
    },
    ApplyCoupon {
        code: String,
        percent_off: u8,
    },
    RemoveCoupon,
    SetShippingAddress {
        address: String,
    },
    Clear,
    CheckOut,
    Abandon,
}

/// The most units of one item a cart holds.
const MAX_QUANTITY: u32 = 99;
/// The largest discount a coupon gives, in percent.
const MAX_PERCENT_OFF: u8 = 50;

/// Why a cart refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CartError {
    #[error("the cart is already open")]
    AlreadyOpen,
    #[error("the cart is not open")]
    NotOpen,
    #[error("a cart holds 1 to {MAX_QUANTITY} units of an item, not {0}")]
    InvalidQuantity(u32),
    #[error("{0} is not in the cart")]
    NotInCart(String),
    #[error("a coupon takes 1% to {MAX_PERCENT_OFF}% off, not {0}%")]
    InvalidDiscount(u8),
    #[error("coupon {0} is already applied; remove it first")]
    CouponAlreadyApplied(String),
    #[error("no coupon is applied")]
    NoCoupon,
    #[error("the shipping address is empty")]
    EmptyAddress,
    #[error("the cart is empty")]
    EmptyCart,
    #[error("the cart has no shipping address")]
    NoShippingAddress,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
enum CartStatus {
    #[default]
    New,
    Open,
    CheckedOut,
    Abandoned,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Line {
    quantity: u32,
    unit_price_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Coupon {
    code: String,
    percent_off: u8,
}

/// A shopping cart, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cart {
    status: CartStatus,
    customer: String,
    lines: BTreeMap<String, Line>,
    coupon: Option<Coupon>,
    shipping_address: Option<String>,
}

impl Cart {
    fn subtotal_cents(&self) -> u64 {
        let line_total = |line: &Line| u64::from(line.quantity) * line.unit_price_cents;
        self.lines.values().map(line_total).sum()
    }

    fn total_cents(&self) -> u64 {
        let subtotal = self.subtotal_cents();
        let percent_off = self.coupon.as_ref().map_or(0, |coupon| coupon.percent_off);
        subtotal - subtotal * u64::from(percent_off) / 100
    }
}

fn valid_quantity(quantity: u32) -> Result<u32, CartError> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(CartError::InvalidQuantity(quantity))
    }
}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;

    fn decide(&self, command: &CartCommand) -> Result<Vec<CartEvent>, CartError> {
        let event = match command {
            CartCommand::Open { customer } => match self.status {
                CartStatus::New => CartEvent::Opened {
                    customer: customer.clone(),
                },
                _ => return Err(CartError::AlreadyOpen),
            },
            // Every other command needs an open cart.
            _ if self.status != CartStatus::Open => return Err(CartError::NotOpen),
            CartCommand::AddItem {
                sku,
                quantity,
                unit_price_cents,
            } => {
                let quantity = valid_quantity(*quantity)?;
                let in_cart = self.lines.get(sku).map_or(0, |line| line.quantity);
                valid_quantity(in_cart + quantity)?;
                CartEvent::ItemAdded {
                    sku: sku.clone(),
                    quantity,
                    unit_price_cents: *unit_price_cents,
                }
            }
            CartCommand::RemoveItem { sku } if !self.lines.contains_key(sku) => {
                return Err(CartError::NotInCart(sku.clone()));
            }
            CartCommand::RemoveItem { sku } => CartEvent::ItemRemoved { sku: sku.clone() },
            CartCommand::ChangeQuantity { sku, quantity } => {
                let line = self
                    .lines
                    .get(sku)
                    .ok_or_else(|| CartError::NotInCart(sku.clone()))?;
                if valid_quantity(*quantity)? == line.quantity {
                    return Ok(vec![]);
                }
                CartEvent::QuantityChanged {
                    sku: sku.clone(),
                    quantity: *quantity,
                }
            }
            CartCommand::ApplyCoupon { code, percent_off } => {
                if !(1..=MAX_PERCENT_OFF).contains(percent_off) {
                    return Err(CartError::InvalidDiscount(*percent_off));
                }
                match &self.coupon {
                    Some(applied) if applied.code == *code => return Ok(vec![]),
                    Some(applied) => {
                        return Err(CartError::CouponAlreadyApplied(applied.code.clone()));
                    }
                    None => CartEvent::CouponApplied {
                        code: code.clone(),
                        percent_off: *percent_off,
                    },
                }
            }
            CartCommand::RemoveCoupon => match &self.coupon {
                Some(applied) => CartEvent::CouponRemoved {
                    code: applied.code.clone(),
                },
                None => return Err(CartError::NoCoupon),
            },
            CartCommand::SetShippingAddress { address } => match address.trim() {
                "" => return Err(CartError::EmptyAddress),
                address => CartEvent::ShippingAddressSet {
                    address: address.to_owned(),
                },
            },
            CartCommand::Clear if self.lines.is_empty() => return Ok(vec![]),
            CartCommand::Clear => CartEvent::Cleared,
            CartCommand::CheckOut if self.lines.is_empty() => return Err(CartError::EmptyCart),
            CartCommand::CheckOut if self.shipping_address.is_none() => {
                return Err(CartError::NoShippingAddress);
            }
            CartCommand::CheckOut => CartEvent::CheckedOut {
                total_cents: self.total_cents(),
            },
            CartCommand::Abandon => CartEvent::Abandoned,
        };
        Ok(vec![event])
    }

    fn evolve(&mut self, event: &CartEvent) {
        match event {
            CartEvent::Opened { customer } => {
                self.status = CartStatus::Open;
                self.customer = customer.clone();
            }
            CartEvent::ItemAdded {
                sku,
                quantity,
                unit_price_cents,
            } => {
                let line = self.lines.entry(sku.clone()).or_default();
                line.quantity += quantity;
                line.unit_price_cents = *unit_price_cents;
            }
            CartEvent::ItemRemoved { sku } => {
                self.lines.remove(sku);
            }
            CartEvent::QuantityChanged { sku, quantity } => {
                if let Some(line) = self.lines.get_mut(sku) {
                    line.quantity = *quantity;
                }
            }
            CartEvent::CouponApplied { code, percent_off } => {
                self.coupon = Some(Coupon {
                    code: code.clone(),
                    percent_off: *percent_off,
                });
            }
            CartEvent::CouponRemoved { .. } => self.coupon = None,
            CartEvent::ShippingAddressSet { address } => {
                self.shipping_address = Some(address.clone());
            }
            CartEvent::Cleared => self.lines.clear(),
            CartEvent::CheckedOut { .. } => self.status = CartStatus::CheckedOut,
            CartEvent::Abandoned => self.status = CartStatus::Abandoned,
        }
    }
}

// Step 4: Given/When/Then.

use es_core::testing::given;

fn opened() -> CartEvent {
    CartEvent::Opened {
        customer: "customer-7".into(),
    }
}

fn mug_added(quantity: u32) -> CartEvent {
    CartEvent::ItemAdded {
        sku: "mug".into(),
        quantity,
        unit_price_cents: 1250,
    }
}

#[test]
fn adding_an_item_to_an_open_cart() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::AddItem {
            sku: "mug".into(),
            quantity: 1,
            unit_price_cents: 1250,
        })
        .then([mug_added(1)]);
    assert_eq!(cart.total_cents(), 3 * 1250);
}

#[test]
fn a_cart_never_holds_more_than_99_of_an_item() {
    given::<Cart>([opened(), mug_added(98)])
        .when(CartCommand::AddItem {
            sku: "mug".into(),
            quantity: 2,
            unit_price_cents: 1250,
        })
        .then_error(CartError::InvalidQuantity(100));
}

#[test]
fn a_cart_opens_once() {
    given::<Cart>([])
        .when(CartCommand::Open {
            customer: "customer-7".into(),
        })
        .then([opened()]);
    given::<Cart>([opened()])
        .when(CartCommand::Open {
            customer: "customer-8".into(),
        })
        .then_error(CartError::AlreadyOpen);
}

#[test]
fn every_other_command_needs_an_open_cart() {
    let commands = || {
        [
            CartCommand::AddItem {
                sku: "mug".into(),
                quantity: 1,
                unit_price_cents: 1250,
            },
            CartCommand::RemoveItem { sku: "mug".into() },
            CartCommand::ChangeQuantity {
                sku: "mug".into(),
                quantity: 3,
            },
            CartCommand::ApplyCoupon {
                code: "SPRING10".into(),
                percent_off: 10,
            },
            CartCommand::RemoveCoupon,
            CartCommand::SetShippingAddress {
                address: "1 Main St".into(),
            },
            CartCommand::Clear,
            CartCommand::CheckOut,
            CartCommand::Abandon,
        ]
    };
    let checked_out = [
        opened(),
        mug_added(1),
        CartEvent::ShippingAddressSet {
            address: "1 Main St".into(),
        },
        CartEvent::CheckedOut { total_cents: 1250 },
    ];
    for command in commands() {
        given::<Cart>([])
            .when(command)
            .then_error(CartError::NotOpen);
    }
    for command in commands() {
        given::<Cart>(checked_out.clone())
            .when(command)
            .then_error(CartError::NotOpen);
    }
    for command in commands() {
        given::<Cart>([opened(), CartEvent::Abandoned])
            .when(command)
            .then_error(CartError::NotOpen);
    }
}

#[test]
fn adding_items_takes_1_to_99_units() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::AddItem {
            sku: "tea".into(),
            quantity: 99,
            unit_price_cents: 400,
        })
        .then([CartEvent::ItemAdded {
            sku: "tea".into(),
            quantity: 99,
            unit_price_cents: 400,
        }]);
    assert_eq!(cart.lines.len(), 2);
    assert_eq!(cart.subtotal_cents(), 2 * 1250 + 99 * 400);

    given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::AddItem {
            sku: "mug".into(),
            quantity: 0,
            unit_price_cents: 1250,
        })
        .then_error(CartError::InvalidQuantity(0));
    given::<Cart>([opened()])
        .when(CartCommand::AddItem {
            sku: "mug".into(),
            quantity: 100,
            unit_price_cents: 1250,
        })
        .then_error(CartError::InvalidQuantity(100));
}

#[test]
fn adding_an_item_again_takes_its_latest_price() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::AddItem {
            sku: "mug".into(),
            quantity: 1,
            unit_price_cents: 1000,
        })
        .then([CartEvent::ItemAdded {
            sku: "mug".into(),
            quantity: 1,
            unit_price_cents: 1000,
        }]);
    assert_eq!(cart.total_cents(), 3 * 1000);
}

#[test]
fn removing_an_item_in_the_cart() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::RemoveItem { sku: "mug".into() })
        .then([CartEvent::ItemRemoved { sku: "mug".into() }]);
    assert!(cart.lines.is_empty());

    given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::RemoveItem { sku: "tea".into() })
        .then_error(CartError::NotInCart("tea".into()));
}

#[test]
fn changing_the_quantity_of_an_item() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::ChangeQuantity {
            sku: "mug".into(),
            quantity: 5,
        })
        .then([CartEvent::QuantityChanged {
            sku: "mug".into(),
            quantity: 5,
        }]);
    assert_eq!(cart.total_cents(), 5 * 1250);

    // The same quantity again changes nothing.
    given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::ChangeQuantity {
            sku: "mug".into(),
            quantity: 2,
        })
        .then([]);
    given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::ChangeQuantity {
            sku: "mug".into(),
            quantity: 0,
        })
        .then_error(CartError::InvalidQuantity(0));
    given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::ChangeQuantity {
            sku: "mug".into(),
            quantity: 100,
        })
        .then_error(CartError::InvalidQuantity(100));
    given::<Cart>([opened()])
        .when(CartCommand::ChangeQuantity {
            sku: "mug".into(),
            quantity: 1,
        })
        .then_error(CartError::NotInCart("mug".into()));
}

#[test]
fn applying_a_coupon() {
    let spring = || CartEvent::CouponApplied {
        code: "SPRING10".into(),
        percent_off: 10,
    };
    let cart = given::<Cart>([opened(), mug_added(4)])
        .when(CartCommand::ApplyCoupon {
            code: "SPRING10".into(),
            percent_off: 10,
        })
        .then([spring()]);
    assert_eq!(cart.total_cents(), 4 * 1250 - 500);

    // Applying the same coupon again changes nothing; another one is refused.
    given::<Cart>([opened(), spring()])
        .when(CartCommand::ApplyCoupon {
            code: "SPRING10".into(),
            percent_off: 10,
        })
        .then([]);
    given::<Cart>([opened(), spring()])
        .when(CartCommand::ApplyCoupon {
            code: "VIP20".into(),
            percent_off: 20,
        })
        .then_error(CartError::CouponAlreadyApplied("SPRING10".into()));
    for percent_off in [0, 51] {
        given::<Cart>([opened()])
            .when(CartCommand::ApplyCoupon {
                code: "FREE".into(),
                percent_off,
            })
            .then_error(CartError::InvalidDiscount(percent_off));
    }
}

#[test]
fn removing_the_coupon() {
    let spring = CartEvent::CouponApplied {
        code: "SPRING10".into(),
        percent_off: 10,
    };
    let cart = given::<Cart>([opened(), mug_added(4), spring])
        .when(CartCommand::RemoveCoupon)
        .then([CartEvent::CouponRemoved {
            code: "SPRING10".into(),
        }]);
    assert_eq!(cart.total_cents(), 4 * 1250);

    given::<Cart>([opened()])
        .when(CartCommand::RemoveCoupon)
        .then_error(CartError::NoCoupon);
}

#[test]
fn setting_the_shipping_address() {
    let cart = given::<Cart>([opened()])
        .when(CartCommand::SetShippingAddress {
            address: "  1 Main St, Springfield ".into(),
        })
        .then([CartEvent::ShippingAddressSet {
            address: "1 Main St, Springfield".into(),
        }]);
    assert_eq!(
        cart.shipping_address.as_deref(),
        Some("1 Main St, Springfield")
    );

    given::<Cart>([opened()])
        .when(CartCommand::SetShippingAddress {
            address: " \t".into(),
        })
        .then_error(CartError::EmptyAddress);
}

#[test]
fn clearing_the_cart() {
    let cart = given::<Cart>([opened(), mug_added(2)])
        .when(CartCommand::Clear)
        .then([CartEvent::Cleared]);
    assert!(cart.lines.is_empty());

    // Clearing an empty cart changes nothing.
    given::<Cart>([opened()]).when(CartCommand::Clear).then([]);
}

#[test]
fn checking_out_a_full_cart_with_an_address() {
    let address_set = || CartEvent::ShippingAddressSet {
        address: "1 Main St".into(),
    };
    let coupon = CartEvent::CouponApplied {
        code: "SPRING10".into(),
        percent_off: 10,
    };
    let cart = given::<Cart>([opened(), mug_added(4), coupon, address_set()])
        .when(CartCommand::CheckOut)
        .then([CartEvent::CheckedOut { total_cents: 4500 }]);
    assert_eq!(cart.status, CartStatus::CheckedOut);

    given::<Cart>([opened(), address_set()])
        .when(CartCommand::CheckOut)
        .then_error(CartError::EmptyCart);
    given::<Cart>([opened(), mug_added(1), CartEvent::Cleared, address_set()])
        .when(CartCommand::CheckOut)
        .then_error(CartError::EmptyCart);
    given::<Cart>([opened(), mug_added(1)])
        .when(CartCommand::CheckOut)
        .then_error(CartError::NoShippingAddress);
}

#[test]
fn abandoning_an_open_cart() {
    let cart = given::<Cart>([opened(), mug_added(1)])
        .when(CartCommand::Abandon)
        .then([CartEvent::Abandoned]);
    assert_eq!(cart.status, CartStatus::Abandoned);
}

// Step 5: running it.

use es_core::memory::MemoryEventStore;
use es_core::{CommandContext, Executed, Repository, RepositoryError, StreamId};

/// The HTTP status a handler would answer with.
fn status_of(outcome: &Result<Executed<Cart>, RepositoryError<CartError>>) -> u16 {
    match outcome {
        Ok(_) => 200,
        // The cart said no and nothing was written: show the reason to the user.
        Err(RepositoryError::Rejected(_)) => 422,
        // Another writer changed the cart between load and save; nothing was written.
        Err(RepositoryError::Conflict(_)) => 409,
        // The store failed (connection, timeout): try again later.
        Err(RepositoryError::Store(_)) => 503,
        // An event that cannot be encoded or decoded: a bug, not the user's problem.
        Err(_) => 500,
    }
}

// Step 8: outbox messages.

use es_core::{Metadata, OutboxMessage};
use serde_json::json;

/// Asks the ordering service for an order when a cart is checked out.
fn order_requests(
    stream: &StreamId,
    cart: &Cart,
    events: &[(CartEvent, Metadata)],
) -> Vec<OutboxMessage> {
    let mut messages = Vec::new();
    for (event, metadata) in events {
        if let CartEvent::CheckedOut { total_cents } = event {
            let payload = json!({
                "cart": stream.as_str(),
                "customer": cart.customer,
                "totalCents": total_cents,
            });
            messages.push(
                OutboxMessage::new("OrderRequested", cart.customer.as_str(), payload)
                    .with_topic("order-requests")
                    .with_source(Cart::TYPE, stream.as_str())
                    .caused_by(metadata),
            );
        }
    }
    messages
}

// Steps 5 to 11, in the page's order, on one store.

use std::time::Duration;

use es_core::{
    EventRegistry, EventStore, LogFilter, OutboxSource, Position, RecordedEvent, SnapshotPolicy,
    SnapshotStore, StreamRead, SubscriptionItem, Version,
};
use futures::{StreamExt, TryStreamExt};

#[tokio::test]
async fn the_guide_runs_on_the_in_memory_store() -> Result<(), Box<dyn std::error::Error>> {
    // Step 5: run commands.
    let store = MemoryEventStore::new();
    let carts = Repository::<Cart, _>::new(store.clone());

    let id = StreamId::for_aggregate(Cart::TYPE, "c-1001")?; // "cart-c-1001"
    let context = CommandContext::new().with_actor("customer-7");

    let open = CartCommand::Open {
        customer: "customer-7".into(),
    };
    carts.execute(&id, &open, &context).await?;
    let add = CartCommand::AddItem {
        sku: "mug".into(),
        quantity: 2,
        unit_price_cents: 1250,
    };
    let done = carts.execute(&id, &add, &context).await?;
    assert_eq!(done.version, Version::new(2));
    assert_eq!(done.state.total_cents(), 2500);

    let outcome = carts.execute(&id, &CartCommand::CheckOut, &context).await;
    assert!(matches!(
        &outcome,
        Err(RepositoryError::Rejected(CartError::NoShippingAddress))
    ));
    assert_eq!(status_of(&outcome), 422);
    assert_eq!(status_of(&Ok(done)), 200);
    // A rejected command wrote nothing.
    assert_eq!(store.stream_version(&id).await?, Version::new(2));
    // A command that decides nothing writes nothing either.
    let same = CartCommand::ChangeQuantity {
        sku: "mug".into(),
        quantity: 2,
    };
    let unchanged = carts.execute(&id, &same, &context).await?;
    assert!(unchanged.events.is_empty());
    assert_eq!(unchanged.version, Version::new(2));

    // Step 9: retries, snapshots and the outbox together.
    let carts = Repository::<Cart, _>::new(store.clone())
        .with_conflict_retries(3)
        .with_snapshots(SnapshotPolicy::EveryNEvents(5))
        .with_outbox(order_requests);

    let address = CartCommand::SetShippingAddress {
        address: "1 Main St, Springfield".into(),
    };
    let coupon = CartCommand::ApplyCoupon {
        code: "SPRING10".into(),
        percent_off: 10,
    };
    let tea = CartCommand::AddItem {
        sku: "tea".into(),
        quantity: 1,
        unit_price_cents: 500,
    };
    for command in [address, coupon, tea] {
        carts.execute(&id, &command, &context).await?;
    }
    let snapshot = store
        .load_snapshot(&id)
        .await?
        .expect("a snapshot at version 5");
    assert_eq!(snapshot.version, Version::new(5));
    assert_eq!(snapshot.snapshot_version, Cart::SNAPSHOT_VERSION);

    let checked_out = carts.execute(&id, &CartCommand::CheckOut, &context).await?;
    assert_eq!(
        checked_out.events,
        [CartEvent::CheckedOut { total_cents: 2700 }]
    );
    assert_eq!(checked_out.version, Version::new(6));

    let outbox = store.read_outbox(Position::START, 10).await?;
    assert_eq!(outbox.messages.len(), 1);
    let message = &outbox.messages[0].message;
    assert_eq!(message.message_type, "OrderRequested");
    assert_eq!(message.partition_key, "customer-7");
    assert_eq!(message.topic.as_deref(), Some("order-requests"));
    assert_eq!(message.source_id.as_deref(), Some(id.as_str()));
    assert_eq!(message.correlation_id, Some(context.correlation_id));
    assert_eq!(message.payload["totalCents"], 2700);

    // Step 10: read it back.
    let loaded = carts.load(&id).await?;
    assert_eq!(loaded.version, Version::new(6));
    assert_eq!(loaded.state.status, CartStatus::CheckedOut);
    // Loading from the snapshot gives what replaying every event gives.
    let replayed = Repository::<Cart, _>::new(store.clone()).load(&id).await?;
    assert_eq!(loaded, replayed);

    let registry = EventRegistry::new();
    let mut history = Vec::new();
    let mut events = store.read_stream(&id, StreamRead::forward());
    while let Some(recorded) = events.try_next().await? {
        let event: CartEvent = recorded.decode(&registry)?;
        history.push((recorded.version, event));
    }
    assert_eq!(history.len(), 6);
    assert_eq!(history[0], (Version::new(1), opened()));
    assert_eq!(
        history[5],
        (Version::new(6), CartEvent::CheckedOut { total_cents: 2700 })
    );
    let tail = StreamRead::backward().limit(1);
    let last: Vec<RecordedEvent> = store.read_stream(&id, tail).try_collect().await?;
    assert_eq!(last[0].event_type, "CartCheckedOut");
    assert_eq!(last[0].metadata.actor.as_deref(), Some("customer-7"));

    // Step 11: follow the global log.
    let mut checkpoint = Position::START; // in a service: load the saved checkpoint
    let mut revenue_cents = 0;
    let filter = LogFilter::all().stream_types([Cart::TYPE]);
    let mut log = store.subscribe(checkpoint, filter);
    while let Some(item) = log.next().await {
        match item {
            Ok(SubscriptionItem::Event(recorded)) => {
                if let CartEvent::CheckedOut { total_cents } = recorded.decode(&registry)? {
                    revenue_cents += total_cents;
                }
            }
            Ok(SubscriptionItem::Checkpoint {
                position,
                caught_up,
            }) => {
                checkpoint = position; // save it with what you built from the events
                if caught_up {
                    break; // a service would keep reading: new events follow as they commit
                }
            }
            // The subscription retries by itself; a read model may log and carry on.
            Err(error) => eprintln!("reading the log failed, retrying: {error}"),
        }
    }
    assert_eq!(revenue_cents, 2700);
    assert_eq!(checkpoint, checked_out.positions[0]);

    // Live: the same subscription sees events committed after it caught up.
    let other = StreamId::for_aggregate(Cart::TYPE, "c-1002")?;
    let context = CommandContext::new().with_actor("customer-8");
    let open = CartCommand::Open {
        customer: "customer-8".into(),
    };
    let opened_live = carts.execute(&other, &open, &context).await?;
    let next = tokio::time::timeout(Duration::from_secs(5), log.next())
        .await?
        .expect("a subscription never ends")?;
    let SubscriptionItem::Event(recorded) = next else {
        panic!("expected the live event, got {next:?}");
    };
    assert_eq!(recorded.stream_id, other);
    assert_eq!(recorded.position, opened_live.positions[0]);
    assert!(recorded.position > checkpoint);
    Ok(())
}

#[test]
fn outcomes_map_to_http_statuses() {
    use es_core::{Conflict, ExpectedVersion, StoreError};

    let conflict = Conflict {
        stream: StreamId::new("cart-c-1001").unwrap(),
        expected: ExpectedVersion::Exact(Version::new(2)),
        actual: Version::new(3),
    };
    assert_eq!(status_of(&Err(RepositoryError::Conflict(conflict))), 409);
    let down = StoreError::backend("connection reset");
    assert_eq!(status_of(&Err(RepositoryError::Store(down))), 503);
}

#[tokio::test]
async fn a_store_failure_is_not_a_rejection() {
    use es_core::StoreError;

    // This store refuses any event over 200 bytes of JSON.
    let carts = Repository::<Cart, _>::new(MemoryEventStore::new().with_max_event_size(200));
    let id = StreamId::for_aggregate(Cart::TYPE, "c-1003").unwrap();
    let context = CommandContext::new();
    let open = CartCommand::Open {
        customer: "x".repeat(500),
    };
    let outcome = carts.execute(&id, &open, &context).await;
    assert!(
        matches!(
            &outcome,
            Err(RepositoryError::Store(StoreError::PayloadTooLarge { .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(status_of(&outcome), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_conflict_and_retries_resolve_them() {
    const WRITERS: u32 = 8;
    let id = StreamId::for_aggregate(Cart::TYPE, "c-2001").unwrap();
    let context = CommandContext::new();
    let open = CartCommand::Open {
        customer: "customer-9".into(),
    };

    // Without retries a conflicting command fails and writes nothing.
    let store = MemoryEventStore::new();
    let carts = std::sync::Arc::new(Repository::<Cart, _>::new(store.clone()));
    carts.execute(&id, &open, &context).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let (carts, id, context) = (carts.clone(), id.clone(), context.clone());
        tasks.push(tokio::spawn(async move {
            let add = CartCommand::AddItem {
                sku: format!("sku-{n}"),
                quantity: 1,
                unit_price_cents: 100,
            };
            carts.execute(&id, &add, &context).await
        }));
    }
    let mut succeeded = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => succeeded += 1,
            Err(RepositoryError::Conflict(conflict)) => assert_eq!(conflict.stream, id),
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(
        store.stream_version(&id).await.unwrap().get(),
        1 + succeeded
    );

    // Each conflict means another writer succeeded, so WRITERS - 1 retries always suffice.
    let store = MemoryEventStore::new();
    let carts = Repository::<Cart, _>::new(store.clone()).with_conflict_retries(WRITERS - 1);
    let carts = std::sync::Arc::new(carts);
    carts.execute(&id, &open, &context).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..WRITERS {
        let (carts, id, context) = (carts.clone(), id.clone(), context.clone());
        tasks.push(tokio::spawn(async move {
            let add = CartCommand::AddItem {
                sku: format!("sku-{n}"),
                quantity: 1,
                unit_price_cents: 100,
            };
            carts.execute(&id, &add, &context).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let cart = carts.load(&id).await.unwrap();
    assert_eq!(cart.version.get(), 1 + u64::from(WRITERS));
    assert_eq!(cart.state.lines.len(), WRITERS as usize);
}

// Step 12: a message handled as a command.

use es_core::{
    AggregateHandler, Delivery, HandlerRegistry, InvalidStreamId, MessageHandler, MessageType,
    encode_message,
};

/// Another service announces that a customer closed their account.
#[derive(Debug, Serialize, Deserialize, MessageType)]
#[serde(rename = "CustomerAccountClosed")]
#[message(key = "cart_id")]
struct CustomerAccountClosed {
    cart_id: u32,
}

/// Abandons the closed account's cart, exactly once per message.
struct AbandonClosedCarts;

impl AggregateHandler for AbandonClosedCarts {
    type Message = CustomerAccountClosed;
    type Aggregate = Cart;

    fn stream(&self, closed: &CustomerAccountClosed) -> Result<StreamId, InvalidStreamId> {
        StreamId::for_aggregate(Cart::TYPE, closed.cart_id)
    }

    fn command(&self, _: &CustomerAccountClosed) -> CartCommand {
        CartCommand::Abandon
    }
}

#[tokio::test]
async fn a_message_abandons_its_cart_exactly_once() -> Result<(), Box<dyn std::error::Error>> {
    let store = MemoryEventStore::new();
    let carts = Repository::<Cart, _>::new(store.clone());
    let id = StreamId::for_aggregate(Cart::TYPE, 7)?;
    let open = CartCommand::Open {
        customer: "ada".into(),
    };
    carts.execute(&id, &open, &CommandContext::new()).await?;

    let handlers = HandlerRegistry::new()
        .on::<CustomerAccountClosed>(carts.message_handler("carts", AbandonClosedCarts));
    let message = encode_message(&CustomerAccountClosed { cart_id: 7 })?;
    let delivery = Delivery {
        topic: "customers".into(),
        partition: 0,
        offset: 0,
        attempt: 1,
        message,
    };
    handlers.handle(&delivery).await?;
    handlers.handle(&delivery).await?; // delivered again: no effect
    assert_eq!(carts.load(&id).await?.version.get(), 2);

    // Another such message finds the cart abandoned: the cart refuses, and the refusal is a
    // decision, acknowledged (not retried, not dead-lettered).
    let message = encode_message(&CustomerAccountClosed { cart_id: 7 })?;
    let later = Delivery {
        offset: 1,
        message,
        ..delivery
    };
    handlers.handle(&later).await?;
    assert_eq!(carts.load(&id).await?.version.get(), 2);
    Ok(())
}
