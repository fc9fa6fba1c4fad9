//! The demo: registers customers, fills quotes and places orders through the HTTP API,
//! including orders that hit each compensation path, waits for the workflow to settle, prints
//! each order's status history and checks every invariant of the spec.

pub(crate) mod shop;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use uuid::Uuid;

use self::shop::{Listener, Reply, Shop};
use ecommerce::catalog::{Product, seed};
use ecommerce::failures::FailureRules;
use ecommerce::messages::reasons;
use ecommerce::money::Currency;
use ecommerce::money::cents;
use ecommerce::ops::Status;

/// What an order of the demo is meant to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// Ship.
    Ships,
    /// Be cancelled by its customer right after placing (or ship, if that was too late).
    CustomerCancels,
    /// Ask for more than the stock.
    OutOfStock,
    /// Exceed its customer's credit.
    CreditLimit,
    /// Be declined by payments (total ending in the failure rule's cents).
    PaymentFails,
    /// Fail to ship (total ending in the failure rule's cents).
    ShipmentFails,
}

impl Kind {
    /// Whether `status`/`reason` is what this kind should end as.
    pub(crate) fn accepts(self, status: &str, reason: Option<&str>) -> bool {
        match self {
            Kind::Ships => status == "Shipped",
            Kind::CustomerCancels => {
                status == "Shipped" || reason == Some(reasons::CANCELLED_BY_CUSTOMER)
            }
            Kind::OutOfStock => reason == Some(reasons::OUT_OF_STOCK),
            // Stock held by orders still in flight can make any order's stock short first.
            Kind::CreditLimit => {
                reason == Some(reasons::CREDIT_LIMIT_REACHED)
                    || reason == Some(reasons::OUT_OF_STOCK)
            }
            Kind::PaymentFails => {
                reason == Some(reasons::PAYMENT_FAILED) || reason == Some(reasons::OUT_OF_STOCK)
            }
            Kind::ShipmentFails => {
                reason == Some(reasons::SHIPMENT_FAILED) || reason == Some(reasons::OUT_OF_STOCK)
            }
        }
    }
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct DemoOptions {
    /// Customers to register.
    pub(crate) customers: usize,
    /// Orders to place.
    pub(crate) orders: usize,
    /// Customers shopping at once.
    pub(crate) concurrency: usize,
    /// The failure rules the shop runs with (the demo builds baskets that hit them).
    pub(crate) failures: FailureRules,
    /// The machine client used to read the status.
    pub(crate) client_id: String,
    /// Its secret.
    pub(crate) client_secret: String,
    /// How long to wait for the workflow to settle.
    pub(crate) settle: Duration,
    /// Show a progress bar.
    pub(crate) progress: bool,
    /// Place orders at this steady rate (orders per second, all customers together) instead
    /// of as fast as the customers can.
    pub(crate) rate: Option<f64>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            customers: 20,
            orders: 200,
            concurrency: 8,
            failures: FailureRules::demo(),
            client_id: ecommerce::config::DEVELOPMENT_CLIENT_ID.to_owned(),
            client_secret: ecommerce::config::DEVELOPMENT_CLIENT_SECRET.to_owned(),
            settle: Duration::from_secs(60),
            progress: false,
            rate: None,
        }
    }
}

/// One order of the demo, as it ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The order.
    pub(crate) order_id: Uuid,
    /// What it was meant to do.
    pub(crate) kind: Kind,
    /// Its final status.
    pub(crate) status: String,
    /// Why it was cancelled.
    pub(crate) reason: Option<String>,
    /// Its status history, from its event history.
    pub(crate) history: Vec<String>,
    /// When it was placed and when it reached its final status (the server's clock, from
    /// its event history).
    pub(crate) span: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Each event of its history with when it was recorded.
    pub(crate) timeline: Vec<(String, DateTime<Utc>)>,
}

/// What the demo saw.
#[derive(Debug)]
pub(crate) struct DemoReport {
    /// Every order.
    pub(crate) outcomes: Vec<Outcome>,
    /// Orders that ended otherwise than their kind says.
    pub(crate) unexpected: Vec<String>,
    /// The shop's status once settled (invariants included).
    pub(crate) status: Status,
    /// Seconds from the first order to the last final status.
    pub(crate) seconds: f64,
}

/// Throughput and latency of a run, from the orders' event histories.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Timing {
    /// Orders that reached a final status per second, from the first placement to the last
    /// final status.
    pub(crate) orders_per_second: f64,
    /// Median time from placing to the final status, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile of the same.
    pub p99_ms: f64,
}

impl DemoReport {
    /// Throughput and latency, from the orders' histories (`None` without orders).
    pub(crate) fn timing(&self) -> Option<Timing> {
        let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            self.outcomes.iter().filter_map(|o| o.span).collect();
        let first = spans.iter().map(|s| s.0).min()?;
        let last = spans.iter().map(|s| s.1).max()?;
        let mut latencies: Vec<f64> = spans
            .iter()
            .map(|(placed, ended)| (*ended - *placed).as_seconds_f64() * 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
            latencies[index.min(latencies.len() - 1)]
        };
        let seconds = (last - first).as_seconds_f64().max(1e-3);
        Some(Timing {
            orders_per_second: spans.len() as f64 / seconds,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        })
    }

    /// Whether every order ended as meant and every invariant holds.
    pub(crate) fn passed(&self) -> bool {
        self.unexpected.is_empty() && self.status.invariants_hold
    }

    /// Prints each order's history (when `each_order`), the totals and the invariants.
    pub(crate) fn print(&self, each_order: bool) {
        for outcome in self.outcomes.iter().filter(|_| each_order) {
            let reason = outcome
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            println!(
                "order {} {:<15} {}{reason}",
                outcome.order_id,
                format!("{:?}", outcome.kind),
                outcome.history.join(" → ")
            );
        }
        let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
        for outcome in &self.outcomes {
            let key = match &outcome.reason {
                Some(reason) => format!("{} ({reason})", outcome.status),
                None => outcome.status.clone(),
            };
            *by_kind.entry(key).or_default() += 1;
        }
        println!("\n{} orders in {:.1} s:", self.outcomes.len(), self.seconds);
        if let Some(timing) = self.timing() {
            println!(
                "  {:.0} orders/s from first placement to last final status; place → final status p50 {:.0} ms, p99 {:.0} ms",
                timing.orders_per_second, timing.p50_ms, timing.p99_ms
            );
        }
        for (status, count) in by_kind {
            println!("  {count:>4}  {status}");
        }
        if !self.status.dead_letters.is_empty() {
            println!("dead letters: {:#?}", self.status.dead_letters);
        }
        for line in &self.unexpected {
            println!("UNEXPECTED: {line}");
        }
        if self.status.invariants_hold {
            println!(
                "invariants: every order ended Shipped, Delivered or Cancelled; no cancelled order holds stock or an un-refunded payment; no order has two payments; no stock went negative or was lost; every status change was pushed to its owner"
            );
        } else {
            for violation in &self.status.violations {
                println!("INVARIANT BROKEN: {violation}");
            }
        }
    }
}

/// An order placed: its id, kind and its customer's token.
type Placed = (Uuid, Kind, String);

struct Customer {
    token: String,
    orders: Vec<(usize, Kind)>,
}

/// Runs the demo against `shop`.
///
/// # Errors
/// When a request fails outright (the shop is unreachable or answers unexpectedly).
pub(crate) async fn run(shop: Arc<dyn Shop>, options: &DemoOptions) -> Result<DemoReport, String> {
    let run = Uuid::new_v4().simple().to_string();
    let customers = options.customers.max(1);
    // Every fifth customer has a tiny credit limit: their orders exceed it.
    let low_limit = |c: usize| c % 5 == 2 && customers > 2;
    // Each customer's orders, with their index among all orders (their slot when paced).
    let mut plans: Vec<Vec<(usize, Kind)>> = vec![Vec::new(); customers];
    let rotation = [
        Kind::Ships,
        Kind::OutOfStock,
        Kind::Ships,
        Kind::PaymentFails,
        Kind::CustomerCancels,
        Kind::ShipmentFails,
    ];
    for i in 0..options.orders {
        let c = i % customers;
        let kind = if low_limit(c) {
            Kind::CreditLimit
        } else {
            rotation[(i / customers + c) % rotation.len()]
        };
        plans[c].push((i, kind));
    }
    let progress = progress_bar(options, plans.iter().map(Vec::len).sum());
    let mut registered = Vec::new();
    for (c, orders) in plans.into_iter().enumerate() {
        let limit = if low_limit(c) {
            LOW_CREDIT_LIMIT
        } else {
            100_000
        };
        let token = register(shop.as_ref(), &run, c, limit).await?;
        registered.push(Customer { token, orders });
    }
    let started = Instant::now();
    let placed: Vec<Result<Vec<Placed>, String>> =
        futures::stream::iter(registered.into_iter().enumerate().map(|(c, customer)| {
            let shop = shop.clone();
            let progress = progress.clone();
            async move {
                let mut placed = Vec::new();
                for (n, (index, kind)) in customer.orders.iter().enumerate() {
                    if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
                        let slot = Duration::from_secs_f64(*index as f64 / rate);
                        tokio::time::sleep_until(tokio::time::Instant::from_std(started + slot))
                            .await;
                    }
                    let order =
                        place(shop.as_ref(), &customer.token, *kind, c + n, options).await?;
                    progress.inc(1);
                    placed.push((order, *kind, customer.token.clone()));
                }
                Ok(placed)
            }
        }))
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    let mut orders = Vec::new();
    for customer in placed {
        orders.extend(customer?);
    }
    progress.set_message("waiting for every order to end");
    progress.set_position(0);
    let mut outcomes = Vec::new();
    let mut unexpected = Vec::new();
    let deadline = Instant::now() + options.settle;
    for (order_id, kind, token) in orders {
        let order = wait_terminal(shop.as_ref(), &token, order_id, deadline).await?;
        progress.inc(1);
        let status = order["statusText"].as_str().unwrap_or("?").to_owned();
        let reason = order["cancellationReason"].as_str().map(str::to_owned);
        let history = shop
            .call(
                Listener::Public,
                Method::GET,
                &format!("/api/v2/orders/{order_id}/history"),
                Some(&token),
                None,
            )
            .await?;
        let span = span_of(&history.body);
        let timeline = timeline_of(&history.body);
        let history: Vec<String> = history
            .body
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| e["eventType"].as_str())
                    .filter(|t| *t != "OrderCancellationRequested")
                    .map(|t| t.trim_start_matches("Order").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !kind.accepts(&status, reason.as_deref()) {
            unexpected.push(format!(
                "order {order_id} ({kind:?}) ended {status} {reason:?}"
            ));
        }
        outcomes.push(Outcome {
            order_id,
            kind,
            status,
            reason,
            history,
            span,
            timeline,
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let status = settled_status(shop.as_ref(), options, deadline).await?;
    Ok(DemoReport {
        outcomes,
        unexpected,
        status,
        seconds,
    })
}

/// Each event of an order's history with when it was recorded.
fn timeline_of(history: &Value) -> Vec<(String, DateTime<Utc>)> {
    history
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| {
                    let at = DateTime::parse_from_rfc3339(e["timestamp"].as_str()?).ok()?;
                    Some((e["eventType"].as_str()?.to_owned(), at.with_timezone(&Utc)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// When the order was placed and when it reached its final status, from its history.
fn span_of(history: &Value) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let events = history.as_array()?;
    let at = |types: &[&str]| {
        events
            .iter()
            .find(|e| e["eventType"].as_str().is_some_and(|t| types.contains(&t)))
            .and_then(|e| e["timestamp"].as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    Some((
        at(&["OrderPlaced"])?,
        at(&["OrderShipped", "OrderCancelled"])?,
    ))
}

fn progress_bar(options: &DemoOptions, total: usize) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(u64::try_from(total).unwrap_or(u64::MAX));
    if let Ok(style) = ProgressStyle::with_template("{msg:32} [{bar:40}] {pos}/{len} ({elapsed})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("placing orders");
    bar
}

/// Registers customer `index` of `run` with a credit limit of `limit` and signs in: the
/// access token.
pub(crate) async fn register(
    shop: &dyn Shop,
    run: &str,
    index: usize,
    limit: u32,
) -> Result<String, String> {
    let email = format!("demo-{run}-{index}@example.com");
    let body = json!({
        "name": format!("Demo Customer {index}"),
        "email": email,
        "password": "demo-password",
        "passwordConfirm": "demo-password",
        "shippingAddress": format!("{index} Demo Street, Springfield"),
        "creditLimit": limit,
    });
    let reply = shop
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/customers",
            None,
            Some(body),
        )
        .await?;
    expect(&reply, StatusCode::CREATED, "register")?;
    let login = shop
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/accounts/login",
            None,
            Some(json!({ "email": email, "password": "demo-password" })),
        )
        .await?;
    expect(&login, StatusCode::OK, "login")?;
    login.body["accessToken"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "login returned no token".to_owned())
}

fn expect(reply: &Reply, status: StatusCode, what: &str) -> Result<(), String> {
    if reply.status == status {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected {status}, got {}: {}",
            reply.status, reply.body
        ))
    }
}

/// A basket for `kind`: products, quantities and currency.
fn basket(kind: Kind, n: usize, failures: &FailureRules) -> (Vec<(Uuid, u32)>, Currency) {
    let products = seed();
    let by_name = |name: &str| {
        products
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.product_id)
    };
    let fails = |p: &Product, q: u32, currency: Currency| -> bool {
        let total = p
            .price
            .convert_to(currency)
            .map(|m| m.amount() * rust_decimal::Decimal::from(q))
            .unwrap_or_default();
        failures.declines_payment(total) || failures.fails_shipment(total)
    };
    let currencies = [Currency::Usd, Currency::Cad, Currency::Eur];
    match kind {
        Kind::Ships | Kind::CustomerCancels => {
            let currency = currencies[n % currencies.len()];
            let safe: Vec<&Product> = products
                .iter()
                .filter(|p| p.name != "Desk Lamp" && !fails(p, 1, currency))
                .collect();
            let product = safe[n % safe.len()];
            (vec![(product.product_id, 1)], currency)
        }
        Kind::OutOfStock => (
            vec![(by_name("Desk Lamp").unwrap_or_default(), 100_000)],
            Currency::Usd,
        ),
        Kind::CreditLimit => {
            // Anything above the tiny limit, spread over the catalog so that reservations
            // held until the payment is refused do not run a product out of stock.
            let dear: Vec<&Product> = products
                .iter()
                .filter(|p| {
                    p.name != "Desk Lamp"
                        && p.price.amount() > rust_decimal::Decimal::from(LOW_CREDIT_LIMIT)
                        && !failures.declines_payment(p.price.amount())
                })
                .collect();
            let product = dear[n % dear.len()];
            (vec![(product.product_id, 1)], Currency::Usd)
        }
        Kind::PaymentFails => {
            let target = failures.payment_cents.unwrap_or(39);
            let lines = small_basket(&products, target, failures, true, n);
            (lines, Currency::Usd)
        }
        Kind::ShipmentFails => {
            let target = failures.shipment_cents.unwrap_or(13);
            let lines = small_basket(&products, target, failures, false, n);
            (lines, Currency::Usd)
        }
    }
}

/// The credit limit of the customers whose orders exceed it.
const LOW_CREDIT_LIMIT: u32 = 20;

/// The `n`th (round robin) of the baskets of one product in a small quantity whose USD total
/// ends in `target` cents and does not also hit the other rule.
fn small_basket(
    products: &[Product],
    target: u32,
    failures: &FailureRules,
    payment: bool,
    n: usize,
) -> Vec<(Uuid, u32)> {
    let mut baskets = Vec::new();
    for product in products.iter().filter(|p| p.name != "Desk Lamp") {
        for quantity in 1..=9u32 {
            let total = product.price.amount() * rust_decimal::Decimal::from(quantity);
            let other = if payment {
                failures.fails_shipment(total)
            } else {
                failures.declines_payment(total)
            };
            if cents(total) == target && !other {
                baskets.push((product.product_id, quantity));
            }
        }
    }
    if baskets.is_empty() {
        return Vec::new();
    }
    vec![baskets[n % baskets.len()]]
}

async fn place(
    shop: &dyn Shop,
    token: &str,
    kind: Kind,
    n: usize,
    options: &DemoOptions,
) -> Result<Uuid, String> {
    let (lines, currency) = basket(kind, n, &options.failures);
    let quote = shop
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/quotes",
            Some(token),
            Some(json!({ "currencyCode": currency.code() })),
        )
        .await?;
    expect(&quote, StatusCode::CREATED, "open a quote")?;
    let quote_id = quote.body["quoteId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for (product_id, quantity) in lines {
        let item = shop
            .call(
                Listener::Public,
                Method::PUT,
                &format!("/api/v2/quotes/{quote_id}/items"),
                Some(token),
                Some(json!({ "productId": product_id, "quantity": quantity })),
            )
            .await?;
        expect(&item, StatusCode::OK, "add an item")?;
    }
    let placed = shop
        .call(
            Listener::Public,
            Method::POST,
            &format!("/api/v2/orders/quote/{quote_id}"),
            Some(token),
            Some(json!({})),
        )
        .await?;
    expect(&placed, StatusCode::ACCEPTED, "place the order")?;
    let order_id: Uuid =
        serde_json::from_value(placed.body["orderId"].clone()).map_err(|e| e.to_string())?;
    if kind == Kind::CustomerCancels {
        let cancel = shop
            .call(
                Listener::Public,
                Method::POST,
                &format!("/api/v2/orders/{order_id}/cancel"),
                Some(token),
                Some(json!({})),
            )
            .await?;
        // Too late (already shipped) is a 422: the order ships, which the kind accepts.
        if cancel.status != StatusCode::ACCEPTED
            && cancel.status != StatusCode::UNPROCESSABLE_ENTITY
        {
            return Err(format!("cancel: {}: {}", cancel.status, cancel.body));
        }
    }
    Ok(order_id)
}

async fn wait_terminal(
    shop: &dyn Shop,
    token: &str,
    order_id: Uuid,
    deadline: Instant,
) -> Result<Value, String> {
    loop {
        let orders = shop
            .call(
                Listener::Public,
                Method::GET,
                "/api/v2/orders",
                Some(token),
                None,
            )
            .await?;
        let order = orders.body.as_array().and_then(|all| {
            all.iter()
                .find(|o| o["orderId"] == json!(order_id))
                .cloned()
        });
        if let Some(order) = &order
            && matches!(
                order["statusText"].as_str(),
                Some("Shipped" | "Delivered" | "Cancelled")
            )
        {
            return Ok(order.clone());
        }
        if Instant::now() >= deadline {
            return Ok(
                order.unwrap_or_else(|| json!({ "orderId": order_id, "statusText": "missing" }))
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn settled_status(
    shop: &dyn Shop,
    options: &DemoOptions,
    deadline: Instant,
) -> Result<Status, String> {
    let token = shop
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/accounts/token",
            None,
            Some(json!({
                "grantType": "client_credentials",
                "clientId": options.client_id,
                "clientSecret": options.client_secret,
                "scope": "read",
            })),
        )
        .await?;
    expect(&token, StatusCode::OK, "machine token")?;
    let token = token.body["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    loop {
        let mut statuses = Vec::new();
        for index in 0..shop.internal_listeners() {
            let reply = shop
                .call(
                    Listener::Internal(index),
                    Method::GET,
                    "/api/v2/internal/status",
                    Some(&token),
                    None,
                )
                .await?;
            expect(&reply, StatusCode::OK, "status")?;
            statuses.push(serde_json::from_value(reply.body).map_err(|e| e.to_string())?);
        }
        let status = combined(statuses)?;
        if status.invariants_hold || Instant::now() >= deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status of every instance read as one: the instance that checks the invariants (one
/// process, or the split deployment's orders service, which reads inventory and payments over
/// their internal routes), with every instance's services, relays, consumers, paused
/// partitions and dead letters, ready when all are.
fn combined(statuses: Vec<Status>) -> Result<Status, String> {
    let (mut checking, others): (Vec<Status>, Vec<Status>) =
        statuses.into_iter().partition(|s| s.invariants_checked);
    if checking.len() != 1 {
        return Err(format!(
            "{} of the internal URLs check the invariants; exactly one must (in the split \
             deployment, the orders service's)",
            checking.len()
        ));
    }
    let mut status = checking.remove(0);
    for other in others {
        status.ready &= other.ready;
        status.services.extend(other.services);
        status.relays.extend(other.relays);
        status.consumers.extend(other.consumers);
        status.paused_partitions.extend(other.paused_partitions);
        status.dead_letters.extend(other.dead_letters);
        if let Some(error) = other.paused_partitions_error {
            status.paused_partitions_error = Some(error);
        }
    }
    Ok(status)
}
