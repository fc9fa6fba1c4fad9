//! The ordering workflow over HTTP: every path of the order saga, end to end.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use ecommerce::app::{AppConfig, WorkflowConfig};
use ecommerce::catalog::product_id;
use ecommerce::failures::FailureRules;
use ecommerce::invariants;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::{
    Listener, TestApp, assert_problem, lines_ending_in, place_order, terminal, wait_for_order,
};

const WAIT: Duration = Duration::from_secs(20);

async fn demo_app(held: &'static [&'static str], step_timeout: Duration) -> TestApp {
    TestApp::with(AppConfig {
        workflow: WorkflowConfig {
            failures: FailureRules::demo(),
            step_timeout,
            deadline_poll: Duration::from_millis(20),
            held,
            ..WorkflowConfig::default()
        },
        ..AppConfig::embedded()
    })
    .await
}

async fn assert_invariants(app: &TestApp) {
    let report = invariants::settle(app.app.books().as_ref(), WAIT).await;
    assert!(report.holds(), "{:#?}", report.violations);
}

fn statuses(history: &Value) -> Vec<String> {
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect()
}

on_both_backends!(an_order_ships_and_is_delivered);

async fn an_order_ships_and_is_delivered(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let keyboard = product_id("Mechanical Keyboard");
    let in_stock = || async {
        app.post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "USD", "productIds": [keyboard] }),
        )
        .await
        .body[0]["quantityInStock"]
            .as_u64()
            .unwrap()
    };
    let before = in_stock().await;
    let order_id = place_order(&app, &ada, "EUR", &[(keyboard, 2)]).await;
    let listed = app.get("/api/v2/orders", token).await;
    assert_eq!(
        listed.body[0]["orderId"],
        json!(order_id),
        "read your writes"
    );
    let order = wait_for_order(&app, &ada, order_id, WAIT, terminal).await;
    assert_eq!(order["statusText"], "Shipped", "{order}");
    assert_eq!(order["statusCode"], 4);
    assert_eq!(order["currencyCode"], "EUR");
    assert_eq!(order["currencySymbol"], "€");
    assert_eq!(order["totalPrice"], json!(214.18)); // 2 × (89.99 × 1.19 = 107.09)
    assert_eq!(order["orderLines"][0]["quantity"], 2);
    assert!(order["cancellationReason"].is_null());

    let delivered = app
        .post(
            &format!("/api/v2/orders/{order_id}/confirm-delivery"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(
        delivered.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        delivered.body
    );
    let history = app
        .get(&format!("/api/v2/orders/{order_id}/history"), token)
        .await;
    assert_eq!(
        statuses(&history.body),
        [
            "OrderPlaced",
            "OrderProcessed",
            "OrderPaid",
            "OrderShipped",
            "OrderDelivered"
        ]
    );
    // Too late to cancel; the quote is confirmed and no longer open.
    let cancel = app
        .post(
            &format!("/api/v2/orders/{order_id}/cancel"),
            token,
            json!({}),
        )
        .await;
    assert_problem(&cancel, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(
        &app.get("/api/v2/quotes", token).await,
        StatusCode::NOT_FOUND,
    );
    // Stock moved (on a fresh app, from the seeded quantity).
    assert_eq!(in_stock().await, before - 2);
    if app.schema_prefix.is_none() {
        assert_eq!(before, u64::from(ecommerce::inventory::seeded_quantity(0)));
    }
    // One payment, charged, in the currency of the customer's credit limit (USD); only its
    // customer sees it.
    let payments = app.get("/api/v2/payments", token).await;
    assert_eq!(payments.status, StatusCode::OK, "{:?}", payments.body);
    assert_eq!(
        payments.body.as_array().unwrap().len(),
        1,
        "{:?}",
        payments.body
    );
    assert_eq!(payments.body[0]["orderId"], json!(order_id));
    assert_eq!(payments.body[0]["status"], "Completed");
    assert_eq!(payments.body[0]["currencyCode"], "USD");
    assert_eq!(payments.body[0]["amount"], json!(179.98)); // 2 × 89.99
    let bob = app.customer("Bob Babbage").await;
    let theirs = app.get("/api/v2/payments", Some(&bob.access_token)).await;
    assert_eq!(theirs.body, json!([]));
    assert_problem(
        &app.get("/api/v2/payments", None).await,
        StatusCode::UNAUTHORIZED,
    );
    let m2m = app.m2m_token(None).await;
    assert_problem(
        &app.get("/api/v2/payments", Some(&m2m)).await,
        StatusCode::FORBIDDEN,
    );
    // What the invariants that span services read: the payment and the reservation.
    let record = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/payments/{}/{order_id}", ada.customer_id),
            Some(&m2m),
            None,
        )
        .await;
    assert_eq!(
        record.body,
        json!({ "orderId": order_id, "status": "Completed", "created": 1 })
    );
    let reservation = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/inventory/reservations/{order_id}"),
            Some(&m2m),
            None,
        )
        .await;
    assert_eq!(
        reservation.body,
        json!({ "orderId": order_id, "status": "Reserved" })
    );
    let none = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!(
                "/api/v2/internal/inventory/reservations/{}",
                uuid::Uuid::new_v4()
            ),
            Some(&m2m),
            None,
        )
        .await;
    assert_problem(&none, StatusCode::NOT_FOUND);
    let as_customer = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/payments/{}/{order_id}", ada.customer_id),
            token,
            None,
        )
        .await;
    assert_problem(&as_customer, StatusCode::FORBIDDEN);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn placing_a_quote_twice_places_one_order() {
    let app = demo_app(&[], Duration::from_secs(60)).await;
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let order_id = place_order(&app, &ada, "USD", &[(product_id("Yoga Mat"), 1)]).await;
    let orders = app.get("/api/v2/orders", token).await;
    let quote_id = orders.body[0]["quoteId"].as_str().unwrap().to_owned();
    let again = app
        .post(
            &format!("/api/v2/orders/quote/{quote_id}"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["orderId"], json!(order_id));
    wait_for_order(&app, &ada, order_id, WAIT, terminal).await;
    assert_eq!(
        app.get("/api/v2/orders", token)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_invariants(&app).await;
}

#[tokio::test]
async fn every_compensation_path() {
    let app = demo_app(&[], Duration::from_secs(60)).await;
    let rich = app.customer("Ada Lovelace").await;
    let poor = {
        let email = format!("poor-{}@example.com", uuid::Uuid::new_v4().simple());
        let mut body = crate::support::registration("Bob Poor", &email);
        body["creditLimit"] = json!(50);
        assert_eq!(
            app.post("/api/v2/customers", None, body).await.status,
            StatusCode::CREATED
        );
        let login = app.login(&email, "secret-password").await;
        crate::support::SignedIn {
            customer_id: serde_json::from_value(
                app.get(
                    "/api/v2/customers/details",
                    login.body["accessToken"].as_str(),
                )
                .await
                .body["customerId"]
                    .clone(),
            )
            .unwrap(),
            email,
            access_token: login.body["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: login.body["refreshToken"].as_str().unwrap().to_owned(),
        }
    };
    let cases = [
        (&rich, vec![(product_id("Desk Lamp"), 10_000)], "OutOfStock"),
        (
            &poor,
            vec![(product_id("Mechanical Keyboard"), 1)],
            "CreditLimitReached",
        ),
        (&rich, lines_ending_in(39), "PaymentFailed"),
        (
            &rich,
            vec![(product_id("French Press"), 1)],
            "ShipmentFailed",
        ),
    ];
    for (who, lines, reason) in cases {
        let order_id = place_order(&app, who, "USD", &lines).await;
        let order = wait_for_order(&app, who, order_id, WAIT, terminal).await;
        assert_eq!(order["statusText"], "Cancelled", "{reason}: {order}");
        assert_eq!(order["cancellationReason"], reason);
    }
    assert_invariants(&app).await;
    let report = invariants::check(app.app.books().as_ref()).await;
    assert_eq!(report.by_reason.len(), 4, "{report:?}");
}

#[tokio::test]
async fn a_step_without_answer_times_out_and_a_late_payment_is_refunded() {
    let app = demo_app(&["payments"], Duration::from_millis(300)).await;
    let ada = app.customer("Ada Lovelace").await;
    let order_id = place_order(&app, &ada, "USD", &[(product_id("Running Shoes"), 1)]).await;
    let order = wait_for_order(&app, &ada, order_id, WAIT, terminal).await;
    assert_eq!(order["cancellationReason"], "ProcessingError", "{order}");
    // Payments come back: the payment completes late and is refunded.
    assert!(app.app.release("payments"));
    let started = std::time::Instant::now();
    loop {
        let status = app
            .app
            .books()
            .payment(ada.customer_id, order_id)
            .await
            .unwrap()
            .status;
        if status == Some(ecommerce::payments::PaymentStatus::Refunded) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "late payment not refunded: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let saga = app.app.books().saga(order_id).await.unwrap().unwrap();
    assert_eq!(saga.state.late, ["PaymentCompleted"]);
    assert_invariants(&app).await;
}

#[tokio::test]
async fn a_customer_cancels_before_shipment() {
    let app = demo_app(&["payments"], Duration::from_secs(60)).await;
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let order_id = place_order(&app, &ada, "CAD", &[(product_id("Chef's Knife"), 1)]).await;
    wait_for_order(&app, &ada, order_id, WAIT, |o| {
        o["statusText"] == "Processed"
    })
    .await;
    // Stock is reserved while payment is pending.
    let reserved = || async { app.app.books().reservation(order_id).await.unwrap() };
    let started = std::time::Instant::now();
    while reserved().await != Some(ecommerce::inventory::ReservationStatus::Reserved) {
        assert!(started.elapsed() < WAIT, "stock never reserved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cancel = app
        .post(
            &format!("/api/v2/orders/{order_id}/cancel"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{:?}", cancel.body);
    let order = wait_for_order(&app, &ada, order_id, WAIT, terminal).await;
    assert_eq!(order["cancellationReason"], "CancelledByCustomer");
    // The release is the inventory's to apply, after the cancellation.
    let started = std::time::Instant::now();
    while reserved().await != Some(ecommerce::inventory::ReservationStatus::Released) {
        assert!(started.elapsed() < WAIT, "stock never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.app.release("payments");
    assert_invariants(&app).await;
    let again = app
        .post(
            &format!("/api/v2/orders/{order_id}/cancel"),
            token,
            json!({}),
        )
        .await;
    assert_problem(&again, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn orders_belong_to_their_customer() {
    let app = demo_app(&[], Duration::from_secs(60)).await;
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    let order_id = place_order(&app, &ada, "USD", &[(product_id("Yoga Mat"), 1)]).await;
    let bob_token = Some(bob.access_token.as_str());
    assert_problem(
        &app.get(&format!("/api/v2/orders/{order_id}/history"), bob_token)
            .await,
        StatusCode::NOT_FOUND,
    );
    for action in ["cancel", "confirm-delivery"] {
        let reply = app
            .post(
                &format!("/api/v2/orders/{order_id}/{action}"),
                bob_token,
                json!({}),
            )
            .await;
        assert_problem(&reply, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.get("/api/v2/orders", bob_token).await.body, json!([]));
    let ada_quote = app
        .get("/api/v2/orders", Some(&ada.access_token))
        .await
        .body[0]["quoteId"]
        .as_str()
        .unwrap()
        .to_owned();
    let steal = app
        .post(
            &format!("/api/v2/orders/quote/{ada_quote}"),
            bob_token,
            json!({}),
        )
        .await;
    assert_problem(&steal, StatusCode::NOT_FOUND);
    let unknown = app
        .post(
            &format!("/api/v2/orders/quote/{}", uuid::Uuid::new_v4()),
            bob_token,
            json!({}),
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND);
    assert_problem(
        &app.get("/api/v2/orders", None).await,
        StatusCode::UNAUTHORIZED,
    );
}
