//! Push notifications: an authenticated event stream of the caller's own order status changes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ecommerce::catalog::product_id;
use futures::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::on_both_backends;
use crate::support::{TestApp, assert_problem, place_order, terminal, wait_for_order};

on_both_backends!(customers_are_pushed_their_own_status_changes_only);

/// Reads events from an SSE body until `count` arrived or `timeout` passed.
async fn read_events(body: Body, count: usize, timeout: Duration) -> Vec<Value> {
    let mut stream = body.into_data_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < count {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await else {
            break;
        };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let data: String = frame
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            if !data.is_empty() {
                events.push(serde_json::from_str(&data).unwrap());
            }
        }
    }
    events
}

async fn customers_are_pushed_their_own_status_changes_only(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let bob = app.customer("Bob Babbage").await;
    assert_problem(
        &app.get("/api/v2/notifications", None).await,
        StatusCode::UNAUTHORIZED,
    );

    let subscribe = Request::builder()
        .uri("/api/v2/notifications")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", ada.access_token),
        )
        .body(Body::empty())
        .unwrap();
    let response = app.app.public_router().oneshot(subscribe).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );

    let bobs = place_order(&app, &bob, "USD", &[(product_id("Yoga Mat"), 1)]).await;
    let adas = place_order(&app, &ada, "USD", &[(product_id("Cycling Helmet"), 1)]).await;
    wait_for_order(&app, &ada, adas, Duration::from_secs(20), terminal).await;
    wait_for_order(&app, &bob, bobs, Duration::from_secs(20), terminal).await;

    let events = read_events(response.into_body(), 5, Duration::from_secs(2)).await;
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["Placed", "Processed", "Paid", "Shipped"],
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["orderId"] == serde_json::json!(adas))
    );
    assert!(
        events
            .iter()
            .all(|e| e["customerId"] == serde_json::json!(ada.customer_id))
    );

    // Reconnecting after the second event replays only what came after it.
    let second = events[1]["id"].as_u64().unwrap();
    let resume = Request::builder()
        .uri("/api/v2/notifications")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", ada.access_token),
        )
        .header("last-event-id", second.to_string())
        .body(Body::empty())
        .unwrap();
    let response = app.app.public_router().oneshot(resume).await.unwrap();
    let replayed = read_events(response.into_body(), 3, Duration::from_secs(1)).await;
    let statuses: Vec<&str> = replayed
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Paid", "Shipped"]);
}
