//! Registration, details, history, updates and the credit limit.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::json;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{Listener, TestApp, assert_problem, registration};

on_both_backends!(
    registration_details_and_history,
    registration_validates_every_field,
    an_email_registers_once,
    bad_bodies_are_refused_with_their_status,
    updates_change_name_and_address_only,
    machine_clients_change_the_credit_limit,
    control_characters_are_refused_naming_the_field,
);

async fn registration_details_and_history(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let details = app
        .get("/api/v2/customers/details", Some(&ada.access_token))
        .await;
    assert_eq!(details.status, StatusCode::OK);
    assert_eq!(
        details.body,
        json!({
            "customerId": ada.customer_id,
            "name": "Ada Lovelace",
            "email": ada.email,
            "shippingAddress": "12 Analytical Row, London",
            "creditLimit": 5000.0,
            "currencyCode": "USD",
        })
    );
    let history = app
        .get("/api/v2/customers/history", Some(&ada.access_token))
        .await;
    assert_eq!(history.status, StatusCode::OK);
    let entries = history.body.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["eventType"], "CustomerRegistered");
    assert_eq!(entries[0]["aggregateId"], json!(ada.customer_id));
    assert_eq!(entries[0]["data"]["name"], "Ada Lovelace");
    assert!(entries[0]["eventId"].is_string() && entries[0]["timestamp"].is_string());
    assert!(
        !history.body.to_string().contains("secret-password"),
        "no password in any history"
    );
}

async fn registration_validates_every_field(app: TestApp) {
    let reply = app
        .post(
            "/api/v2/customers",
            None,
            json!({
                "name": "A",
                "email": "not-an-email",
                "password": "1234",
                "passwordConfirm": "4321",
                "shippingAddress": "x",
                "creditLimit": 0,
            }),
        )
        .await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    for field in [
        "name",
        "email",
        "password",
        "passwordConfirm",
        "shippingAddress",
        "creditLimit",
    ] {
        assert!(
            reply.body["errors"][field].is_array(),
            "{field}: {:?}",
            reply.body
        );
    }
    let mut body = registration("Ada Lovelace", "ada.currency@example.com");
    body["currencyCode"] = json!("GBP");
    let currency = app.post("/api/v2/customers", None, body).await;
    assert_problem(&currency, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(currency.body["errors"]["currencyCode"].is_array());
    let mut body = registration("Ada Lovelace", "ada.cents@example.com");
    body["creditLimit"] = json!(10.001);
    let cents = app.post("/api/v2/customers", None, body).await;
    assert_problem(&cents, StatusCode::UNPROCESSABLE_ENTITY);
    // A failed registration created no account either.
    let login = app.login("ada.cents@example.com", "secret-password").await;
    assert_problem(&login, StatusCode::UNAUTHORIZED);

    // Amounts are exact: too large, or more digits than a JSON number carries, is a 422
    // naming the field, never a rounded amount.
    for (email, limit) in [
        ("ada.huge@example.com", json!(1_000_000_000_000_000.5_f64)),
        ("ada.huge.text@example.com", json!("1000000000000000.5")),
        ("ada.words@example.com", json!("a lot")),
    ] {
        let mut body = registration("Ada Lovelace", email);
        body["creditLimit"] = limit;
        let refused = app.post("/api/v2/customers", None, body).await;
        assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refused.body["errors"]["creditLimit"].is_array(),
            "{:?}",
            refused.body
        );
    }
    for (email, limit, stored) in [
        (
            "ada.max@example.com",
            json!(999_999_999_999.99_f64),
            999_999_999_999.99_f64,
        ),
        ("ada.text@example.com", json!("250.75"), 250.75),
    ] {
        let mut body = registration("Ada Lovelace", email);
        body["creditLimit"] = limit;
        let created = app.post("/api/v2/customers", None, body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let login = app.login(email, "secret-password").await;
        let token = login.body["accessToken"].as_str().unwrap();
        let details = app.get("/api/v2/customers/details", Some(token)).await;
        assert_eq!(details.body["creditLimit"], json!(stored));
    }
}

async fn an_email_registers_once(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let mut again = registration("Ada Impostor", &ada.email.to_uppercase());
    again["password"] = json!("another-password");
    again["passwordConfirm"] = json!("another-password");
    let reply = app.post("/api/v2/customers", None, again).await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.body["errors"]["email"].is_array());
    // The original account still signs in as the original customer.
    let login = app.login(&ada.email, "secret-password").await;
    let token = login.body["accessToken"].as_str().unwrap();
    let details = app.get("/api/v2/customers/details", Some(token)).await;
    assert_eq!(details.body["name"], "Ada Lovelace");
    assert_problem(
        &app.login(&ada.email, "another-password").await,
        StatusCode::UNAUTHORIZED,
    );

    // One email in its composed (NFC) and decomposed (NFD) forms registers once; an email
    // with an invisible formatting character (a zero-width space) is refused.
    let tag = Uuid::new_v4().simple().to_string();
    let composed = format!("jos\u{e9}-{tag}@example.com");
    let decomposed = format!("jose\u{301}-{tag}@example.com");
    let first = app
        .post(
            "/api/v2/customers",
            None,
            registration("Jos\u{e9}", &composed),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let second = app
        .post("/api/v2/customers", None, registration("Jose", &decomposed))
        .await;
    assert_problem(&second, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        second.body["errors"]["email"].is_array(),
        "{:?}",
        second.body
    );
    let invisible = format!("ada\u{200b}-{tag}@example.com");
    let refused = app
        .post("/api/v2/customers", None, registration("Ada", &invisible))
        .await;
    assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.body["errors"]["email"].is_array(),
        "{:?}",
        refused.body
    );
}

async fn bad_bodies_are_refused_with_their_status(app: TestApp) {
    let raw = |content_type: &str, body: String| {
        Request::builder()
            .method(Method::POST)
            .uri("/api/v2/customers")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let malformed = app
        .send(
            Listener::Public,
            raw("application/json", "{\"name\": ".to_owned()),
        )
        .await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST);
    let shape = app
        .send(
            Listener::Public,
            raw("application/json", "{\"name\": 5}".to_owned()),
        )
        .await;
    assert_problem(&shape, StatusCode::UNPROCESSABLE_ENTITY);
    let text = app
        .send(Listener::Public, raw("text/plain", "{}".to_owned()))
        .await;
    assert_problem(&text, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let mut huge = registration("Ada Lovelace", "huge@example.com");
    huge["name"] = json!("x".repeat(100 * 1024));
    let oversized = app
        .send(Listener::Public, raw("application/json", huge.to_string()))
        .await;
    assert_problem(&oversized, StatusCode::PAYLOAD_TOO_LARGE);
}

async fn updates_change_name_and_address_only(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let updated = app
        .put(
            "/api/v2/customers/update",
            token,
            json!({ "name": "Ada King", "shippingAddress": "1 Difference Engine Way" }),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["name"], "Ada King");
    let raise = app
        .put(
            "/api/v2/customers/update",
            token,
            json!({ "name": "Ada King", "shippingAddress": "1 Difference Engine Way", "creditLimit": 1000000 }),
        )
        .await;
    assert_problem(&raise, StatusCode::FORBIDDEN);
    let invalid = app
        .put(
            "/api/v2/customers/update",
            token,
            json!({ "name": "A", "shippingAddress": "1 Difference Engine Way" }),
        )
        .await;
    assert_problem(&invalid, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(invalid.body["errors"]["name"].is_array());
    let details = app.get("/api/v2/customers/details", token).await;
    assert_eq!(details.body["name"], "Ada King");
    assert_eq!(details.body["shippingAddress"], "1 Difference Engine Way");
    assert_eq!(details.body["creditLimit"], 5000.0);
    let history = app.get("/api/v2/customers/history", token).await;
    let types: Vec<_> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].clone())
        .collect();
    assert_eq!(
        types,
        [json!("CustomerRegistered"), json!("CustomerUpdated")]
    );
}

async fn machine_clients_change_the_credit_limit(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let m2m = app.m2m_token(None).await;
    let path = format!(
        "/api/v2/internal/customers/{}/credit-limit",
        ada.customer_id
    );
    let change = |token: String, body: serde_json::Value| {
        let (app, path) = (&app, path.clone());
        async move {
            app.call(
                Listener::Internal,
                Method::PUT,
                &path,
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let changed = change(
        m2m.clone(),
        json!({ "creditLimit": 7500.5, "currencyCode": "EUR" }),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let by_id = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/customers/{}", ada.customer_id),
            Some(&m2m),
            None,
        )
        .await;
    assert_eq!(by_id.status, StatusCode::OK);
    assert_eq!(
        (
            by_id.body["creditLimit"].clone(),
            by_id.body["currencyCode"].clone()
        ),
        (json!(7500.5), json!("EUR"))
    );

    assert_problem(
        &change(ada.access_token.clone(), json!({ "creditLimit": 1e6 })).await,
        StatusCode::FORBIDDEN,
    );
    let read_only = app.m2m_token(Some("read")).await;
    assert_problem(
        &change(read_only, json!({ "creditLimit": 1e6 })).await,
        StatusCode::FORBIDDEN,
    );
    assert_problem(
        &change(m2m.clone(), json!({ "creditLimit": 0 })).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    let missing = app
        .call(
            Listener::Internal,
            Method::PUT,
            &format!("/api/v2/internal/customers/{}/credit-limit", Uuid::new_v4()),
            Some(&m2m),
            Some(json!({ "creditLimit": 10 })),
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND);
    let history = app
        .get("/api/v2/customers/history", Some(&ada.access_token))
        .await;
    assert_eq!(
        history.body.as_array().unwrap().last().unwrap()["eventType"],
        "CreditLimitChanged"
    );
}

/// A NUL (or any control character) in a field is a 422 naming the field, on both wirings
/// (PostgreSQL's jsonb would refuse it), and nothing is stored.
async fn control_characters_are_refused_naming_the_field(app: TestApp) {
    let email = format!("nul-{}@example.com", Uuid::new_v4().simple());
    for (field, value) in [
        ("name", json!("Ada\u{0}Lovelace")),
        ("shippingAddress", json!("12 Analytical Row\u{1b}[31m")),
        ("email", json!(format!("{email}\u{0}"))),
    ] {
        let mut body = registration("Ada Lovelace", &email);
        body[field] = value;
        let refused = app.post("/api/v2/customers", None, body).await;
        assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            refused.body["errors"][field].is_array(),
            "names {field}: {:?}",
            refused.body
        );
    }
    // None of them registered: the email is still free.
    let registered = app
        .post(
            "/api/v2/customers",
            None,
            registration("Ada Lovelace", &email),
        )
        .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:?}",
        registered.body
    );
}
