//! The API gateway (`ecommerce gateway`): one public address in front of the services. It
//! routes the public API by path prefix from a [`RouteTable`] file; forwards the
//! `Authorization` header, a request id (`x-request-id`, kept or made) and the W3C trace
//! context; streams answers as they come (server-sent events included); answers 503
//! problem+json while a service is unreachable and 504 when it does not start answering in
//! its route's time; refuses bodies over its route's limit; serves `/health` for every
//! service and the public OpenAPI document merged from the services'. Internal routes are
//! never reachable through it, whatever the table says.
//!
//! A small module on hyper's client rather than a proxy library: what it adds (problem
//! answers, the internal-route guard, health and OpenAPI merging) is most of it, and
//! hyper's client is already what the services call each other with.

mod proxy;
pub mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

pub use table::{Route, RouteTable, Service, TableError};

use crate::http::problem::Problem;
use crate::remote::Http;

/// How long a service has to answer `/health` or its OpenAPI document.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway: a route table and the client it forwards with. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    table: RouteTable,
    http: Http,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `table` (checked).
    ///
    /// # Errors
    /// [`TableError::Invalid`] as [`RouteTable::check`] says.
    pub fn new(table: RouteTable) -> Result<Self, TableError> {
        table.check()?;
        Ok(Self {
            inner: Arc::new(Inner {
                table,
                http: crate::remote::http_client(),
            }),
        })
    }

    /// The route table.
    pub fn table(&self) -> &RouteTable {
        &self.inner.table
    }

    /// The gateway's router: `/health`, `/ready`, `/api/v2/openapi.json`, and everything else
    /// forwarded by the table.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/api/v2/openapi.json", get(openapi))
            .fallback(proxy::forward)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests in flight end.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// GETs `url` within [`PROBE_TIMEOUT`]: its status and JSON body.
    async fn probe(&self, url: &str) -> Result<(StatusCode, Value), String> {
        let request = hyper::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let answered = tokio::time::timeout(PROBE_TIMEOUT, async {
            let response = self
                .inner
                .http
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        })
        .await;
        answered.unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
    }
}

/// `GET /health`: every service's own `/health`, 200 when all answer 200, else 503 naming
/// those that do not.
async fn health(State(gateway): State<Gateway>) -> Response {
    aggregate(&gateway, "/health").await
}

/// `GET /ready`: every service's own `/ready` (its storage, bus and consumers), 200 when all
/// are ready, else 503 naming those that are not; `backend` is theirs when they agree.
async fn ready(State(gateway): State<Gateway>) -> Response {
    aggregate(&gateway, "/ready").await
}

/// Asks every service of the table for `probe`: `ok` (it answered 200), `unhealthy` (it
/// answered otherwise) or `unreachable`, and `ok` over all only when every one is.
async fn aggregate(gateway: &Gateway, probe: &str) -> Response {
    let services = &gateway.table().services;
    let probes = services.iter().map(|(name, service)| {
        let gateway = gateway.clone();
        async move {
            let url = format!("{}{probe}", service.url.trim_end_matches('/'));
            let state = match gateway.probe(&url).await {
                Ok((StatusCode::OK, body)) => json!({ "status": "ok", "backend": body["backend"] }),
                Ok((status, _)) => {
                    json!({ "status": "unhealthy", "detail": format!("answered {status}") })
                }
                Err(error) => json!({ "status": "unreachable", "detail": error }),
            };
            (name.clone(), state)
        }
    });
    let states: Map<String, Value> = futures::future::join_all(probes)
        .await
        .into_iter()
        .collect();
    let healthy = states.values().all(|s| s["status"] == "ok");
    let backends: std::collections::BTreeSet<String> = states
        .values()
        .filter_map(|s| s["backend"].as_str().map(str::to_owned))
        .collect();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "services": states,
    });
    if let [backend] = backends.into_iter().collect::<Vec<_>>().as_slice() {
        body["backend"] = json!(backend);
    }
    (status, axum::Json(body)).into_response()
}

/// `GET /api/v2/openapi.json`: the services' public documents merged into one (their
/// paths, schemas, security schemes and tags), keeping only the paths the table routes.
async fn openapi(State(gateway): State<Gateway>) -> Response {
    let table = gateway.table();
    let mut urls: Vec<(&str, &str)> = table
        .routes
        .iter()
        .filter_map(|route| {
            let service = table.services.get(&route.service)?;
            Some((route.service.as_str(), service.url.trim_end_matches('/')))
        })
        .collect();
    urls.sort_unstable();
    urls.dedup();
    let fetches = urls.iter().map(|(name, url)| {
        let gateway = gateway.clone();
        async move {
            let fetched = gateway.probe(&format!("{url}/api/v2/openapi.json")).await;
            (*name, fetched)
        }
    });
    let mut merged: Option<Value> = None;
    for (name, fetched) in futures::future::join_all(fetches).await {
        let document = match fetched {
            Ok((StatusCode::OK, document)) if document.is_object() => document,
            Ok((status, _)) => {
                return unavailable(&format!("the {name} service's API document: {status}"));
            }
            Err(error) => {
                return unavailable(&format!("the {name} service's API document: {error}"));
            }
        };
        match &mut merged {
            None => merged = Some(document),
            Some(merged) => merge(merged, document),
        }
    }
    let mut merged = merged.unwrap_or_else(|| json!({ "openapi": "3.1.0", "paths": {} }));
    if let Some(paths) = merged["paths"].as_object_mut() {
        paths.retain(|path, _| table.target(path).is_some());
    }
    axum::Json(merged).into_response()
}

/// Adds `other`'s paths, components and tags to `into` (the first one of each name kept).
fn merge(into: &mut Value, other: Value) {
    let union = |into: &mut Value, other: &Value| {
        if let (Some(into), Some(other)) = (into.as_object_mut(), other.as_object()) {
            for (key, value) in other {
                into.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
    };
    if into["paths"].is_null() {
        into["paths"] = json!({});
    }
    union(&mut into["paths"], &other["paths"]);
    for part in ["schemas", "securitySchemes", "responses", "parameters"] {
        if other["components"][part].is_object() {
            if into["components"][part].is_null() {
                into["components"][part] = json!({});
            }
            union(&mut into["components"][part], &other["components"][part]);
        }
    }
    if let Some(tags) = other["tags"].as_array() {
        let known: Vec<Value> = into["tags"].as_array().cloned().unwrap_or_default();
        let mut all = known.clone();
        for tag in tags {
            if !known.iter().any(|k| k["name"] == tag["name"]) {
                all.push(tag.clone());
            }
        }
        into["tags"] = Value::Array(all);
    }
}

/// A 503 problem with `detail`, and when to try again.
fn unavailable(detail: &str) -> Response {
    let mut response = Problem::response(
        StatusCode::SERVICE_UNAVAILABLE,
        detail.to_owned(),
        Default::default(),
        None,
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}
