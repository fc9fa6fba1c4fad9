#![doc = include_str!("../README.md")]

mod domain_event;
mod message_type;
mod own_attrs;
mod serde_attrs;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `es_core::DomainEvent` for an enum of events, in serde's default (externally tagged)
/// representation.
///
/// Each variant is one persisted event type, named by its `#[serde(rename = "...")]`, which is
/// required: persisted names are never derived from Rust identifiers. Its schema version is 1,
/// or the one given by `#[event(version = N)]`.
///
/// ```
/// use es_core::{DomainEvent, EventType};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, DomainEvent)]
/// enum CounterEvent {
///     #[serde(rename = "CounterIncremented")]
///     #[event(version = 2)]
///     Incremented { by: u32 },
///     #[serde(rename = "CounterReset")]
///     Reset,
/// }
///
/// assert_eq!(
///     CounterEvent::EVENT_TYPES,
///     [EventType::new("CounterIncremented").version(2), EventType::new("CounterReset")],
/// );
/// assert_eq!(CounterEvent::Reset.event_type(), "CounterReset");
/// ```
///
/// It does not compile when a variant has no `rename` (or `rename(serialize = "...",
/// deserialize = "...")` with two names), when two variants share a name, when the enum has
/// `#[serde(tag, content, untagged or rename_all)]`, or generic parameters.
#[proc_macro_derive(DomainEvent, attributes(event))]
pub fn derive_domain_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    domain_event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `es_core::MessageType` for a struct or an enum.
///
/// `MESSAGE_TYPE` is the type's `#[serde(rename = "...")]`, which is required: persisted
/// names are never derived from Rust identifiers. `#[message(...)]` sets the rest:
///
/// - `version = N`: `SCHEMA_VERSION` (1 when absent);
/// - `key = "field"` (structs with named fields): `partition_key()` is that field's
///   `to_string()`; when absent it is empty, and the sender chooses the key.
///
/// ```
/// use es_core::MessageType;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, MessageType)]
/// #[serde(rename = "OrderPlaced", rename_all = "camelCase")]
/// #[message(version = 2, key = "order_id")]
/// struct OrderPlaced {
///     order_id: u64,
/// }
///
/// assert_eq!((OrderPlaced::MESSAGE_TYPE, OrderPlaced::SCHEMA_VERSION), ("OrderPlaced", 2));
/// assert_eq!(OrderPlaced { order_id: 7 }.partition_key(), "7");
/// ```
#[proc_macro_derive(MessageType, attributes(message))]
pub fn derive_message_type(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    message_type::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
