//! Identity's routes: sign-in, refresh and the client-credentials grant (public), account
//! creation and closing (internal).

use es_core::TransactionalStore;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, HeaderName, PRAGMA};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Identity, IdentityError, NewAccount, Throttled, TokenPair};
use crate::auth::{Caller, Policy, Scope};
use crate::http::extract::ClientAddr;
use crate::http::extract::{IdPath, Json};
use crate::http::problem::{ApiError, Problem, Validator, is_valid_email};

/// `POST /api/v2/accounts/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequest {
    /// The account's email.
    #[schema(max_length = 254)]
    pub email: String,
    /// The password.
    #[schema(max_length = 100)]
    pub password: String,
}

/// `POST /api/v2/accounts/refresh`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    /// A refresh token from sign-in or an earlier refresh; each works once.
    pub refresh_token: String,
}

/// Tokens for a customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// The bearer access token.
    pub access_token: String,
    /// The single-use refresh token.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: String,
}

impl From<TokenPair> for TokenResponse {
    fn from(pair: TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            expires_in: pair.expires_in,
            token_type: "Bearer".to_owned(),
        }
    }
}

/// `POST /api/v2/accounts/token`: the client-credentials grant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTokenRequest {
    /// Must be `client_credentials`.
    #[schema(pattern = "^client_credentials$")]
    pub grant_type: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// Space-separated scopes (all the client's scopes when absent).
    #[serde(default)]
    pub scope: Option<String>,
}

/// A machine-to-machine token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTokenResponse {
    /// The bearer access token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The granted scopes.
    pub scope: String,
    /// Always `Bearer`.
    pub token_type: String,
}

/// `POST /api/v2/internal/accounts`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountRequest {
    /// The sign-in email.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// The password (5 to 100 characters).
    #[schema(min_length = 5, max_length = 100)]
    pub password: String,
    /// The customer the account signs in as.
    pub customer_id: Uuid,
}

/// An account id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountCreated {
    /// The new account's id.
    pub account_id: Uuid,
}

impl From<IdentityError> for ApiError {
    fn from(error: IdentityError) -> Self {
        match error {
            IdentityError::EmailTaken => ApiError::field("email", error.to_string()),
            IdentityError::InvalidCredentials | IdentityError::InvalidClient => {
                ApiError::Unauthorized(error.to_string())
            }
            // Why goes to the log, not to the client.
            IdentityError::InvalidRefreshToken(reason) => {
                tracing::info!(%reason, "refresh token refused");
                ApiError::Unauthorized("the refresh token is not valid".to_owned())
            }
            IdentityError::ScopeNotAllowed(_) => ApiError::Forbidden(error.to_string()),
            IdentityError::NotFound => ApiError::NotFound(error.to_string()),
            IdentityError::Storage(e) => e.into(),
            IdentityError::Hashing(e) => ApiError::internal(e),
            IdentityError::Throttled(throttled @ Throttled::Busy { retry_after }) => {
                ApiError::Busy {
                    message: throttled.to_string(),
                    retry_after,
                }
            }
            IdentityError::Throttled(throttled) => ApiError::TooManyRequests {
                message: throttled.to_string(),
                retry_after: throttled.retry_after(),
            },
        }
    }
}

/// Identity's public routes.
pub fn public<S: TransactionalStore>() -> OpenApiRouter<Arc<Identity<S>>> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(client_token))
}

/// Identity's internal routes.
pub fn internal<S: TransactionalStore>() -> OpenApiRouter<Arc<Identity<S>>> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(close_account))
        .routes(routes!(close_account_of))
}

/// `POST /api/v2/internal/accounts/closures`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountClosure {
    /// The sign-in email of the account to close.
    pub email: String,
}

/// Closes the account that signs in with an email, if there is one (forgetting its
/// customer; machine clients).
#[utoipa::path(post, path = "/api/v2/internal/accounts/closures", tag = "internal",
    request_body = AccountClosure,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Closed, or there was no such account"),
    ))]
async fn close_account_of<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    caller: Caller,
    Json(request): Json<AccountClosure>,
) -> Result<StatusCode, ApiError> {
    caller.require(Policy::Machine(Scope::Delete))?;
    identity.close_account_of(&request.email).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token response: never stored by a cache (RFC 6749 5.1).
type NoStore<T> = ([(HeaderName, &'static str); 2], axum::Json<T>);

fn no_store<T>(body: T) -> NoStore<T> {
    (
        [(CACHE_CONTROL, "no-store"), (PRAGMA, "no-cache")],
        axum::Json(body),
    )
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/api/v2/accounts/login", tag = "identity",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts for the account or from the address (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every password-hashing slot is busy (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    ClientAddr(client): ClientAddr,
    Json(request): Json<LoginRequest>,
) -> Result<NoStore<TokenResponse>, ApiError> {
    let pair = identity
        .login(&request.email, &request.password, client)
        .await?;
    Ok(no_store(pair.into()))
}

/// Spends a refresh token for a new pair; a reused token revokes its family.
#[utoipa::path(post, path = "/api/v2/accounts/refresh", tag = "identity",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired, spent or revoked token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    Json(request): Json<RefreshRequest>,
) -> Result<NoStore<TokenResponse>, ApiError> {
    let pair = identity.refresh(&request.refresh_token).await?;
    Ok(no_store(pair.into()))
}

/// The client-credentials grant: a machine-to-machine token.
#[utoipa::path(post, path = "/api/v2/accounts/token", tag = "identity",
    request_body = ClientTokenRequest,
    responses(
        (status = 200, description = "A machine token", body = ClientTokenResponse),
        (status = 401, description = "Unknown client or wrong secret", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A scope the client may not have", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unsupported grant type", body = Problem, content_type = "application/problem+json"),
    ))]
async fn client_token<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    Json(request): Json<ClientTokenRequest>,
) -> Result<NoStore<ClientTokenResponse>, ApiError> {
    if request.grant_type != "client_credentials" {
        return Err(ApiError::field(
            "grantType",
            "only `client_credentials` is supported",
        ));
    }
    let token = identity.client_token(
        &request.client_id,
        &request.client_secret,
        request.scope.as_deref(),
    )?;
    Ok(no_store(ClientTokenResponse {
        access_token: token.access_token,
        expires_in: token.expires_in,
        scope: token.scope,
        token_type: "Bearer".to_owned(),
    }))
}

/// Creates a customer's account (called by customer registration).
#[utoipa::path(post, path = "/api/v2/internal/accounts", tag = "internal",
    request_body = CreateAccountRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = AccountCreated),
        (status = 422, description = "Invalid fields or email taken", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every password-hashing slot is busy (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_account<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    caller: Caller,
    Json(request): Json<CreateAccountRequest>,
) -> Result<(StatusCode, axum::Json<AccountCreated>), ApiError> {
    caller.require(Policy::Machine(Scope::Write))?;
    Validator::new()
        .check(
            is_valid_email(request.email.trim()),
            "email",
            "must be a valid email address",
        )
        .length(&request.password, "password", 5, 100)
        .check(
            !request.customer_id.is_nil(),
            "customerId",
            "the nil UUID is not a valid id",
        )
        .finish()?;
    let account_id = identity
        .create_account(NewAccount {
            email: request.email,
            password: request.password,
            customer_id: request.customer_id,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AccountCreated { account_id }),
    ))
}

/// Closes an account (compensation of a failed registration).
#[utoipa::path(delete, path = "/api/v2/internal/accounts/{id}", tag = "internal",
    params(("id" = Uuid, Path, description = "Account id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Closed"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    ))]
async fn close_account<S: TransactionalStore>(
    State(identity): State<Arc<Identity<S>>>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<StatusCode, ApiError> {
    caller.require(Policy::Machine(Scope::Delete))?;
    identity.close_account(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
