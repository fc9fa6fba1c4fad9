//! Forgetting a customer: their personal data becomes `[forgotten]` everywhere (on PostgreSQL,
//! nowhere in any table of any schema), their account closes, their orders keep their amounts
//! and statuses, and their email can register again as a new customer.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use ecommerce::catalog::product_id;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{
    Listener, SignedIn, TestApp, assert_problem, place_order, registration, terminal,
    wait_for_order,
};

on_both_backends!(
    a_forgotten_customer_is_nowhere_and_their_orders_remain,
    an_operator_forgets_a_customer_by_id
);

/// Registers a customer whose name, email and address carry `marker`.
async fn marked_customer(app: &TestApp, marker: &str) -> SignedIn {
    let email = format!("{marker}@example.com");
    let mut body = registration(&format!("Ada {marker}"), &email);
    body["shippingAddress"] = json!(format!("1 {marker} Street"));
    let registered = app.post("/api/v2/customers", None, body).await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:?}",
        registered.body
    );
    let customer_id = serde_json::from_value(registered.body["customerId"].clone()).unwrap();
    let tokens = app.login(&email, "secret-password").await;
    SignedIn {
        customer_id,
        email,
        access_token: tokens.body["accessToken"].as_str().unwrap().to_owned(),
        refresh_token: tokens.body["refreshToken"].as_str().unwrap().to_owned(),
    }
}

/// Every row of every table of the app's schemas that holds `marker`, as `schema.table`.
async fn rows_holding(app: &TestApp, marker: &str) -> Vec<String> {
    let Some(prefix) = &app.schema_prefix else {
        return Vec::new();
    };
    let url = std::env::var("DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema LIKE $1 AND table_type = 'BASE TABLE'",
            &[&format!("{prefix}%")],
        )
        .await
        .unwrap();
    assert!(tables.len() > 10, "the app's tables: {}", tables.len());
    let mut holding = Vec::new();
    for table in tables {
        let (schema, name): (String, String) = (table.get(0), table.get(1));
        let count: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".\"{name}\" t WHERE t::text ILIKE $1"),
                &[&format!("%{marker}%")],
            )
            .await
            .unwrap()
            .get(0);
        if count > 0 {
            holding.push(format!("{schema}.{name}"));
        }
    }
    holding
}

async fn a_forgotten_customer_is_nowhere_and_their_orders_remain(app: TestApp) {
    let marker = format!("marker{}", Uuid::new_v4().simple());
    let ada = marked_customer(&app, &marker).await;
    let token = Some(ada.access_token.as_str());
    let order_id = place_order(&app, &ada, "USD", &[(product_id("Yoga Mat"), 1)]).await;
    let before = wait_for_order(&app, &ada, order_id, Duration::from_secs(30), terminal).await;
    // The order recorded where it goes; every event, saga state, message and read model of
    // every context holds it only encrypted.
    let order_history = format!("/api/v2/orders/{order_id}/history");
    let placed = app.get(&order_history, token).await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.body);
    assert_eq!(
        placed.body[0]["data"]["shipTo"],
        json!({ "name": format!("Ada {marker}"), "address": format!("1 {marker} Street") }),
        "{:?}",
        placed.body
    );
    let stored = rows_holding(&app, &marker).await;
    assert!(
        app.schema_prefix.is_none() || stored.is_empty(),
        "stored in clear before forgetting: {stored:?}"
    );

    let forgotten = app
        .call(
            Listener::Public,
            Method::DELETE,
            "/api/v2/customers/me",
            token,
            None,
        )
        .await;
    assert_eq!(
        forgotten.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        forgotten.body
    );

    // The account no longer signs in; the profile and the history show the placeholder.
    assert_problem(
        &app.login(&ada.email, "secret-password").await,
        StatusCode::UNAUTHORIZED,
    );
    let details = app.get("/api/v2/customers/details", token).await;
    for field in ["name", "email", "shippingAddress"] {
        assert_eq!(details.body[field], "[forgotten]", "{:?}", details.body);
    }
    let history = app.get("/api/v2/customers/history", token).await;
    assert_eq!(history.status, StatusCode::OK);
    let text = history.body.to_string();
    assert!(
        !text.contains(&marker) && text.contains("[forgotten]"),
        "{text}"
    );

    // The business history survives: the order, its total and status.
    let orders = app.get("/api/v2/orders", token).await;
    let after: &Value = orders
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"] == json!(order_id))
        .unwrap();
    assert_eq!(after["statusText"], before["statusText"]);
    assert_eq!(after["total"], before["total"]);
    let placed = app.get(&order_history, token).await;
    assert_eq!(placed.body[0]["data"]["shipTo"], "[forgotten]");
    assert!(
        placed.body[0]["data"]["lines"]
            .as_array()
            .is_some_and(|lines| !lines.is_empty()),
        "{:?}",
        placed.body
    );
    let stored = rows_holding(&app, &marker).await;
    assert!(stored.is_empty(), "personal data left in: {stored:?}");

    // A token still valid cannot place another order: there is nowhere to ship it.
    let quote = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
        .await;
    assert_eq!(quote.status, StatusCode::CREATED, "{:?}", quote.body);
    let quote_id = quote.body["quoteId"].as_str().unwrap().to_owned();
    let item = app
        .put(
            &format!("/api/v2/quotes/{quote_id}/items"),
            token,
            json!({ "productId": product_id("Yoga Mat"), "quantity": 1 }),
        )
        .await;
    assert_eq!(item.status, StatusCode::OK, "{:?}", item.body);
    let refused = app
        .post(
            &format!("/api/v2/orders/quote/{quote_id}"),
            token,
            json!({}),
        )
        .await;
    assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);

    // The orders view rebuilds from the log without an error and shows the same order.
    rebuild_orders_view(&app).await;
    let orders = app.get("/api/v2/orders", token).await;
    let rebuilt: &Value = orders
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["orderId"] == json!(order_id))
        .unwrap();
    assert_eq!(rebuilt, after);

    // Forgetting again changes nothing; the email registers again as a new customer.
    let again = app
        .call(
            Listener::Public,
            Method::DELETE,
            "/api/v2/customers/me",
            token,
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    let reborn = app
        .post(
            "/api/v2/customers",
            None,
            registration("Ada Again", &ada.email),
        )
        .await;
    assert_eq!(reborn.status, StatusCode::CREATED, "{:?}", reborn.body);
    assert_ne!(reborn.body["customerId"], json!(ada.customer_id));
    let login = app.login(&ada.email, "secret-password").await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
}

/// Rebuilds the orders view through the operator's route and waits for the switch.
async fn rebuild_orders_view(app: &TestApp) {
    let operator = app.m2m_token(None).await;
    let path = "/api/v2/internal/projections/orders-view/rebuild";
    let started = app
        .call(
            Listener::Internal,
            Method::POST,
            path,
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let version = started.body["version"].as_u64().unwrap();
    assert!(version >= 2, "{:?}", started.body);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = app
            .call(
                Listener::Internal,
                Method::GET,
                "/api/v2/internal/status",
                Some(&operator),
                None,
            )
            .await;
        let view = &status.body["projections"][0];
        assert!(view["error"].is_null(), "{view:?}");
        if view["version"] == json!(version) && view["rebuilding"].is_null() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no switch: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_operator_forgets_a_customer_by_id(app: TestApp) {
    let marker = format!("marker{}", Uuid::new_v4().simple());
    let ada = marked_customer(&app, &marker).await;
    let path = format!(
        "/api/v2/internal/customers/{}/personal-data",
        ada.customer_id
    );
    let reader = app.m2m_token(Some("read")).await;
    let refused = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &path,
            Some(&reader),
            None,
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN);
    let operator = app.m2m_token(None).await;
    let forgotten = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &path,
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(
        forgotten.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        forgotten.body
    );
    let details = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/customers/{}", ada.customer_id),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(details.body["name"], "[forgotten]");
    assert_eq!(details.body["creditLimit"], 5000.0);
    assert!(rows_holding(&app, &marker).await.is_empty());
    let unknown = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &format!(
                "/api/v2/internal/customers/{}/personal-data",
                Uuid::new_v4()
            ),
            Some(&operator),
            None,
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND);
}
