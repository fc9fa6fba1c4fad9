//! The integration messages between contexts: events each context publishes on its own topic
//! (`orders`, `inventory`, `payments`, `shipments`) and the order saga's commands on each
//! receiving context's command topic. Every message is keyed by its order id, so all of one
//! order's messages stay in order on one partition.

use es_core::OutboxMessage;
use es_core::privacy::Personal;
use es_saga::MessageType;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Topics, one per producing context, and one command topic per receiving context.
pub mod topics {
    /// Order events (the saga starts on `OrderPlaced`).
    pub const ORDERS: &str = "orders";
    /// Stock reservations.
    pub const INVENTORY: &str = "inventory";
    /// Payments.
    pub const PAYMENTS: &str = "payments";
    /// Shipments.
    pub const SHIPMENTS: &str = "shipments";
    /// Commands for orders.
    pub const ORDER_COMMANDS: &str = "orders-commands";
    /// Commands for inventory.
    pub const INVENTORY_COMMANDS: &str = "inventory-commands";
    /// Commands for payments.
    pub const PAYMENT_COMMANDS: &str = "payments-commands";
    /// Commands for shipments.
    pub const SHIPMENT_COMMANDS: &str = "shipments-commands";
    /// Every topic.
    pub const ALL: [&str; 8] = [
        ORDERS,
        INVENTORY,
        PAYMENTS,
        SHIPMENTS,
        ORDER_COMMANDS,
        INVENTORY_COMMANDS,
        PAYMENT_COMMANDS,
        SHIPMENT_COMMANDS,
    ];
}

/// A typed message with its topic.
pub trait Message: MessageType + Serialize + DeserializeOwned {
    /// The topic it travels on.
    const TOPIC: &'static str;

    /// The order it is about (its partition key).
    fn order_id(&self) -> Uuid;

    /// As an outbox message, keyed by the order id.
    ///
    /// # Errors
    /// The payload does not serialize (never `null` on the wire).
    fn to_message(&self) -> Result<OutboxMessage, serde_json::Error> {
        let payload = serde_json::to_value(self)?;
        Ok(
            OutboxMessage::new(Self::MESSAGE_TYPE, self.order_id().to_string(), payload)
                .with_schema_version(Self::SCHEMA_VERSION)
                .with_topic(Self::TOPIC),
        )
    }
}

/// A priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// The product.
    pub product_id: Uuid,
    /// Its name when ordered.
    pub product_name: String,
    /// Unit price in the order's currency.
    #[serde(with = "crate::money::amount")]
    pub unit_price: Decimal,
    /// Quantity (> 0).
    pub quantity: u32,
}

/// Where an order goes: the customer's name and shipping address when it was placed. It is
/// the customer's personal data, carried only as a [`Personal`] value: encrypted in every
/// event, saga state and message, and unreadable once the customer is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShipTo {
    /// The recipient's name.
    pub name: String,
    /// The shipping address.
    pub address: String,
}

/// The total of `lines`.
pub fn total(lines: &[Line]) -> Decimal {
    lines
        .iter()
        .map(|l| l.unit_price * Decimal::from(l.quantity))
        .sum()
}

macro_rules! messages {
    ($($(#[$doc:meta])* $name:ident = $ty:literal on $topic:ident { $($(#[$fdoc:meta])* $field:ident : $fty:ty),* $(,)? })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, MessageType)]
        #[serde(rename = $ty, rename_all = "camelCase")]
        pub struct $name {
            /// The order.
            pub order_id: Uuid,
            $($(#[$fdoc])* pub $field: $fty,)*
        }
        impl Message for $name {
            const TOPIC: &'static str = topics::$topic;
            fn order_id(&self) -> Uuid {
                self.order_id
            }
        }
    )*};
}

messages! {
    /// An order was placed: starts the saga.
    OrderPlaced = "OrderPlaced" on ORDERS {
        /// The customer.
        customer_id: Uuid,
        /// The confirmed quote.
        quote_id: Uuid,
        /// Where it goes (absent for orders placed before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ship_to: Option<Personal<ShipTo>>,
    }
    /// The order's lines and total were priced.
    OrderProcessed = "OrderProcessed" on ORDERS {
        /// The customer.
        customer_id: Uuid,
        /// The lines.
        lines: Vec<Line>,
        /// The total.
        #[serde(with = "crate::money::amount")]
        total: Decimal,
        /// The currency code.
        currency_code: String,
    }
    /// The customer asked to cancel.
    CancellationRequested = "CancellationRequested" on ORDERS {}
    /// Status changes the saga does not act on (published for other subscribers).
    OrderStatusChanged = "OrderStatusChanged" on ORDERS {
        /// The customer.
        customer_id: Uuid,
        /// The new status.
        status: String,
        /// Why it was cancelled, for `Cancelled`.
        reason: Option<String>,
    }
    /// Stock for every line is reserved.
    StockReserved = "StockReserved" on INVENTORY {}
    /// Some line could not be reserved: nothing is.
    StockUnavailable = "StockUnavailable" on INVENTORY {
        /// The products short of stock.
        product_ids: Vec<Uuid>,
    }
    /// The order's reservation was released.
    StockReleased = "StockReleased" on INVENTORY {}
    /// The payment went through.
    PaymentCompleted = "PaymentCompleted" on PAYMENTS {
        /// The payment.
        payment_id: Uuid,
    }
    /// The payment did not go through.
    PaymentFailed = "PaymentFailed" on PAYMENTS {
        /// The payment.
        payment_id: Uuid,
        /// `CreditLimitReached` or `PaymentFailed`.
        reason: String,
    }
    /// The payment was refunded.
    PaymentRefunded = "PaymentRefunded" on PAYMENTS {
        /// The payment.
        payment_id: Uuid,
    }
    /// The package left.
    PackageShipped = "PackageShipped" on SHIPMENTS {
        /// The shipment.
        shipment_id: Uuid,
    }
    /// The shipment failed.
    ShipmentFailed = "ShipmentFailed" on SHIPMENTS {
        /// The shipment.
        shipment_id: Uuid,
    }
    /// A pending shipment was cancelled.
    ShipmentCancelled = "ShipmentCancelled" on SHIPMENTS {
        /// The shipment.
        shipment_id: Uuid,
    }

    /// Price the order's lines and total.
    ProcessOrder = "ProcessOrder" on ORDER_COMMANDS {}
    /// Record the completed payment on the order.
    RecordPayment = "RecordPayment" on ORDER_COMMANDS {
        /// The payment.
        payment_id: Uuid,
    }
    /// Record the shipment on the order.
    RecordShipment = "RecordShipment" on ORDER_COMMANDS {
        /// The shipment.
        shipment_id: Uuid,
    }
    /// Cancel the order.
    CancelOrder = "CancelOrder" on ORDER_COMMANDS {
        /// One of the cancellation reasons.
        reason: String,
    }
    /// Reserve stock for every line, or none.
    ReserveStock = "ReserveStock" on INVENTORY_COMMANDS {
        /// What to reserve.
        lines: Vec<Line>,
    }
    /// Release the order's reservation.
    ReleaseStock = "ReleaseStock" on INVENTORY_COMMANDS {
        /// The products reserved (their stock units are locked first; the reservation itself
        /// says what is given back).
        #[serde(default)]
        product_ids: Vec<Uuid>,
    }
    /// Charge the customer's credit.
    RequestPayment = "RequestPayment" on PAYMENT_COMMANDS {
        /// The customer.
        customer_id: Uuid,
        /// The amount.
        #[serde(with = "crate::money::amount")]
        amount: Decimal,
        /// Its currency code.
        currency_code: String,
    }
    /// Refund the order's payment, if it completed.
    RefundPayment = "RefundPayment" on PAYMENT_COMMANDS {
        /// The customer whose credit account holds the payment.
        customer_id: Uuid,
    }
    /// Ship the order.
    RequestShipment = "RequestShipment" on SHIPMENT_COMMANDS {
        /// The customer.
        customer_id: Uuid,
        /// The order's total (the demo failure rule looks at its cents).
        #[serde(with = "crate::money::amount")]
        total: Decimal,
        /// Where it goes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ship_to: Option<Personal<ShipTo>>,
    }
    /// Cancel the order's shipment if it has not left.
    CancelShipment = "CancelShipment" on SHIPMENT_COMMANDS {}
}

/// Why an order was cancelled (`CancelOrder::reason`, `OrderCancelled`).
pub mod reasons {
    /// Stock was short.
    pub const OUT_OF_STOCK: &str = "OutOfStock";
    /// The customer's credit could not cover it.
    pub const CREDIT_LIMIT_REACHED: &str = "CreditLimitReached";
    /// The payment failed.
    pub const PAYMENT_FAILED: &str = "PaymentFailed";
    /// The shipment failed.
    pub const SHIPMENT_FAILED: &str = "ShipmentFailed";
    /// The customer cancelled.
    pub const CANCELLED_BY_CUSTOMER: &str = "CancelledByCustomer";
    /// A step got no answer in time.
    pub const PROCESSING_ERROR: &str = "ProcessingError";
    /// Every reason.
    pub const ALL: [&str; 6] = [
        OUT_OF_STOCK,
        CREDIT_LIMIT_REACHED,
        PAYMENT_FAILED,
        SHIPMENT_FAILED,
        CANCELLED_BY_CUSTOMER,
        PROCESSING_ERROR,
    ];
}
