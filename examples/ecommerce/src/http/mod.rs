//! HTTP plumbing shared by every context: problem documents, extractors, request tracing,
//! health and readiness, and the OpenAPI documents.

pub mod extract;
pub mod problem;

use std::time::Instant;

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use tracing::Instrument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use problem::ApiError;

/// The public API's OpenAPI root (paths are added by each context's router).
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "ecommerce", description = "The reference ecommerce backend's public API."),
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

/// Logs each request with its status and duration, in a span carrying method and path.
pub async fn trace_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", %method, %path);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(parent: &span, status, millis, "request failed");
    } else {
        tracing::info!(parent: &span, status, millis, "request");
    }
    response
}

/// The answer for a route that does not exist.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
