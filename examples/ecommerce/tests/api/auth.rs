//! The auth matrix: missing, tampered and expired tokens, roles, scopes, listeners and
//! ownership.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ecommerce::auth::{ACCESS_AUDIENCE, AccessClaims, ISSUER, Role};
use serde_json::json;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{Listener, TestApp, assert_problem};

on_both_backends!(
    tokens_are_required_and_verified,
    roles_and_scopes_are_policies,
    internal_routes_are_only_on_the_internal_listener,
    customers_see_only_their_own_data,
    health_and_readiness,
    token_hygiene,
);

fn claims(role: Role, scope: &str, customer_id: Option<Uuid>, exp_offset: i64) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        sub: Uuid::new_v4().to_string(),
        iss: ISSUER.to_owned(),
        aud: ACCESS_AUDIENCE.to_owned(),
        iat: now - 3600,
        exp: now + exp_offset,
        jti: Uuid::new_v4().to_string(),
        role,
        scope: scope.to_owned(),
        email: None,
        customer_id,
    }
}

async fn tokens_are_required_and_verified(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let details = "/api/v2/customers/details";
    assert_problem(&app.get(details, None).await, StatusCode::UNAUTHORIZED);

    let mut tampered = ada.access_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_problem(
        &app.get(details, Some(&tampered)).await,
        StatusCode::UNAUTHORIZED,
    );

    let expired = app
        .keys()
        .sign(&claims(Role::Customer, "read", Some(ada.customer_id), -600))
        .unwrap();
    let reply = app.get(details, Some(&expired)).await;
    assert_problem(&reply, StatusCode::UNAUTHORIZED);
    assert!(
        reply.body["detail"].as_str().unwrap().contains("xpired"),
        "{:?}",
        reply.body
    );

    let foreign = ecommerce::auth::TokenKeys::new(b"another-secret-of-another-issuer-0123456789")
        .unwrap()
        .sign(&claims(Role::Customer, "read", Some(ada.customer_id), 600))
        .unwrap();
    assert_problem(
        &app.get(details, Some(&foreign)).await,
        StatusCode::UNAUTHORIZED,
    );
    assert_problem(
        &app.get(details, Some("not.a.jwt")).await,
        StatusCode::UNAUTHORIZED,
    );

    let valid = app
        .keys()
        .sign(&claims(Role::Customer, "read", Some(ada.customer_id), 600))
        .unwrap();
    assert_eq!(app.get(details, Some(&valid)).await.status, StatusCode::OK);
}

async fn roles_and_scopes_are_policies(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let m2m = app.m2m_token(None).await;
    // A machine token is not a customer.
    assert_problem(
        &app.get("/api/v2/customers/details", Some(&m2m)).await,
        StatusCode::FORBIDDEN,
    );
    // A customer token without `write` cannot update.
    let read_only = app
        .keys()
        .sign(&claims(Role::Customer, "read", Some(ada.customer_id), 600))
        .unwrap();
    let update = app
        .put(
            "/api/v2/customers/update",
            Some(&read_only),
            json!({ "name": "Ada King", "shippingAddress": "1 Difference Engine Way" }),
        )
        .await;
    assert_problem(&update, StatusCode::FORBIDDEN);
    assert!(update.body["detail"].as_str().unwrap().contains("write"));
    // Without `read`, nothing can be read.
    let write_only = app
        .keys()
        .sign(&claims(Role::Customer, "write", Some(ada.customer_id), 600))
        .unwrap();
    assert_problem(
        &app.get("/api/v2/customers/details", Some(&write_only))
            .await,
        StatusCode::FORBIDDEN,
    );
    // A customer token on an internal route.
    let internal = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/customers/{}", ada.customer_id),
            Some(&ada.access_token),
            None,
        )
        .await;
    assert_problem(&internal, StatusCode::FORBIDDEN);
    // Account creation is internal and machine-only.
    let create = app
        .call(
            Listener::Internal,
            Method::POST,
            "/api/v2/internal/accounts",
            Some(&ada.access_token),
            Some(json!({ "email": "x@example.com", "password": "secret", "customerId": Uuid::new_v4() })),
        )
        .await;
    assert_problem(&create, StatusCode::FORBIDDEN);
}

async fn internal_routes_are_only_on_the_internal_listener(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let m2m = app.m2m_token(None).await;
    let by_id = format!("/api/v2/internal/customers/{}", ada.customer_id);
    let public = app
        .call(Listener::Public, Method::GET, &by_id, Some(&m2m), None)
        .await;
    assert_problem(&public, StatusCode::NOT_FOUND);
    let create = app
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/internal/accounts",
            Some(&m2m),
            Some(json!({ "email": "x@example.com", "password": "secret", "customerId": Uuid::new_v4() })),
        )
        .await;
    assert_problem(&create, StatusCode::NOT_FOUND);
    let internal = app
        .call(Listener::Internal, Method::GET, &by_id, Some(&m2m), None)
        .await;
    assert_eq!(internal.status, StatusCode::OK);
    assert_eq!(internal.body["email"], json!(ada.email));
    // Public routes are not on the internal listener either.
    let details = app
        .call(
            Listener::Internal,
            Method::GET,
            "/api/v2/customers/details",
            Some(&ada.access_token),
            None,
        )
        .await;
    assert_problem(&details, StatusCode::NOT_FOUND);
    // Malformed and nil ids.
    let malformed = app
        .call(
            Listener::Internal,
            Method::GET,
            "/api/v2/internal/customers/42",
            Some(&m2m),
            None,
        )
        .await;
    assert_problem(&malformed, StatusCode::BAD_REQUEST);
    let nil = app
        .call(
            Listener::Internal,
            Method::GET,
            &format!("/api/v2/internal/customers/{}", Uuid::nil()),
            Some(&m2m),
            None,
        )
        .await;
    assert_problem(&nil, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn customers_see_only_their_own_data(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    for (who, other) in [(&ada, &bob), (&bob, &ada)] {
        let details = app
            .get("/api/v2/customers/details", Some(&who.access_token))
            .await;
        assert_eq!(details.body["customerId"], json!(who.customer_id));
        let history = app
            .get("/api/v2/customers/history", Some(&who.access_token))
            .await;
        let text = history.body.to_string();
        assert!(text.contains(&who.customer_id.to_string()));
        assert!(!text.contains(&other.customer_id.to_string()));
        assert!(!text.contains(&other.email));
    }
}

async fn health_and_readiness(app: TestApp) {
    let health = app.get("/health", None).await;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );
    // Ready once every consumer has its partitions: a client polls.
    let mut ready = app.get("/ready", None).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while ready.status != StatusCode::OK {
        assert_problem(&ready, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {ready:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        ready = app.get("/ready", None).await;
    }
    assert_eq!(ready.body["backend"], json!(app.app.backend()));
    let missing = app.get("/api/v2/nowhere", None).await;
    assert_problem(&missing, StatusCode::NOT_FOUND);
}

/// Token responses are never cached; the bearer scheme is case-insensitive; why a token is
/// refused stays in the log; a route asked with a method it does not take answers 405 in
/// problem+json.
async fn token_hygiene(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let login = app.login(&ada.email, "secret-password").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(login.headers[header::CACHE_CONTROL], "no-store");
    let refreshed = app
        .post(
            "/api/v2/accounts/refresh",
            None,
            json!({ "refreshToken": ada.refresh_token }),
        )
        .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.headers[header::CACHE_CONTROL], "no-store");

    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = Request::get("/api/v2/orders")
            .header(
                header::AUTHORIZATION,
                format!("{scheme} {}", ada.access_token),
            )
            .body(Body::empty())
            .unwrap();
        let reply = app.send(Listener::Public, request).await;
        assert_eq!(reply.status, StatusCode::OK, "scheme {scheme}");
    }

    let tampered = format!("{}x", ada.access_token);
    let refused = app.get("/api/v2/orders", Some(&tampered)).await;
    assert_problem(&refused, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.body["detail"], "the access token is not valid");
    let garbage = app
        .post(
            "/api/v2/accounts/refresh",
            None,
            json!({ "refreshToken": "not-a-token" }),
        )
        .await;
    assert_problem(&garbage, StatusCode::UNAUTHORIZED);
    assert_eq!(garbage.body["detail"], "the refresh token is not valid");

    let wrong_method = app
        .call(
            Listener::Public,
            Method::DELETE,
            "/api/v2/quotes",
            None,
            None,
        )
        .await;
    assert_problem(&wrong_method, StatusCode::METHOD_NOT_ALLOWED);
}
