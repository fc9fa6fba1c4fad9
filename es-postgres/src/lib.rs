//! PostgreSQL backend for `es-core`.
//!
//! This crate will hold the PostgreSQL implementations of the `es-core` ports on
//! `tokio-postgres` and `deadpool-postgres`: numbered migrations applied by an explicit
//! `migrate()`, the one-round-trip append with optimistic concurrency, the gap-safe global log
//! (read through the `xid8` fence), subscriptions, snapshots, the outbox and inbox tables, saga
//! state and deadline stores, the leader-election helper and the async projection daemon.
//!
//! Today it offers [`connect`], which reaches the database named by `DATABASE_URL` and reports
//! clearly when it cannot.

mod connect;

pub use connect::{ConnectError, DATABASE_URL_ENV, connect, database_url};
