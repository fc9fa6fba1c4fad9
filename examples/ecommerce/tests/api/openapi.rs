//! The OpenAPI documents agree with the routers.

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Listener, TestApp};

/// Every public route of the spec built so far.
const PUBLIC_ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v2/accounts/login"),
    ("post", "/api/v2/accounts/refresh"),
    ("post", "/api/v2/accounts/token"),
    ("post", "/api/v2/customers"),
    ("get", "/api/v2/customers/details"),
    ("get", "/api/v2/customers/history"),
    ("put", "/api/v2/customers/update"),
    ("post", "/api/v2/products"),
    ("get", "/api/v2/inventory/{id}/history"),
    ("get", "/api/v2/quotes"),
    ("post", "/api/v2/quotes"),
    ("put", "/api/v2/quotes/{id}/items"),
    ("delete", "/api/v2/quotes/{id}/items/{productId}"),
    ("delete", "/api/v2/quotes/{id}"),
    ("get", "/api/v2/quotes/{id}/history"),
    ("get", "/api/v2/orders"),
    ("post", "/api/v2/orders/quote/{id}"),
    ("get", "/api/v2/orders/{id}/history"),
    ("post", "/api/v2/orders/{id}/cancel"),
    ("post", "/api/v2/orders/{id}/confirm-delivery"),
    ("get", "/api/v2/notifications"),
];

/// The wire shapes of the spec, as schemas.
const SCHEMAS: &[&str] = &[
    "RegisterCustomerRequest",
    "CustomerCreated",
    "CustomerDetails",
    "UpdateCustomerRequest",
    "LoginRequest",
    "RefreshRequest",
    "TokenResponse",
    "ClientTokenRequest",
    "ClientTokenResponse",
    "ProductsRequest",
    "ProductView",
    "HistoryEntry",
    "Problem",
    "CreateQuoteRequest",
    "QuoteCreated",
    "QuoteView",
    "SetItemRequest",
    "OrderAccepted",
    "OrderView",
];

fn routes_of(doc: &Value) -> Vec<(String, String)> {
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.clone(), path.clone()));
        }
    }
    routes
}

/// Fills `{id}`-style parameters with a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn answers(app: &TestApp, listener: Listener, method: &str, path: &str) -> bool {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let reply = app
        .call(listener, method, &concrete(path), None, None)
        .await;
    let unrouted = reply.status == StatusCode::METHOD_NOT_ALLOWED
        || (reply.status == StatusCode::NOT_FOUND
            && reply.body["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("no route")));
    !unrouted
}

#[tokio::test]
async fn the_public_document_lists_every_public_route_and_nothing_else() {
    let app = TestApp::memory().await;
    let reply = app.get("/api/v2/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = routes_of(&doc);
    for (method, path) in PUBLIC_ROUTES {
        assert!(
            documented.contains(&((*method).to_owned(), (*path).to_owned())),
            "{method} {path} is not documented"
        );
    }
    for (method, path) in &documented {
        assert!(!path.contains("/internal/"), "{path} is internal");
        assert!(
            answers(&app, Listener::Public, method, path).await,
            "{method} {path} is documented but not routed"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in SCHEMAS {
        assert!(schemas.contains_key(*schema), "schema {schema} missing");
    }
    let register = &schemas["RegisterCustomerRequest"]["properties"];
    for field in [
        "name",
        "email",
        "password",
        "passwordConfirm",
        "shippingAddress",
        "creditLimit",
    ] {
        assert!(
            register.get(field).is_some(),
            "RegisterCustomerRequest.{field}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_internal_document_lists_every_internal_route() {
    let app = TestApp::memory().await;
    let reply = app
        .call(
            Listener::Internal,
            Method::GET,
            "/api/v2/internal/openapi.json",
            None,
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let documented = routes_of(&reply.body);
    assert!(documented.len() >= 4, "{documented:?}");
    for (method, path) in &documented {
        assert!(path.starts_with("/api/v2/internal/"), "{path}");
        assert!(
            answers(&app, Listener::Internal, method, path).await,
            "{method} {path} is documented but not routed"
        );
        assert!(
            !answers(&app, Listener::Public, method, path).await,
            "{method} {path} is on the public listener"
        );
    }
}
