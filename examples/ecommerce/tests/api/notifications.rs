//! Push notifications: an authenticated event stream of the caller's own order status changes.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use ecommerce::auth::{ACCESS_AUDIENCE, AccessClaims, ISSUER, Role};
use ecommerce::catalog::product_id;
use futures::StreamExt;
use serde_json::Value;

use crate::on_both_backends;
use crate::support::{Listener, TestApp, assert_problem, place_order, terminal, wait_for_order};

on_both_backends!(
    customers_are_pushed_their_own_status_changes_only,
    notification_streams_are_bounded_and_end_with_their_token,
);

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
    let response = app.respond(Listener::Public, subscribe).await;
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
    let response = app.respond(Listener::Public, resume).await;
    let replayed = read_events(response.into_body(), 3, Duration::from_secs(1)).await;
    let statuses: Vec<&str> = replayed
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["Paid", "Shipped"]);
}

async fn subscribe(app: &TestApp, token: &str) -> axum::response::Response {
    let request = Request::builder()
        .uri("/api/v2/notifications")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.respond(Listener::Public, request).await
}

/// A customer holds at most five streams open (the sixth is a 429 with `Retry-After` until
/// one closes), and a stream ends when the token that opened it expires.
async fn notification_streams_are_bounded_and_end_with_their_token(app: TestApp) {
    let ada = app.customer("Ada Lovelace").await;
    let mut open = Vec::new();
    for _ in 0..ecommerce::orders::MAX_STREAMS_PER_CUSTOMER {
        let response = subscribe(&app, &ada.access_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    let refused = subscribe(&app, &ada.access_token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    // Another customer is not affected; a closed stream frees its slot.
    let bob = app.customer("Bob Babbage").await;
    assert_eq!(
        subscribe(&app, &bob.access_token).await.status(),
        StatusCode::OK
    );
    drop(open.pop());
    // The slot is freed once the server sees the stream closed: at once in process, a moment
    // later through the gateway (which closes its own request to the service when the client
    // goes).
    let closed_at = std::time::Instant::now();
    let mut again = subscribe(&app, &ada.access_token).await;
    while again.status() == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            closed_at.elapsed() < Duration::from_secs(3),
            "a closed stream's slot was not freed within 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        again = subscribe(&app, &ada.access_token).await;
    }
    assert_eq!(again.status(), StatusCode::OK);
    drop(again);
    drop(open);

    // A token that expires in two seconds: its stream ends then.
    let now = chrono::Utc::now().timestamp();
    let short = app
        .keys()
        .sign(&AccessClaims {
            sub: ada.customer_id.to_string(),
            iss: ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now,
            exp: now + 2,
            jti: uuid::Uuid::new_v4().to_string(),
            role: Role::Customer,
            scope: "read".to_owned(),
            email: None,
            customer_id: Some(ada.customer_id),
        })
        .unwrap();
    let response = subscribe(&app, &short).await;
    assert_eq!(response.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let mut body = response.into_body().into_data_stream();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    assert!(
        started.elapsed() <= Duration::from_secs(4),
        "ended after {:?}",
        started.elapsed()
    );
}
