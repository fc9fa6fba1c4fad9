//! Quotes: one open per customer, quantities, re-pricing, ownership on every id.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use ecommerce::catalog::{product_id, seed};
use serde_json::json;
use uuid::Uuid;

use crate::on_both_backends;
use crate::support::{Listener, TestApp, assert_problem};

on_both_backends!(
    a_quote_fills_and_prices,
    quote_rules_are_enforced,
    quotes_belong_to_their_customer,
    an_acknowledged_item_edit_is_in_the_order_or_refused,
    concurrent_edits_and_placements_never_fail_the_server,
    a_quote_is_a_stream_of_its_own_however_many_came_before,
    two_quotes_opened_at_once_leave_one_open
);

async fn a_quote_fills_and_prices(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    assert_problem(
        &app.get("/api/v2/quotes", token).await,
        StatusCode::NOT_FOUND,
    );
    let created = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "CAD" }))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let quote_id = created.body["quoteId"].as_str().unwrap().to_owned();
    let items = format!("/api/v2/quotes/{quote_id}/items");
    let keyboard = product_id("Mechanical Keyboard");
    let press = product_id("French Press");
    app.put(
        &items,
        token,
        json!({ "productId": keyboard, "quantity": 1 }),
    )
    .await;
    let set = app
        .put(
            &items,
            token,
            json!({ "productId": keyboard, "quantity": 3 }),
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    app.put(&items, token, json!({ "productId": press, "quantity": 2 }))
        .await;
    let quote = app.get("/api/v2/quotes", token).await;
    assert_eq!(quote.status, StatusCode::OK);
    assert_eq!(quote.body["quoteId"], json!(quote_id));
    assert_eq!(quote.body["customerId"], json!(ada.customer_id));
    assert_eq!(quote.body["quoteStatus"], "Open");
    assert_eq!(quote.body["currencyCode"], "CAD");
    assert_eq!(quote.body["currencySymbol"], "CA$");
    assert!(quote.body["createdAt"].is_string());
    let items_json = quote.body["items"].as_array().unwrap();
    assert_eq!(items_json.len(), 2);
    assert_eq!(items_json[0]["quantity"], 3);
    assert_eq!(items_json[0]["unitPrice"], json!(118.79));
    assert_eq!(items_json[1]["unitPrice"], json!(35.81)); // 27.13 × 1.32 = 35.8116
    assert_eq!(quote.body["totalPrice"], json!(427.99)); // 3 × 118.79 + 2 × 35.81
    let removed = app
        .call(
            Listener::Public,
            Method::DELETE,
            &format!("/api/v2/quotes/{quote_id}/items/{press}"),
            token,
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    assert_eq!(removed.body["items"].as_array().unwrap().len(), 1);
    let history = app
        .get(&format!("/api/v2/quotes/{quote_id}/history"), token)
        .await;
    let types: Vec<_> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "QuoteCreated",
            "QuoteItemAdded",
            "QuoteItemQuantityChanged",
            "QuoteItemAdded",
            "QuoteItemRemoved"
        ]
    );
}

async fn quote_rules_are_enforced(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let created = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
        .await;
    let quote_id = created.body["quoteId"].as_str().unwrap().to_owned();
    let second = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
        .await;
    assert_problem(&second, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        second.body["message"]
            .as_str()
            .unwrap()
            .contains("already open")
    );
    let items = format!("/api/v2/quotes/{quote_id}/items");
    let mat = product_id("Yoga Mat");
    for quantity in [0, -3] {
        let bad = app
            .put(
                &items,
                token,
                json!({ "productId": mat, "quantity": quantity }),
            )
            .await;
        assert_problem(&bad, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad.body["errors"]["quantity"].is_array());
    }
    let unknown = app
        .put(
            &items,
            token,
            json!({ "productId": Uuid::new_v4(), "quantity": 1 }),
        )
        .await;
    assert_problem(&unknown, StatusCode::NOT_FOUND);
    let currency = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "JPY" }))
        .await;
    assert_problem(&currency, StatusCode::UNPROCESSABLE_ENTITY);
    // Quantities are bounded, and each bound says what it is.
    for (quantity, says) in [
        (0, "greater than zero"),
        (-3, "greater than zero"),
        (4_294_967_296_i64, "at most 1000000"),
        (1_000_001, "at most 1000000"),
    ] {
        let reply = app
            .put(
                &items,
                token,
                json!({ "productId": mat, "quantity": quantity }),
            )
            .await;
        assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        let message = reply.body["errors"]["quantity"][0]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains(says), "{quantity}: {:?}", reply.body);
    }
    // Confirming needs an item.
    let empty = app
        .post(
            &format!("/api/v2/orders/quote/{quote_id}"),
            token,
            json!({}),
        )
        .await;
    assert_problem(&empty, StatusCode::UNPROCESSABLE_ENTITY);
    let missing_item = app
        .call(
            Listener::Public,
            Method::DELETE,
            &format!("/api/v2/quotes/{quote_id}/items/{mat}"),
            token,
            None,
        )
        .await;
    assert_problem(&missing_item, StatusCode::UNPROCESSABLE_ENTITY);
    // Cancelled: nothing changes any more, and a new quote can be opened.
    let cancelled = app
        .call(
            Listener::Public,
            Method::DELETE,
            &format!("/api/v2/quotes/{quote_id}"),
            token,
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    let after = app
        .put(&items, token, json!({ "productId": mat, "quantity": 1 }))
        .await;
    assert_problem(&after, StatusCode::UNPROCESSABLE_ENTITY);
    let again = app
        .call(
            Listener::Public,
            Method::DELETE,
            &format!("/api/v2/quotes/{quote_id}"),
            token,
            None,
        )
        .await;
    assert_problem(&again, StatusCode::UNPROCESSABLE_ENTITY);
    let place = app
        .post(
            &format!("/api/v2/orders/quote/{quote_id}"),
            token,
            json!({}),
        )
        .await;
    assert_problem(&place, StatusCode::UNPROCESSABLE_ENTITY);
    let fresh = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "EUR" }))
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
}

async fn quotes_belong_to_their_customer(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    let created = app
        .post(
            "/api/v2/quotes",
            Some(&ada.access_token),
            json!({ "currencyCode": "USD" }),
        )
        .await;
    let quote_id = created.body["quoteId"].as_str().unwrap().to_owned();
    let mat = product_id("Yoga Mat");
    let bob_token = Some(bob.access_token.as_str());
    let attempts = [
        (
            Method::PUT,
            format!("/api/v2/quotes/{quote_id}/items"),
            Some(json!({ "productId": mat, "quantity": 1 })),
        ),
        (
            Method::DELETE,
            format!("/api/v2/quotes/{quote_id}/items/{mat}"),
            None,
        ),
        (Method::DELETE, format!("/api/v2/quotes/{quote_id}"), None),
        (
            Method::GET,
            format!("/api/v2/quotes/{quote_id}/history"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v2/orders/quote/{quote_id}"),
            Some(json!({})),
        ),
    ];
    for (method, path, body) in attempts {
        let reply = app
            .call(Listener::Public, method.clone(), &path, bob_token, body)
            .await;
        assert_problem(&reply, StatusCode::NOT_FOUND);
    }
    assert_problem(
        &app.get("/api/v2/quotes", bob_token).await,
        StatusCode::NOT_FOUND,
    );
    let m2m = app.m2m_token(None).await;
    assert_problem(
        &app.get("/api/v2/quotes", Some(&m2m)).await,
        StatusCode::FORBIDDEN,
    );
    let still = app.get("/api/v2/quotes", Some(&ada.access_token)).await;
    assert_eq!(still.body["items"], json!([]));
}

/// An item edit racing the order's placement: whichever commits first, an edit the server
/// acknowledged is in the order, and an edit that lost the race is refused (the quote is
/// confirmed). Each trial sends both at once, half of them the placement first.
async fn an_acknowledged_item_edit_is_in_the_order_or_refused(app: TestApp) {
    let keyboard = product_id("Mechanical Keyboard");
    let mat = product_id("Yoga Mat");
    let (mut included, mut refused) = (0, 0);
    for trial in 0..24 {
        let ada = app.customer("Ada Lovelace").await;
        let token = Some(ada.access_token.as_str());
        let quote = app
            .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
            .await;
        let quote_id = quote.body["quoteId"].as_str().unwrap().to_owned();
        let items = format!("/api/v2/quotes/{quote_id}/items");
        let first = app
            .put(
                &items,
                token,
                json!({ "productId": keyboard, "quantity": 1 }),
            )
            .await;
        assert_eq!(first.status, StatusCode::OK);
        // Every other trial the edit starts 0 to 10 ms after the placement: an edit alone is
        // quicker than a placement (which first reads where the order goes), so without the
        // stagger it would win every race.
        let stagger = Duration::from_millis(2 * (trial / 2 % 6));
        let edit = async {
            if trial % 2 == 1 {
                tokio::time::sleep(stagger).await;
            }
            app.put(&items, token, json!({ "productId": mat, "quantity": 2 }))
                .await
        };
        let place_path = format!("/api/v2/orders/quote/{quote_id}");
        let place = app.post(&place_path, token, json!({}));
        let (edit, place) = if trial % 2 == 0 {
            tokio::join!(edit, place)
        } else {
            let (place, edit) = tokio::join!(place, edit);
            (edit, place)
        };
        assert_eq!(place.status, StatusCode::ACCEPTED, "{:?}", place.body);
        let order_id = place.body["orderId"].as_str().unwrap().to_owned();
        let orders = app.get("/api/v2/orders", token).await;
        let order = orders
            .body
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["orderId"] == json!(order_id))
            .unwrap_or_else(|| panic!("order {order_id} not listed: {:?}", orders.body))
            .clone();
        let has_mat = order["orderLines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|line| line["productId"] == json!(mat) && line["quantity"] == 2);
        if edit.status == StatusCode::OK {
            assert!(has_mat, "an acknowledged edit is missing from {order}");
            included += 1;
        } else {
            assert_problem(&edit, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(!has_mat, "a refused edit is in {order}");
            refused += 1;
        }
    }
    // Both orders of the race happened: edits that won and edits that lost.
    assert!(
        included > 0 && refused > 0,
        "{included} included, {refused} refused"
    );
}

/// Eight edits of one quote at once, then four placements of it at once: every edit is
/// applied (the quote retries its conflicts), and every placement answers the same order (or
/// a 409 to try again), never a 5xx.
async fn concurrent_edits_and_placements_never_fail_the_server(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let quote = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
        .await;
    let quote_id = quote.body["quoteId"].as_str().unwrap().to_owned();
    let items = format!("/api/v2/quotes/{quote_id}/items");
    let products: Vec<Uuid> = seed().iter().take(8).map(|p| p.product_id).collect();
    let edits = futures::future::join_all(products.iter().map(|product| {
        app.put(
            &items,
            token,
            json!({ "productId": product, "quantity": 1 }),
        )
    }))
    .await;
    for edit in &edits {
        assert_eq!(edit.status, StatusCode::OK, "{:?}", edit.body);
    }
    let current = app.get("/api/v2/quotes", token).await;
    assert_eq!(current.body["items"].as_array().unwrap().len(), 8);
    let place_path = format!("/api/v2/orders/quote/{quote_id}");
    let placements =
        futures::future::join_all((0..4).map(|_| app.post(&place_path, token, json!({})))).await;
    let mut orders: Vec<String> = Vec::new();
    for placed in &placements {
        match placed.status {
            StatusCode::ACCEPTED => {
                orders.push(placed.body["orderId"].as_str().unwrap().to_owned())
            }
            StatusCode::CONFLICT => assert_problem(placed, StatusCode::CONFLICT),
            other => panic!("placement answered {other}: {:?}", placed.body),
        }
    }
    orders.dedup();
    assert_eq!(orders.len(), 1, "one order for one quote: {orders:?}");
}

async fn a_quote_is_a_stream_of_its_own_however_many_came_before(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = Some(ada.access_token.as_str());
    let mat = product_id("Yoga Mat");
    let mut quotes = Vec::new();
    for _ in 0..30 {
        let created = app
            .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let quote_id = created.body["quoteId"].as_str().unwrap().to_owned();
        let set = app
            .put(
                &format!("/api/v2/quotes/{quote_id}/items"),
                token,
                json!({ "productId": mat, "quantity": 1 }),
            )
            .await;
        assert_eq!(set.status, StatusCode::OK);
        let cancelled = app
            .call(
                Listener::Public,
                Method::DELETE,
                &format!("/api/v2/quotes/{quote_id}"),
                token,
                None,
            )
            .await;
        assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
        quotes.push(quote_id);
    }
    // The 31st quote's history is its own three events, numbered from one: nothing of the 30
    // before it is read to decide on it or to show it.
    let created = app
        .post("/api/v2/quotes", token, json!({ "currencyCode": "USD" }))
        .await;
    let quote_id = created.body["quoteId"].as_str().unwrap().to_owned();
    let history = app
        .get(&format!("/api/v2/quotes/{quote_id}/history"), token)
        .await;
    let versions: Vec<_> = history
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["eventType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(versions, [(1, "QuoteCreated".to_owned())]);
    // An old quote keeps its history and still refuses changes as closed.
    let old = &quotes[0];
    let history = app
        .get(&format!("/api/v2/quotes/{old}/history"), token)
        .await;
    assert_eq!(history.body.as_array().unwrap().len(), 3);
    let late = app
        .put(
            &format!("/api/v2/quotes/{old}/items"),
            token,
            json!({ "productId": mat, "quantity": 2 }),
        )
        .await;
    assert_problem(&late, StatusCode::UNPROCESSABLE_ENTITY);
    let current = app.get("/api/v2/quotes", token).await;
    assert_eq!(current.body["quoteId"], json!(quote_id));
}

async fn two_quotes_opened_at_once_leave_one_open(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let token = ada.access_token.clone();
    let opened = futures::future::join_all((0..6).map(|_| {
        let (app, token) = (&app, token.clone());
        async move {
            app.post(
                "/api/v2/quotes",
                Some(&token),
                json!({ "currencyCode": "USD" }),
            )
            .await
        }
    }))
    .await;
    let created: Vec<_> = opened
        .iter()
        .filter(|reply| reply.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{opened:?}");
    for reply in opened.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_problem(reply, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let current = app.get("/api/v2/quotes", Some(&token)).await;
    assert_eq!(current.body["quoteId"], created[0].body["quoteId"]);
}
