//! The ordering workflow: the order saga, which moves each order through stock, payment and
//! shipment by the contexts' integration messages, compensating on failure.

pub mod saga;
