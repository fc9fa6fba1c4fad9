//! The ordering workflow: the order saga, its messages' plumbing (relays from every outbox to
//! the bus, a consumer per context), the deadline scheduler, and checks of the spec's
//! invariants.

pub mod bus;
pub mod invariants;
pub mod runtime;
pub mod saga;
pub mod stores;
