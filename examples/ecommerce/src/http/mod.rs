//! HTTP plumbing shared by every context: problem documents, extractors, request tracing,
//! health and readiness, the OpenAPI documents and the server with its limits.

pub mod extract;
pub mod problem;
pub mod server;

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use es_core::telemetry::{TRACEPARENT, TRACESTATE};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use serde::Serialize;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use problem::ApiError;

/// The header that carries a request's id from service to service (the gateway keeps or
/// makes it; a service's calls to others send the id of the request they serve).
pub const REQUEST_ID: &str = "x-request-id";

tokio::task_local! {
    /// The id of the request being served, for the calls it makes to other services.
    pub static CURRENT_REQUEST_ID: String;
}

/// The public API's OpenAPI root (paths are added by each context's router).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "ecommerce",
        description = "The reference ecommerce backend's public API. No string field takes a \
            control character (422 naming the field); every error is `application/problem+json`."
    ),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem, Health))
)]
pub struct PublicApi;

/// The internal API's OpenAPI root.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "ecommerce internal", description = "Service-to-service routes (M2M tokens)."),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem))
)]
pub struct InternalApi;

/// Declares the `bearer` security scheme the routes name.
#[derive(Debug)]
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds to every operation of `openapi` the error answers the server's extractors and
/// middleware give it, each a [`problem::Problem`], where the route did not describe them
/// itself: a route with a body can answer 400 (not JSON), 408 (the body paused too long),
/// 413 (too large), 415 (not declared as JSON) and 422 (a field breaks a rule); one with path
/// ids 400 (not a UUID), 404 and 422 (the nil UUID); one with query parameters 422; one with
/// a header parameter 400; one behind a token 401 and 403; one that writes 409 (a conflict
/// that outlasted the retries).
pub fn document_errors(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for item in openapi.paths.paths.values_mut() {
        let shared: Vec<ParameterIn> = item
            .parameters
            .iter()
            .flatten()
            .filter_map(|parameter| match parameter {
                RefOr::T(parameter) => Some(parameter.parameter_in.clone()),
                RefOr::Ref(_) => None,
            })
            .collect();
        let operations = [
            (false, &mut item.get),
            (true, &mut item.put),
            (true, &mut item.post),
            (true, &mut item.delete),
            (true, &mut item.patch),
        ];
        for (writes, operation) in operations {
            let Some(operation) = operation else {
                continue;
            };
            let mut places = shared.clone();
            places.extend(
                operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter_map(|parameter| match parameter {
                        RefOr::T(parameter) => Some(parameter.parameter_in.clone()),
                        RefOr::Ref(_) => None,
                    }),
            );
            let mut errors: Vec<(&str, &str)> = Vec::new();
            if operation.request_body.is_some() {
                errors.extend([
                    ("400", "The body is not JSON"),
                    ("408", "The body paused longer than the body read timeout"),
                    ("413", "The body is larger than the limit"),
                    ("415", "The body is not declared as `application/json`"),
                    ("422", "A field breaks a rule (each named in `errors`)"),
                ]);
            }
            if places.contains(&ParameterIn::Path) {
                errors.extend([
                    ("400", "An id in the path is not a UUID"),
                    ("404", "No such resource of the caller's"),
                    ("422", "An id in the path is the nil UUID"),
                ]);
            }
            if writes {
                errors.push((
                    "409",
                    "The resource changed concurrently more often than the change is retried",
                ));
            }
            if places.contains(&ParameterIn::Query) {
                errors.push(("422", "A query parameter is out of range or malformed"));
            }
            if places.contains(&ParameterIn::Header) {
                errors.push(("400", "A header parameter is malformed"));
            }
            if operation
                .security
                .as_ref()
                .is_some_and(|requirements| !requirements.is_empty())
            {
                errors.extend([
                    ("401", "No token, or an invalid or expired one"),
                    ("403", "The token lacks the role or scope the route needs"),
                ]);
            }
            for (status, description) in errors {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            }
        }
    }
}

/// The body of `/health` and `/ready`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// The storage backend (`memory` or `postgres`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The message bus (`memory` or `kafka`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// Handles each request in a `server` span (continuing the trace of an incoming
/// `traceparent`), logs it with its status and duration, and records its duration in
/// `http_server_request_duration_seconds` by method, route and status.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The route template, not the path: a label must not take a value per order id.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |route| route.as_str().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
    );
    let trace_headers: std::collections::BTreeMap<String, String> = [TRACEPARENT, TRACESTATE]
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect();
    es_core::telemetry::continue_trace(&span, &trace_headers);
    // The calls this request makes to other services carry its id.
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let response = CURRENT_REQUEST_ID
        .scope(request_id, next.run(request).instrument(span.clone()))
        .await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let seconds = started.elapsed().as_secs_f64();
    request_duration().record(
        seconds,
        &[
            KeyValue::new("http.request.method", method.to_string()),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    let millis = seconds * 1000.0;
    if status >= 500 {
        tracing::warn!(parent: &span, status, millis, "request failed");
    } else {
        tracing::info!(parent: &span, status, millis, "request");
    }
    response
}

/// `http_server_request_duration_seconds` (OpenTelemetry's `http.server.request.duration`).
fn request_duration() -> &'static Histogram<f64> {
    static DURATION: OnceLock<Histogram<f64>> = OnceLock::new();
    DURATION.get_or_init(|| {
        opentelemetry::global::meter("ecommerce")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests")
            .with_boundaries(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .build()
    })
}

/// Turns an error answer without a body of ours (one a middleware or an extractor outside this
/// crate produced: a timeout, a rejected header) into a problem document with its status, so
/// that every error a client sees is `application/problem+json`.
pub async fn problems_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes() == problem::PROBLEM_JSON.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let answer = problem::Problem::response(status, reason, Default::default(), None);
    let (answer_parts, body) = answer.into_parts();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        answer_parts.headers[axum::http::header::CONTENT_TYPE].clone(),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// The answer for a route that does not exist.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn answer(
        router: Router,
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let router = router.layer(axum::middleware::from_fn(problems_only));
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_bare_error_becomes_a_problem_with_its_status_and_headers() {
        let router = Router::new().route(
            "/bare",
            get(|| async {
                (
                    StatusCode::REQUEST_TIMEOUT,
                    [("x-kept", "yes")],
                    "timed out",
                )
            }),
        );
        let (status, headers, body) = answer(router, "/bare").await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(headers[header::CONTENT_TYPE], problem::PROBLEM_JSON);
        assert_eq!(headers["x-kept"], "yes");
        assert_eq!(body["status"], 408);
        assert_eq!(body["detail"], "request timeout");
    }

    #[tokio::test]
    async fn problems_and_successes_pass_unchanged() {
        let router = Router::new()
            .route(
                "/ok",
                get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
            )
            .route(
                "/problem",
                get(|| async { ApiError::Conflict("moved on".to_owned()) }),
            );
        let (status, _, body) = answer(router.clone(), "/ok").await;
        assert_eq!(
            (status, body),
            (StatusCode::OK, serde_json::json!({"ok": true}))
        );
        let (status, _, body) = answer(router, "/problem").await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["detail"], "moved on");
    }
}
