//! The HTTP API, end to end through the routers, embedded and on PostgreSQL; and the same
//! scenarios through the gateway against the split services (`split`).

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

/// The demo's load generator, shared with the `ecommerce` binary (it is not part of the
/// library's API).
#[path = "../../src/demo/mod.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)]
mod demo;

mod support;

#[path = "../kafka/broker.rs"]
#[allow(dead_code)]
mod broker;
#[path = "../common/cluster.rs"]
#[allow(dead_code)]
mod cluster;
mod split;
#[allow(unused_imports)]
use support::test_lock;

mod auth;
mod catalog;
mod customers;
mod gateway;
mod identity;
mod inventory;
mod keys;
mod load;
mod notifications;
mod openapi;
mod privacy;
mod quotes;
mod remote;
mod server;
mod workflow;
