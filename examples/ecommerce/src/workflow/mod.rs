//! The ordering workflow: the order saga and its messages' plumbing (relays from every outbox
//! to the bus, a consumer per context, the deadline scheduler).

pub mod bus;
pub mod runtime;
pub mod saga;
