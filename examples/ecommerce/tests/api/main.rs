//! The HTTP API, end to end through the routers, embedded and on PostgreSQL.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

mod auth;
mod catalog;
mod customers;
mod identity;
mod inventory;
mod load;
mod notifications;
mod openapi;
mod quotes;
mod workflow;
