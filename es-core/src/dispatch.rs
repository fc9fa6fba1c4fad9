//! Typed dispatch of integration messages by message type, with upcasting by schema version.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::message_type::MessageType;
use crate::messaging::{Delivery, HandlerError, MessageHandler};
use crate::privacy::{Privacy, PrivacyError};
use crate::registry::EventRegistry;

/// A handler of one message type, given the payload deserialized as `Self::Message`.
#[async_trait::async_trait]
pub trait TypedHandler: Send + Sync + 'static {
    /// The payload's Rust type, at the current schema version.
    type Message: DeserializeOwned + Send;

    /// Handles one message.
    ///
    /// # Errors
    /// [`HandlerError::Transient`] to have it retried, [`HandlerError::Permanent`] to have it
    /// dead-lettered.
    async fn handle(&self, message: Self::Message, delivery: &Delivery)
    -> Result<(), HandlerError>;
}

/// Adapts a [`TypedHandler`] into a [`MessageHandler`]: a payload that does not deserialize
/// is a [`HandlerError::Permanent`] failure.
pub struct Typed<H>(pub H);

impl<H> fmt::Debug for Typed<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Typed")
    }
}

#[async_trait::async_trait]
impl<H: TypedHandler> MessageHandler for Typed<H> {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let message = serde_json::from_value(delivery.message.payload.clone()).map_err(|e| {
            HandlerError::permanent(format!(
                "malformed {} payload: {e}",
                delivery.message.message_type
            ))
        })?;
        self.0.handle(message, delivery).await
    }
}

struct Route {
    schema_version: u32,
    handler: Arc<dyn MessageHandler>,
}

/// A [`MessageHandler`] that dispatches each message to the handler registered for its
/// message type, after upcasting its payload to the registered schema version with an
/// [`EventRegistry`]'s upcasters. An unknown type, or a payload that cannot be upcast, is a
/// [`HandlerError::Permanent`] failure (dead-lettered by a consumer loop); the types a topic
/// carries that this consumer has no business with are named with
/// [`ignore`](Self::ignore), and acknowledged without being handled.
///
/// ```
/// use es_core::{Delivery, EventRegistry, HandlerError, HandlerRegistry, MessageHandler, MessageType, OutboxMessage, Typed, TypedHandler};
///
/// #[derive(serde::Deserialize)]
/// struct OrderPlaced { order_id: String }
///
/// impl MessageType for OrderPlaced {
///     const MESSAGE_TYPE: &'static str = "OrderPlaced";
///     const SCHEMA_VERSION: u32 = 2;
/// }
///
/// struct Billing;
///
/// #[async_trait::async_trait]
/// impl TypedHandler for Billing {
///     type Message = OrderPlaced;
///     async fn handle(&self, placed: OrderPlaced, _: &Delivery) -> Result<(), HandlerError> {
///         assert_eq!(placed.order_id, "order-7");
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut upcasters = EventRegistry::new();
/// // Version 1 called the field `id`.
/// upcasters.upcaster("OrderPlaced", 1, |data| Ok(serde_json::json!({ "order_id": data["id"] })))?;
/// let registry = HandlerRegistry::new()
///     .with_upcasters(upcasters)
///     .on::<OrderPlaced>(Typed(Billing));
///
/// let message = OutboxMessage::new("OrderPlaced", "order-7", serde_json::json!({ "id": "order-7" }));
/// let delivery = Delivery { topic: "orders".into(), partition: 0, offset: 0, attempt: 1, message };
/// registry.handle(&delivery).await?;
///
/// let mut unknown = delivery.clone();
/// unknown.message.message_type = "OrderShipped".into();
/// assert!(!registry.handle(&unknown).await.unwrap_err().is_transient());
/// // A type named as ignored is acknowledged without a handler.
/// assert!(registry.ignore_type("OrderShipped").handle(&unknown).await.is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct HandlerRegistry {
    routes: HashMap<String, Route>,
    ignored: BTreeSet<String>,
    upcasters: EventRegistry,
    privacy: Option<Privacy>,
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.routes.keys().collect();
        types.sort();
        f.debug_struct("HandlerRegistry")
            .field("types", &types)
            .field("ignored", &self.ignored)
            .field("upcasters", &self.upcasters)
            .field("privacy", &self.privacy.is_some())
            .finish()
    }
}

impl HandlerRegistry {
    /// A registry with no handlers and no upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upcasts payloads with `upcasters` (see [`EventRegistry::upcaster`]).
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: EventRegistry) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Decrypts the [`Personal`](crate::privacy::Personal) values of each payload with
    /// `privacy`'s key store before handing it on (a forgotten subject's values arrive as
    /// forgotten). A key store that fails is a transient failure (retried); a value that does
    /// not open with its key, a permanent one.
    #[must_use]
    pub fn with_privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = Some(privacy);
        self
    }

    /// Sends messages of type `M` to `handler`, their payloads brought to `M`'s schema version
    /// first. Registering a type again replaces its handler.
    #[must_use]
    pub fn on<M: MessageType>(self, handler: impl MessageHandler + 'static) -> Self {
        self.on_type(M::MESSAGE_TYPE, M::SCHEMA_VERSION, handler)
    }

    /// Sends messages of `message_type` to `handler`, their payloads brought to
    /// `schema_version` first (for messages without a Rust type; prefer [`on`](Self::on)).
    /// Registering a type again replaces its handler.
    #[must_use]
    pub fn on_type(
        mut self,
        message_type: impl Into<String>,
        schema_version: u32,
        handler: impl MessageHandler + 'static,
    ) -> Self {
        self.routes.insert(
            message_type.into(),
            Route {
                schema_version,
                handler: Arc::new(handler),
            },
        );
        self
    }

    /// Acknowledges messages of type `M` without handling them: the topic carries them, and
    /// this consumer has no business with them (an unknown type is dead-lettered instead).
    /// Registering a handler for the type later takes precedence.
    #[must_use]
    pub fn ignore<M: MessageType>(self) -> Self {
        self.ignore_type(M::MESSAGE_TYPE)
    }

    /// Acknowledges messages of `message_type` without handling them (for messages without
    /// a Rust type; prefer [`ignore`](Self::ignore)).
    #[must_use]
    pub fn ignore_type(mut self, message_type: impl Into<String>) -> Self {
        self.ignored.insert(message_type.into());
        self
    }

    /// Whether a handler is registered for `message_type`.
    pub fn handles(&self, message_type: &str) -> bool {
        self.routes.contains_key(message_type)
    }
}

#[async_trait::async_trait]
impl MessageHandler for HandlerRegistry {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandlerError> {
        let message = &delivery.message;
        let Some(route) = self.routes.get(&message.message_type) else {
            if self.ignored.contains(&message.message_type) {
                return Ok(());
            }
            return Err(HandlerError::permanent(format!(
                "unknown message type {:?}",
                message.message_type
            )));
        };
        let revealed;
        let (delivery, message) = match &self.privacy {
            Some(privacy) if crate::privacy::holds_sealed(&message.payload) => {
                let mut copy = delivery.clone();
                privacy
                    .reveal(&mut copy.message.payload)
                    .await
                    .map_err(|error| match error {
                        PrivacyError::Keys(keys) => HandlerError::transient(keys),
                        other => HandlerError::permanent(other),
                    })?;
                revealed = copy;
                (&revealed, &revealed.message)
            }
            _ => (delivery, message),
        };
        if message.schema_version == route.schema_version {
            return route.handler.handle(delivery).await;
        }
        let payload = self
            .upcasters
            .upcast(
                &message.message_type,
                message.schema_version,
                route.schema_version,
                message.payload.clone(),
            )
            .map_err(HandlerError::permanent)?;
        let mut upcast = delivery.clone();
        upcast.message.payload = payload;
        upcast.message.schema_version = route.schema_version;
        route.handler.handle(&upcast).await
    }
}
