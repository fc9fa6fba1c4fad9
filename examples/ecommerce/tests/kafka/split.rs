//! The shop split into its eight services (each an `App::start_service` on its own
//! listeners, schemas and consumer group, calling the others over HTTP with machine tokens)
//! behind the gateway, on PostgreSQL and a broker of the test's own: orders placed through
//! the gateway end as their kind says, and every invariant holds across the services.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use ecommerce::split::ServiceName;

use crate::cluster::Cluster;
use crate::demo::shop::{Listener, Remote, Shop};
use crate::demo::{DemoOptions, DemoReport, run};
use crate::{database_url, test_lock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_the_split_services_run_the_workflow_behind_the_gateway() {
    test_lock::alone();
    let cluster = Cluster::start(&database_url(), &[]).await;
    // The demo's orders through the gateway, each kind (shipped, out of stock, payment
    // failed, cancelled by the customer, shipment failed, over the credit limit) ending as
    // it should; its invariant check reads every service's internal status (the orders
    // service's checks them, reading inventory and payments over their internal routes).
    let shop = Arc::new(Remote::new(&cluster.gateway, &cluster.internal_urls()));
    let options = DemoOptions {
        customers: 6,
        orders: 24,
        concurrency: 3,
        settle: Duration::from_secs(30),
        progress: false,
        ..DemoOptions::default()
    };
    let report = run(shop, &options).await.unwrap();
    assert_eq!(report.outcomes.len(), 24);
    assert!(report.unexpected.is_empty(), "{:#?}", report.unexpected);
    let ended: BTreeMap<&str, usize> =
        report
            .outcomes
            .iter()
            .fold(BTreeMap::new(), |mut by, outcome| {
                *by.entry(outcome.status.as_str()).or_default() += 1;
                by
            });
    assert!(!ended.contains_key("missing"), "{ended:?}");
    assert!(
        ended.contains_key("Shipped") || ended.contains_key("Delivered"),
        "{ended:?}"
    );
    assert!(ended.contains_key("Cancelled"), "{ended:?}");
    let status = &report.status;
    assert!(status.invariants_checked);
    assert!(
        status.invariants_hold,
        "{:#?} {:#?}",
        status.violations, status.dead_letters
    );
    assert_eq!(status.orders, 24);
    // Every service's relays and consumers are in the combined status.
    for relay in ["orders", "inventory", "payments", "shipments"] {
        assert!(
            status.relays.iter().any(|r| r.name.starts_with(relay)),
            "{relay}: {:?}",
            status.relays
        );
    }
    assert!(report.passed());

    cluster.stop().await;
}

/// The demo's 100 orders through the gateway, 8 customers at a time, in the background.
fn hundred_orders(cluster: &Cluster) -> tokio::task::JoinHandle<Result<DemoReport, String>> {
    let shop = Arc::new(Remote::new(&cluster.gateway, &cluster.internal_urls()));
    tokio::spawn(async move {
        run(
            shop,
            &DemoOptions {
                orders: 100,
                customers: 10,
                concurrency: 8,
                settle: Duration::from_secs(120),
                progress: false,
                ..DemoOptions::default()
            },
        )
        .await
    })
}

/// Waits until the orders service knows at least `count` orders; returns how many of them
/// are not final yet.
async fn orders_placed(cluster: &Cluster, count: usize) -> usize {
    let books = cluster.app(ServiceName::Orders).books();
    let started = Instant::now();
    loop {
        let orders = books.orders().await.unwrap();
        if orders.len() >= count {
            return orders.iter().filter(|o| !o.status.is_terminal()).count();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "orders stopped coming ({} placed)",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The payments service is killed (`SIGKILL`) with orders in flight and started again: the
/// orders that need a payment wait, the gateway answers 503 for the payment routes
/// meanwhile, and afterwards every order ends as its kind says with every invariant (no
/// order charged twice, no stock lost) holding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_the_payments_service_killed_mid_flow_loses_and_doubles_nothing() {
    test_lock::alone();
    let mut cluster = Cluster::start(&database_url(), &[ServiceName::Payments]).await;
    let watcher = Remote::new(&cluster.gateway, &[]);
    let customer = crate::demo::register(&watcher, "watcher", 0, 1000)
        .await
        .unwrap();
    let payments_route = |shop: Remote, token: String| async move {
        shop.call(
            Listener::Public,
            Method::GET,
            "/api/v2/payments",
            Some(&token),
            None,
        )
        .await
        .unwrap()
    };
    assert_eq!(
        payments_route(watcher.clone(), customer.clone())
            .await
            .status,
        StatusCode::OK
    );
    let demo = hundred_orders(&cluster);
    let in_flight = orders_placed(&cluster, 30).await;
    cluster.kill(ServiceName::Payments);
    // The race happened: orders were on their way when it died.
    assert!(in_flight > 0, "no order was in flight at the kill");
    let down = payments_route(watcher.clone(), customer.clone()).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        down.body
    );
    assert_eq!(down.body["status"], 503);
    // Orders needing a payment wait for it (none is cancelled for want of an answer).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let books = cluster.app(ServiceName::Orders).books();
    let waiting = books
        .orders()
        .await
        .unwrap()
        .iter()
        .filter(|o| !o.status.is_terminal())
        .count();
    assert!(waiting > 0, "no order waits for its payment");
    cluster.restart(ServiceName::Payments).await;
    assert_eq!(
        payments_route(watcher.clone(), customer.clone())
            .await
            .status,
        StatusCode::OK
    );
    let report = demo.await.unwrap().unwrap();
    crate::assert_settled(&report, 100);
    assert!(report.passed());
    cluster.stop().await;
}

/// The broker frozen for 10 s with orders in flight between the services: every order ends
/// as its kind says and every invariant holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_the_split_services_ride_out_a_broker_frozen_for_ten_seconds() {
    test_lock::alone();
    let cluster = Cluster::start(&database_url(), &[]).await;
    let demo = hundred_orders(&cluster);
    let in_flight = orders_placed(&cluster, 30).await;
    cluster.broker.pause();
    assert!(
        in_flight > 0,
        "no order was in flight when the broker froze"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.broker.resume();
    let report = demo.await.unwrap().unwrap();
    crate::assert_settled(&report, 100);
    assert!(report.passed());
    cluster.stop().await;
}
