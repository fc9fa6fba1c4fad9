//! Kafka backend for `es-core`.
//!
//! This crate will hold the Kafka side of the framework on `rdkafka`: the message envelope
//! (identity, type, schema version, correlation, causation and trace context as headers), the
//! idempotent `Publisher` the outbox relay sends through, a topic-creation helper, and the
//! at-least-once consumer with in-place retries, dead-letter topics and effectively-once
//! handlers.
//!
//! Today it offers [`bootstrap_servers`], which reads `KAFKA_BOOTSTRAP_SERVERS` and reports
//! clearly when it is missing.

mod config;

pub use config::{BOOTSTRAP_SERVERS_ENV, ConfigError, bootstrap_servers};
