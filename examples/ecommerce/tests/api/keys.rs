//! The key store over HTTP (`HttpKeyStore` against the customers service's key routes, on real
//! sockets) passes the key-store contract every store passes; the routes want a machine token
//! with the `keys` scope.

use axum::http::{Method, StatusCode};
use ecommerce::remote::ServiceClient;
use ecommerce::remote::keys::HttpKeyStore;
use serde_json::json;

use crate::support::{Listener, TestApp, assert_problem, development_tokens};

/// A key store over HTTP, of an app of its own served on real sockets.
async fn fresh() -> HttpKeyStore {
    let app = TestApp::memory().await;
    let (public, internal) = app.serve_on_sockets().await;
    HttpKeyStore(ServiceClient::new(
        "customers",
        &internal,
        development_tokens(&public),
    ))
}

mod contract {
    es_core::key_store_contract_tests!(super::fresh());
}

#[tokio::test]
async fn the_key_routes_want_the_keys_scope() {
    let app = TestApp::memory().await;
    let reader = app.m2m_token(Some("read write delete")).await;
    let body = json!({ "subject": "customer-1" });
    let refused = app
        .call(
            Listener::Internal,
            Method::POST,
            "/api/v2/internal/keys/current",
            Some(&reader),
            Some(body.clone()),
        )
        .await;
    assert_problem(&refused, StatusCode::FORBIDDEN);
    let ada = app.customer("Ada Lovelace").await;
    let customer = app
        .call(
            Listener::Internal,
            Method::POST,
            "/api/v2/internal/keys/current",
            Some(&ada.access_token),
            Some(body.clone()),
        )
        .await;
    assert_problem(&customer, StatusCode::FORBIDDEN);
    let keys = app.m2m_token(Some("keys")).await;
    let granted = app
        .call(
            Listener::Internal,
            Method::POST,
            "/api/v2/internal/keys/current",
            Some(&keys),
            Some(body),
        )
        .await;
    assert_eq!(granted.status, StatusCode::OK, "{:?}", granted.body);
    assert_eq!(granted.body["version"], 1);
    // Not on the public listener.
    let public = app
        .call(
            Listener::Public,
            Method::POST,
            "/api/v2/internal/keys/current",
            Some(&keys),
            Some(json!({ "subject": "customer-1" })),
        )
        .await;
    assert_problem(&public, StatusCode::NOT_FOUND);
}
