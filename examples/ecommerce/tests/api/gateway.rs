//! The gateway over real sockets: in front of the app (every service at one address), and in
//! front of small upstreams that show what it forwards, how it streams, and how it answers a
//! slow, down or oversized call.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use ecommerce::gateway::{Gateway, Route, RouteTable, Service};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{TestApp, registration};

type Http = Client<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(
    http: &Http,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    if !bytes.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let response = http
        .request(request.body(Full::new(Bytes::from(bytes))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

async fn serve_router(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn serve_gateway(table: RouteTable) -> String {
    let gateway = Gateway::new(table).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        gateway
            .serve(listener, std::future::pending())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

fn route(path: &str, service: &str) -> Route {
    Route {
        path: path.to_owned(),
        service: service.to_owned(),
        timeout_seconds: None,
        body_limit_bytes: None,
    }
}

fn services(pairs: &[(&str, String)]) -> BTreeMap<String, Service> {
    pairs
        .iter()
        .map(|(name, url)| ((*name).to_owned(), Service { url: url.clone() }))
        .collect()
}

/// The shipped table, with every service at `url`.
fn shipped_table_at(url: &str) -> RouteTable {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.json");
    let mut table = RouteTable::load(&path).expect("the shipped route table loads");
    for service in table.services.values_mut() {
        service.url = url.to_owned();
    }
    table
}

#[tokio::test]
async fn the_public_api_works_through_the_gateway_and_the_internal_one_does_not() {
    let app = TestApp::memory().await;
    let (app_url, _) = app.serve_on_sockets().await;
    let gateway = serve_gateway(shipped_table_at(&app_url)).await;
    let http = http();

    let email = format!("ada-{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = send(
        &http,
        "POST",
        &format!("{gateway}/api/v2/customers"),
        &[],
        Some(registration("Ada Lovelace", &email)),
    )
    .await;
    assert_eq!(
        registered.status,
        StatusCode::CREATED,
        "{:?}",
        registered.body
    );
    let tokens = send(
        &http,
        "POST",
        &format!("{gateway}/api/v2/accounts/login"),
        &[],
        Some(json!({ "email": email, "password": "secret-password" })),
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    let bearer = format!("Bearer {}", tokens.body["accessToken"].as_str().unwrap());
    let details = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/customers/details"),
        &[("authorization", &bearer), ("x-request-id", "req-42")],
        None,
    )
    .await;
    assert_eq!(details.status, StatusCode::OK, "{:?}", details.body);
    assert_eq!(details.body["email"], json!(email));
    assert_eq!(details.headers["x-request-id"], "req-42");
    let anonymous = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/customers/details"),
        &[],
        None,
    )
    .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers["content-type"],
        "application/problem+json"
    );

    // Internal routes are not reachable, even with a machine token.
    let machine = format!("Bearer {}", app.m2m_token(None).await);
    for path in [
        "/api/v2/internal/status".to_owned(),
        format!(
            "/api/v2/internal/customers/{}",
            registered.body["customerId"].as_str().unwrap()
        ),
        "/api/v2/%69nternal/status".to_owned(),
    ] {
        let refused = send(
            &http,
            "GET",
            &format!("{gateway}{path}"),
            &[("authorization", &machine)],
            None,
        )
        .await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{path}");
    }
    let unrouted = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/elsewhere"),
        &[],
        None,
    )
    .await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    assert_eq!(unrouted.headers["content-type"], "application/problem+json");

    // Health of every service; the merged document has every public path the app
    // documents, and no internal one.
    let health = send(&http, "GET", &format!("{gateway}/health"), &[], None).await;
    assert_eq!(health.status, StatusCode::OK, "{:?}", health.body);
    assert_eq!(health.body["services"].as_object().unwrap().len(), 8);
    let document = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/openapi.json"),
        &[],
        None,
    )
    .await;
    assert_eq!(document.status, StatusCode::OK);
    let served_paths: Vec<&String> = document.body["paths"].as_object().unwrap().keys().collect();
    let documented = app.app.public_openapi();
    for path in documented.paths.paths.keys() {
        assert!(
            served_paths.contains(&path),
            "{path} is documented by the app but not routed"
        );
    }
    assert!(
        served_paths
            .iter()
            .all(|p| !p.starts_with("/api/v2/internal"))
    );
}

/// An upstream that shows what reached it, answers slowly, and streams.
fn upstream() -> Router {
    async fn echo(headers: HeaderMap) -> axum::Json<Value> {
        let seen: BTreeMap<String, String> = headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        axum::Json(json!(seen))
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(3)).await;
        "late"
    }
    async fn stream() -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
        let events = async_stream_events();
        Sse::new(events)
    }
    Router::new()
        .route("/api/v2/echo", get(echo))
        .route("/api/v2/slow", get(slow))
        .route("/api/v2/stream", get(stream))
        .route("/api/v2/big", post(|| async { "taken" }))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/api/v2/openapi.json",
            get(|| async {
                axum::Json(json!({
                    "openapi": "3.1.0",
                    "info": { "title": "upstream", "version": "1" },
                    "paths": { "/api/v2/echo": { "get": {} }, "/api/v2/hidden": { "get": {} } },
                    "components": { "schemas": { "Echo": { "type": "object" } } },
                }))
            }),
        )
}

/// Two events 800 ms apart.
fn async_stream_events() -> impl futures::Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(0, |n| async move {
        match n {
            0 => Some((Ok(Event::default().data("first")), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                Some((Ok(Event::default().data("second")), 2))
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn the_gateway_forwards_streams_and_answers_for_services_that_fail() {
    let up = format!("http://{}", serve_router(upstream()).await);
    let down = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    };
    let mut slow = route("/api/v2/slow", "up");
    slow.timeout_seconds = Some(1);
    let mut big = route("/api/v2/big", "up");
    big.body_limit_bytes = Some(16);
    let table = RouteTable {
        services: services(&[("up", up.clone()), ("down", down)]),
        routes: vec![
            route("/api/v2/echo", "up"),
            route("/api/v2/stream", "up"),
            slow,
            big,
            route("/api/v2/gone", "down"),
        ],
        timeout_seconds: 10,
        body_limit_bytes: 1024,
    };
    let gateway = serve_gateway(table).await;
    let http = http();

    // What reaches the service: the caller's authorization, request id and trace context,
    // the caller's address; not the hop-by-hop headers.
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let echoed = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/echo?x=1"),
        &[
            ("authorization", "Bearer abc"),
            ("x-request-id", "req-7"),
            ("traceparent", traceparent),
            ("connection", "x-private"),
            ("x-private", "secret"),
        ],
        None,
    )
    .await;
    assert_eq!(echoed.status, StatusCode::OK);
    assert_eq!(echoed.body["authorization"], "Bearer abc");
    assert_eq!(echoed.body["x-request-id"], "req-7");
    assert_eq!(echoed.body["traceparent"], traceparent);
    assert_eq!(echoed.body["x-forwarded-for"], "127.0.0.1");
    assert!(echoed.body.get("x-private").is_none(), "{:?}", echoed.body);
    // Without a request id, one is made and sent both ways.
    let made = send(&http, "GET", &format!("{gateway}/api/v2/echo"), &[], None).await;
    let id = made.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.body["x-request-id"], json!(id));

    // A stream flows as it comes: the first event before the second is sent.
    let started = Instant::now();
    let response = http
        .request(
            hyper::Request::get(format!("{gateway}/api/v2/stream"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("first"));
    assert!(
        first_at < Duration::from_millis(600),
        "the first event waited: {first_at:?}"
    );
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("second"));
    assert!(started.elapsed() >= Duration::from_millis(800));

    // A slow service: 504 after its route's second; a service that is down: 503; a body
    // over its route's limit: 413, never forwarded.
    let started = Instant::now();
    let late = send(&http, "GET", &format!("{gateway}/api/v2/slow"), &[], None).await;
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(late.headers["content-type"], "application/problem+json");
    let gone = send(&http, "GET", &format!("{gateway}/api/v2/gone/7"), &[], None).await;
    assert_eq!(gone.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(gone.headers["content-type"], "application/problem+json");
    assert_eq!(gone.headers["retry-after"], "1");
    assert!(gone.body["detail"].as_str().unwrap().contains("down"));
    let oversized = send(
        &http,
        "POST",
        &format!("{gateway}/api/v2/big"),
        &[],
        Some(json!({ "text": "more than sixteen bytes" })),
    )
    .await;
    assert_eq!(oversized.status, StatusCode::PAYLOAD_TOO_LARGE);
    let small = send(
        &http,
        "POST",
        &format!("{gateway}/api/v2/big"),
        &[],
        Some(json!(1)),
    )
    .await;
    assert_eq!(small.status, StatusCode::OK);

    // Health names the service that is down; the document keeps only routed paths.
    let health = send(&http, "GET", &format!("{gateway}/health"), &[], None).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.body["status"], "unavailable");
    assert_eq!(health.body["services"]["up"]["status"], "ok");
    assert_eq!(health.body["services"]["down"]["status"], "unreachable");
    let document = send(
        &http,
        "GET",
        &format!("{gateway}/api/v2/openapi.json"),
        &[],
        None,
    )
    .await;
    // The down service has no public document: the whole one cannot be served.
    assert_eq!(document.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_route_table_that_could_expose_internal_routes_or_is_inconsistent_is_refused() {
    let one = services(&[("a", "http://127.0.0.1:1".to_owned())]);
    let table = |routes: Vec<Route>| RouteTable {
        services: one.clone(),
        routes,
        timeout_seconds: 10,
        body_limit_bytes: 1024,
    };
    for path in [
        "/api/v2",
        "/api",
        "/api/v2/internal",
        "/api/v2/internal/status",
        "/API/V2/Internal",
    ] {
        let error = table(vec![route(path, "a")])
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.contains("internal"), "{path}: {error}");
    }
    for path in ["api/v2/x", "/api/v2/x/", "/api//x", "/api/v2/x?y"] {
        assert!(table(vec![route(path, "a")]).check().is_err(), "{path}");
    }
    assert!(table(vec![route("/api/v2/x", "b")]).check().is_err());
    assert!(
        table(vec![route("/api/v2/x", "a"), route("/api/v2/X", "a")])
            .check()
            .is_err()
    );
    let fine = table(vec![route("/api/v2/x", "a"), route("/api/v2/x/y", "a")]);
    fine.check().unwrap();
    assert_eq!(fine.target("/api/v2/x/y/z").unwrap().service, "a");
    assert!(fine.target("/api/v2/xy").is_none());
}
