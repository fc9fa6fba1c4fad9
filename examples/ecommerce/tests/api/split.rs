//! The API suite through the gateway against the split services: every scenario the
//! embedded and PostgreSQL runs hold (every route, the auth matrix, ownership, bad input,
//! notifications, the workflow), on the eight services on PostgreSQL and a broker of the
//! test's own, one scenario after another on one cluster (starting eight services per
//! scenario would take minutes).

use std::sync::Arc;
use std::time::Instant;

use ecommerce::app::AppConfig;

use crate::cluster::Cluster;
use crate::support::{Scenario, TestApp, test_lock};

/// Every scenario of the suite. Inventory's comes last: it reserves stock over the internal
/// route for orders no saga knows, and the saga retries those reservations' events (a
/// continuation may arrive before its start) for about 30 s before dead-lettering them, with
/// their partitions waiting behind them; an order of a later scenario on one of those
/// partitions would wait as long.
fn scenarios() -> Vec<Scenario> {
    [
        crate::auth::split::SCENARIOS,
        crate::catalog::split::SCENARIOS,
        crate::customers::split::SCENARIOS,
        crate::identity::split::SCENARIOS,
        crate::notifications::split::SCENARIOS,
        crate::privacy::split::SCENARIOS,
        crate::quotes::split::SCENARIOS,
        crate::workflow::split::SCENARIOS,
        crate::inventory::split::SCENARIOS,
    ]
    .concat()
}

/// Every sign-in comes from 127.0.0.1 through the gateway: the suite signs in more
/// customers a minute than one address may (the per-account limits still hold).
fn tuned(config: &mut AppConfig) {
    config.identity.sign_in.per_address_per_minute = 100_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_the_api_suite_passes_through_the_gateway_against_the_split_services() {
    test_lock::alone();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!("DATABASE_URL is not set: run `scripts/test`, or start PostgreSQL and export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test")
    });
    let cluster = Arc::new(Cluster::start_tuned(&url, &[], tuned).await);
    let scenarios = scenarios();
    assert!(scenarios.len() > 30, "{} scenarios", scenarios.len());
    // `SPLIT_SCENARIOS=part,part` runs only the scenarios whose name contains a part.
    let only = std::env::var("SPLIT_SCENARIOS").unwrap_or_default();
    let chosen = |name: &str| only.split(',').any(|part| name.contains(part));
    for (name, scenario) in scenarios.iter().filter(|(name, _)| chosen(name)) {
        let started = Instant::now();
        scenario(TestApp::split(cluster.clone())).await;
        eprintln!("{name}: passed in {:.1} s", started.elapsed().as_secs_f64());
    }
    let cluster = Arc::into_inner(cluster).expect("no scenario keeps the cluster");
    cluster.stop().await;
}
