//! The reference ecommerce backend.
//!
//! An ecommerce backend (customers, catalog, inventory, quotes, orders, payments, shipments,
//! identity and push notifications) whose ordering workflow runs on `es-core`, `es-postgres`,
//! `es-kafka` and `es-saga`. With nothing configured it runs embedded on the in-memory
//! backend; with `DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS` it runs on PostgreSQL and Kafka.

use clap::Parser;

/// Command-line interface of the ecommerce example.
#[derive(Debug, Parser)]
#[command(name = "ecommerce", version, about = "The reference ecommerce backend")]
struct Cli {}

const PLAN: &str = "\
ecommerce: the reference app of this event-sourcing framework (not built yet).

It will serve an ecommerce backend on :5000 (public API under /api/v2) and :5100 (internal,
loopback): identity and tokens, customers, catalog, inventory, quotes, orders, payments,
shipments and push notifications of order status. Orders run through a saga with
compensation and deadlines; integration messages travel through a transactional outbox.

With nothing configured it will run embedded on the in-memory store and bus, keeping nothing
across restarts; with DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS set it will run on PostgreSQL
and Kafka.";

fn main() {
    let Cli {} = Cli::parse();
    println!("{PLAN}");
}
