//! The product catalog: prices in each currency, stock, ids.

use axum::http::StatusCode;
use ecommerce::catalog::product_id;
use serde_json::json;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{TestApp, assert_problem};

on_both_backends!(
    lists_every_product_in_usd,
    prices_convert_exactly,
    selects_products_by_id_and_refuses_bad_ids,
    the_catalog_needs_a_read_token,
);

async fn lists_every_product_in_usd(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let reply = app
        .post(
            "/api/v2/products",
            Some(&ada.access_token),
            json!({ "currencyCode": "USD", "productIds": [] }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let products = reply.body.as_array().unwrap();
    assert_eq!(products.len(), 20);
    let categories: std::collections::HashSet<_> = products
        .iter()
        .map(|p| p["category"].as_str().unwrap())
        .collect();
    assert_eq!(categories.len(), 4);
    for (index, product) in products.iter().enumerate() {
        for field in [
            "productId",
            "name",
            "category",
            "description",
            "imageUrl",
            "price",
        ] {
            assert!(!product[field].is_null(), "{field} in {product}");
        }
        assert_eq!(product["currencyCode"], "USD");
        assert_eq!(product["currencySymbol"], "$");
        assert_eq!(
            product["quantityInStock"],
            ecommerce::inventory::seeded_quantity(index),
            "stock from inventory"
        );
    }
    assert_eq!(products[0]["name"], "Mechanical Keyboard");
    assert_eq!(products[0]["price"], json!(89.99));
}

async fn prices_convert_exactly(app: TestApp) {
    let m2m = app.m2m_token(Some("read")).await;
    let keyboard = product_id("Mechanical Keyboard");
    let bottle = product_id("Water Bottle");
    for (currency, symbol, keyboard_price, bottle_price) in [
        ("CAD", "CA$", 118.79, 25.25), // 89.99 × 1.32 = 118.7868; 19.13 × 1.32 = 25.2516
        ("EUR", "€", 107.09, 22.76),   // 89.99 × 1.19 = 107.0881; 19.13 × 1.19 = 22.7647
    ] {
        let reply = app
            .post(
                "/api/v2/products",
                Some(&m2m),
                json!({ "currencyCode": currency, "productIds": [keyboard, bottle] }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let products = reply.body.as_array().unwrap();
        assert_eq!(products[0]["price"], json!(keyboard_price));
        assert_eq!(products[1]["price"], json!(bottle_price));
        assert_eq!(products[0]["currencySymbol"], symbol);
    }
}

async fn selects_products_by_id_and_refuses_bad_ids(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let yoga = product_id("Yoga Mat");
    let reply = app
        .post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "USD", "productIds": [yoga, yoga] }),
        )
        .await;
    let products = reply.body.as_array().unwrap();
    assert_eq!(products.len(), 1);
    assert_eq!(products[0]["productId"], json!(yoga));

    let unknown = Uuid::new_v4();
    let missing = app
        .post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "USD", "productIds": [yoga, unknown] }),
        )
        .await;
    assert_problem(&missing, StatusCode::NOT_FOUND);
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .contains(&unknown.to_string())
    );
    let nil = app
        .post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "USD", "productIds": [Uuid::nil()] }),
        )
        .await;
    assert_problem(&nil, StatusCode::UNPROCESSABLE_ENTITY);
    let currency = app
        .post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "GBP", "productIds": [] }),
        )
        .await;
    assert_problem(&currency, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(currency.body["errors"]["currencyCode"].is_array());
    let malformed = app
        .post(
            "/api/v2/products",
            token,
            json!({ "currencyCode": "USD", "productIds": ["42"] }),
        )
        .await;
    assert_problem(&malformed, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn the_catalog_needs_a_read_token(app: TestApp) {
    let body = json!({ "currencyCode": "USD", "productIds": [] });
    assert_problem(
        &app.post("/api/v2/products", None, body.clone()).await,
        StatusCode::UNAUTHORIZED,
    );
    let write_only = app.m2m_token(Some("write")).await;
    assert_problem(
        &app.post("/api/v2/products", Some(&write_only), body).await,
        StatusCode::FORBIDDEN,
    );
}

/// On PostgreSQL one read of the product table serves every caller for a second: a price
/// changed in the table (by an operator) is not seen at once, and is seen within it.
#[tokio::test]
async fn a_price_changed_in_the_table_shows_within_a_second() {
    let app = TestApp::postgres().await;
    let ada = app.customer("Ada Lovelace").await;
    let keyboard = product_id("Mechanical Keyboard");
    let price = || async {
        let reply = app
            .post(
                "/api/v2/products",
                Some(&ada.access_token),
                json!({ "currencyCode": "USD", "productIds": [keyboard] }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        reply.body[0]["price"].clone()
    };
    let first_read = std::time::Instant::now();
    assert_eq!(price().await, json!(89.99));
    let url = std::env::var("DATABASE_URL").unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let prefix = app.schema_prefix.as_deref().unwrap();
    let changed_at = std::time::Instant::now();
    client
        .execute(
            &format!(
                "UPDATE \"{prefix}_catalog\".products SET price_cents = 7999 WHERE product_id = $1"
            ),
            &[&keyboard],
        )
        .await
        .unwrap();
    let again = price().await;
    // Unless this machine took most of the second to get here, the first read still serves.
    if first_read.elapsed() < std::time::Duration::from_millis(800) {
        assert_eq!(again, json!(89.99), "read again within the second");
    }
    while price().await != json!(79.99) {
        assert!(
            changed_at.elapsed() < std::time::Duration::from_millis(1500),
            "the new price not seen within a second"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
