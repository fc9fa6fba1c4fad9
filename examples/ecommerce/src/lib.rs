//! The reference ecommerce backend as a library: the bounded contexts, their HTTP routes and
//! the wiring that runs them embedded (in memory) or on PostgreSQL and Kafka.
//!
//! The `ecommerce` binary is a thin command line over this crate; tests drive the same code.

pub mod money;
