//! The key store's internal routes: the customers service owns the data subjects' keys (and
//! the master key that wraps them at rest), and services split apart reach them here with a
//! machine token carrying the `keys` scope (the remote module's `HttpKeyStore`). Subjects
//! travel in bodies, never in paths, so they stay out of access logs.

use std::sync::Arc;

use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use es_core::privacy::{KeyStore, KeyStoreError, SubjectId, SubjectKey};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Policy, Scope};
use crate::http::extract::Json;
use crate::http::problem::{ApiError, Problem};

/// The key store the routes serve.
pub type Keys = Arc<dyn KeyStore>;

/// The key store's internal routes.
pub fn internal() -> OpenApiRouter<Keys> {
    OpenApiRouter::new()
        .routes(routes!(current))
        .routes(routes!(lookup))
        .routes(routes!(rotate))
        .routes(routes!(forget))
        .routes(routes!(status))
}

/// A data subject.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRequest {
    /// The subject.
    pub subject: String,
}

/// A version of a subject's key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    /// The subject.
    pub subject: String,
    /// The key's version.
    pub version: u32,
}

/// A subject's key.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// The subject.
    pub subject: String,
    /// The key's version.
    pub version: u32,
    /// The key, base64.
    pub key: String,
}

impl std::fmt::Debug for KeyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyView")
            .field("subject", &self.subject)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl KeyView {
    fn of(subject: &SubjectId, key: &SubjectKey) -> Self {
        Self {
            subject: subject.as_str().to_owned(),
            version: key.version(),
            key: BASE64.encode(key.bytes()),
        }
    }
}

/// Keys asked for at once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookupRequest {
    /// The versions wanted.
    pub keys: Vec<KeyVersion>,
}

/// The keys found (a forgotten subject's, or a version never made, are absent).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The keys.
    pub keys: Vec<KeyView>,
}

/// Forgetting a subject.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgetRequest {
    /// The subject.
    pub subject: String,
    /// Who asks.
    pub by: String,
}

/// What forgetting recorded.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForgettingView {
    /// The subject.
    pub subject: String,
    /// Who asked first.
    pub by: String,
    /// When the keys were destroyed.
    pub at: DateTime<Utc>,
    /// Whether it had been forgotten before.
    pub already: bool,
}

/// Whether a subject was forgotten.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectStatus {
    /// The subject.
    pub subject: String,
    /// Whether it was forgotten.
    pub forgotten: bool,
}

fn subject(text: &str) -> Result<SubjectId, ApiError> {
    SubjectId::new(text).map_err(|e| ApiError::field("subject", e.to_string()))
}

fn failed(error: KeyStoreError) -> ApiError {
    ApiError::internal(error)
}

/// A subject's key, or 410 when the subject was forgotten (it has none any more).
fn answer(subject: &SubjectId, key: Option<SubjectKey>) -> Result<axum::Json<KeyView>, ApiError> {
    match key {
        Some(key) => Ok(axum::Json(KeyView::of(subject, &key))),
        None => Err(ApiError::Gone(format!("subject {subject} was forgotten"))),
    }
}

/// A subject's current key, made on first use.
#[utoipa::path(post, path = "/api/v2/internal/keys/current", tag = "internal",
    request_body = SubjectRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The current key", body = KeyView),
        (status = 410, description = "The subject was forgotten", body = Problem, content_type = "application/problem+json"),
    ))]
async fn current(
    State(keys): State<Keys>,
    caller: Caller,
    Json(request): Json<SubjectRequest>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.require(Policy::Machine(Scope::Keys))?;
    let subject = subject(&request.subject)?;
    let key = keys.current_key(&subject).await.map_err(failed)?;
    answer(&subject, key)
}

/// Versions of subjects' keys, many at once.
#[utoipa::path(post, path = "/api/v2/internal/keys/lookup", tag = "internal",
    request_body = LookupRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The keys that exist", body = Found),
        (status = 422, description = "A malformed subject, or more than 1000 keys", body = Problem, content_type = "application/problem+json"),
    ))]
async fn lookup(
    State(keys): State<Keys>,
    caller: Caller,
    Json(request): Json<LookupRequest>,
) -> Result<axum::Json<Found>, ApiError> {
    caller.require(Policy::Machine(Scope::Keys))?;
    if request.keys.len() > 1000 {
        return Err(ApiError::field("keys", "at most 1000 at once"));
    }
    let wanted = request
        .keys
        .iter()
        .map(|k| Ok((subject(&k.subject)?, k.version)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let found = keys.keys(&wanted).await.map_err(failed)?;
    Ok(axum::Json(Found {
        keys: found
            .iter()
            .map(|((subject, _), key)| KeyView::of(subject, key))
            .collect(),
    }))
}

/// Makes a new current version of a subject's key.
#[utoipa::path(post, path = "/api/v2/internal/keys/rotate", tag = "internal",
    request_body = SubjectRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new current key", body = KeyView),
        (status = 410, description = "The subject was forgotten", body = Problem, content_type = "application/problem+json"),
    ))]
async fn rotate(
    State(keys): State<Keys>,
    caller: Caller,
    Json(request): Json<SubjectRequest>,
) -> Result<axum::Json<KeyView>, ApiError> {
    caller.require(Policy::Machine(Scope::Keys))?;
    let subject = subject(&request.subject)?;
    let key = keys.rotate(&subject).await.map_err(failed)?;
    answer(&subject, key)
}

/// Destroys every version of a subject's key, for good (idempotent).
#[utoipa::path(post, path = "/api/v2/internal/keys/forget", tag = "internal",
    request_body = ForgetRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Forgotten (now or before)", body = ForgettingView),
    ))]
async fn forget(
    State(keys): State<Keys>,
    caller: Caller,
    Json(request): Json<ForgetRequest>,
) -> Result<axum::Json<ForgettingView>, ApiError> {
    caller.require(Policy::Machine(Scope::Keys))?;
    let subject = subject(&request.subject)?;
    let forgetting = keys.forget(&subject, &request.by).await.map_err(failed)?;
    Ok(axum::Json(ForgettingView {
        subject: forgetting.subject.as_str().to_owned(),
        by: forgetting.by,
        at: forgetting.at,
        already: forgetting.already,
    }))
}

/// Whether a subject was forgotten.
#[utoipa::path(post, path = "/api/v2/internal/keys/status", tag = "internal",
    request_body = SubjectRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The subject's state", body = SubjectStatus),
    ))]
async fn status(
    State(keys): State<Keys>,
    caller: Caller,
    Json(request): Json<SubjectRequest>,
) -> Result<axum::Json<SubjectStatus>, ApiError> {
    caller.require(Policy::Machine(Scope::Keys))?;
    let subject = subject(&request.subject)?;
    let forgotten = keys.is_forgotten(&subject).await.map_err(failed)?;
    Ok(axum::Json(SubjectStatus {
        subject: subject.as_str().to_owned(),
        forgotten,
    }))
}
