//! Inventory's routes: a product's history, and stock, reservations and releases for machines.

use axum::http::{Method, StatusCode};
use ecommerce::catalog::product_id;
use serde_json::json;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{Listener, TestApp, assert_problem};

on_both_backends!(stock_is_reserved_all_or_nothing_and_released);

async fn stock_is_reserved_all_or_nothing_and_released(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let m2m = app.m2m_token(None).await;
    let mat = product_id("Yoga Mat");
    let lamp = product_id("Desk Lamp");
    let stock = |product: Uuid| {
        let (app, m2m) = (&app, m2m.clone());
        async move {
            app.call(
                Listener::Internal,
                Method::GET,
                &format!("/api/v2/internal/inventory/{product}"),
                Some(&m2m),
                None,
            )
            .await
        }
    };
    let before = stock(mat).await;
    assert_eq!(before.status, StatusCode::OK);
    let available = before.body["quantity"].as_u64().unwrap();
    // Held for earlier orders (none on a fresh app; in the split suite, earlier scenarios').
    let reserved_before = before.body["reserved"].as_u64().unwrap();
    // The product's last movement so far (1, its entry, on a fresh app).
    let movements_before = app
        .get(
            &format!("/api/v2/inventory/{mat}/history?limit=1000"),
            Some(&ada.access_token),
        )
        .await;
    let v0 = movements_before.body.as_array().unwrap().last().unwrap()["version"]
        .as_u64()
        .unwrap();
    let reserve = |order: Uuid, lines: serde_json::Value| {
        let (app, m2m) = (&app, m2m.clone());
        async move {
            app.call(
                Listener::Internal,
                Method::POST,
                "/api/v2/internal/inventory/reservations",
                Some(&m2m),
                Some(json!({ "orderId": order, "lines": lines })),
            )
            .await
        }
    };
    let order = Uuid::new_v4();
    let refused = reserve(
        order,
        json!([{ "productId": mat, "quantity": 2 }, { "productId": lamp, "quantity": 100000 }]),
    )
    .await;
    assert_eq!(refused.body["status"], "Refused", "{:?}", refused.body);
    assert_eq!(
        stock(mat).await.body["quantity"].as_u64().unwrap(),
        available,
        "nothing held"
    );

    let order = Uuid::new_v4();
    let held = reserve(order, json!([{ "productId": mat, "quantity": 2 }])).await;
    assert_eq!(held.body["status"], "Reserved");
    let again = reserve(order, json!([{ "productId": mat, "quantity": 2 }])).await;
    assert_eq!(again.body["status"], "Reserved");
    let now = stock(mat).await.body;
    assert_eq!(
        (
            now["quantity"].as_u64().unwrap(),
            now["reserved"].as_u64().unwrap()
        ),
        (available - 2, reserved_before + 2)
    );
    let released = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &format!("/api/v2/internal/inventory/reservations/{order}"),
            Some(&m2m),
            None,
        )
        .await;
    assert_eq!(released.body["status"], "Released");
    assert_eq!(
        stock(mat).await.body["quantity"].as_u64().unwrap(),
        available
    );
    let unknown = app
        .call(
            Listener::Internal,
            Method::DELETE,
            &format!("/api/v2/internal/inventory/reservations/{}", Uuid::new_v4()),
            Some(&m2m),
            None,
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND);
    assert_problem(
        &reserve(Uuid::new_v4(), json!([{ "productId": mat, "quantity": 0 }])).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    );
    assert_problem(&stock(Uuid::new_v4()).await, StatusCode::NOT_FOUND);

    // A customer reads a product's history; machines and anonymous callers cannot.
    let history = app
        .get(
            &format!("/api/v2/inventory/{mat}/history?after={v0}"),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(history.status, StatusCode::OK);
    let movements = history.body.as_array().unwrap();
    let kinds: Vec<_> = movements
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("reserved", v0 + 1), ("released", v0 + 2)],
        "a refusal names only the products short of stock"
    );
    assert_eq!(movements[0]["quantity"], 2);
    // Stock movements only: the order that held the stock is not shown to other customers.
    let text = history.body.to_string();
    assert!(
        !text.contains(&order.to_string()) && !text.contains("orderId"),
        "{text}"
    );

    // Paginated: a full page links to the next one.
    let first = app
        .get(
            &format!("/api/v2/inventory/{mat}/history?after={}&limit=2", v0 - 1),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(first.body.as_array().unwrap().len(), 2);
    assert_eq!(
        first.headers["link"],
        format!("<?after={}&limit=2>; rel=\"next\"", v0 + 1).as_str()
    );
    let rest = app
        .get(
            &format!("/api/v2/inventory/{mat}/history?after={}&limit=2", v0 + 1),
            Some(&ada.access_token),
        )
        .await;
    assert_eq!(rest.body[0]["kind"], "released");
    assert_eq!(rest.body.as_array().unwrap().len(), 1);
    assert!(rest.headers.get("link").is_none());
    for bad in ["limit=0", "limit=1001", "limit=ten", "after=-1"] {
        let refused = app
            .get(
                &format!("/api/v2/inventory/{mat}/history?{bad}"),
                Some(&ada.access_token),
            )
            .await;
        assert_problem(&refused, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_problem(
        &app.get(
            &format!("/api/v2/inventory/{}/history", Uuid::new_v4()),
            Some(&ada.access_token),
        )
        .await,
        StatusCode::NOT_FOUND,
    );
    assert_problem(
        &app.get(&format!("/api/v2/inventory/{mat}/history"), None)
            .await,
        StatusCode::UNAUTHORIZED,
    );
    assert_problem(
        &app.get(&format!("/api/v2/inventory/{mat}/history"), Some(&m2m))
            .await,
        StatusCode::FORBIDDEN,
    );
    let customer_reserve = app
        .call(
            Listener::Internal,
            Method::POST,
            "/api/v2/internal/inventory/reservations",
            Some(&ada.access_token),
            Some(json!({ "orderId": Uuid::new_v4(), "lines": [] })),
        )
        .await;
    assert_problem(&customer_reserve, StatusCode::FORBIDDEN);
}
