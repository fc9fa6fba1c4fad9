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
    ("get", "/api/v2/payments"),
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
    "StockMovement",
    "Problem",
    "CreateQuoteRequest",
    "QuoteCreated",
    "QuoteView",
    "SetItemRequest",
    "OrderAccepted",
    "OrderView",
    "PaymentView",
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

/// The statuses `operation` documents.
fn statuses(doc: &Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test]
async fn every_route_documents_the_errors_the_server_gives_it_and_its_field_rules() {
    let app = TestApp::memory().await;
    let doc = app.get("/api/v2/openapi.json", None).await.body;
    for (method, path) in routes_of(&doc) {
        let operation = &doc["paths"][&path][&method];
        let documented = statuses(&doc, &method, &path);
        let mut expected: Vec<&str> = Vec::new();
        if operation["requestBody"].is_object() {
            expected.extend(["400", "408", "413", "415", "422"]);
        }
        if path.contains('{') {
            expected.extend(["400", "404", "422"]);
        }
        if operation["security"]
            .as_array()
            .is_some_and(|requirements| !requirements.is_empty())
        {
            expected.extend(["401", "403"]);
        }
        if method != "get" {
            expected.push("409");
        }
        for status in expected {
            assert!(
                documented.iter().any(|s| s == status),
                "{method} {path} does not document {status}: {documented:?}"
            );
            let content = &operation["responses"][status]["content"];
            assert!(
                content["application/problem+json"].is_object(),
                "{method} {path} {status} is not a problem: {content}"
            );
        }
    }
    assert!(statuses(&doc, "post", "/api/v2/accounts/login").contains(&"429".to_owned()));
    assert!(statuses(&doc, "post", "/api/v2/customers").contains(&"503".to_owned()));
    // A history takes its page in the query and refuses what is out of range.
    let history = &doc["paths"]["/api/v2/customers/history"]["get"];
    let limit = history["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], 1000);
    // The field rules of a registration are in its schema.
    let register = &doc["components"]["schemas"]["RegisterCustomerRequest"]["properties"];
    assert_eq!(register["name"]["minLength"], 2);
    assert_eq!(register["name"]["maxLength"], 100);
    assert_eq!(register["password"]["minLength"], 5);
    assert_eq!(register["email"]["format"], "email");
    assert_eq!(register["creditLimit"]["maximum"], 1_000_000_000_000_f64);
    assert!(register["currencyCode"]["pattern"].is_string());
    let item = &doc["components"]["schemas"]["SetItemRequest"]["properties"]["quantity"];
    assert_eq!(
        (&item["minimum"], &item["maximum"]),
        (&serde_json::json!(1), &serde_json::json!(1_000_000))
    );
}
