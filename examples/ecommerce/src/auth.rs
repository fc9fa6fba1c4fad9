//! Tokens and policies: JWTs signed with HS256 carrying a role and scopes, the [`Caller`]
//! extractor that verifies them, and the checks routes make.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::problem::ApiError;

/// The issuer of every token.
pub const ISSUER: &str = "ecommerce-identity";
/// The audience of access tokens.
pub const ACCESS_AUDIENCE: &str = "ecommerce-api";
/// The audience of refresh tokens (so one can never be used as the other).
pub const REFRESH_AUDIENCE: &str = "ecommerce-refresh";

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A customer signed in with email and password.
    Customer,
    /// A service holding client credentials.
    M2MAccess,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read.
    Read,
    /// Create and change.
    Write,
    /// Delete.
    Delete,
    /// Data subjects' keys (the key store's internal routes): only machine clients that
    /// seal or open personal data.
    Keys,
}

impl Scope {
    /// The scope's name in a token.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Delete => "delete",
            Scope::Keys => "keys",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "delete" => Some(Scope::Delete),
            "keys" => Some(Scope::Keys),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessClaims {
    /// The account id (customers) or the client id (M2M).
    pub sub: String,
    /// The issuer.
    pub iss: String,
    /// The audience.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// The token's id.
    pub jti: String,
    /// The role.
    pub role: Role,
    /// Space-separated scopes.
    pub scope: String,
    /// The customer's email (customers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The customer id (customers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
}

/// The claims of a refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    /// The account id.
    pub sub: String,
    /// The issuer.
    pub iss: String,
    /// The audience.
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expires at.
    pub exp: i64,
    /// The token's id: each may be used once.
    pub jti: Uuid,
    /// The rotation family: reusing a spent token revokes the whole family.
    pub fam: Uuid,
}

/// The signing and verification keys (HS256, one shared secret).
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// Why a token was refused (the reason is for the log; clients are told only whether it
/// expired).
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {reason}")]
pub struct InvalidToken {
    reason: String,
    expired: bool,
}

impl InvalidToken {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            expired: false,
        }
    }

    /// Whether the token was valid but has expired (the client refreshes it).
    pub fn expired(&self) -> bool {
        self.expired
    }
}

impl TokenKeys {
    /// Keys from a secret (at least 32 bytes in production).
    ///
    /// # Errors
    /// [`InvalidToken`] when the secret is unusable (empty).
    pub fn new(secret: &[u8]) -> Result<Self, InvalidToken> {
        let invalid =
            |e: jsonwebtoken::errors::Error| InvalidToken::new(format!("signing secret: {e}"));
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(invalid)?,
            decoding: DecodingKey::from_secret(secret).map_err(invalid)?,
        })
    }

    /// Signs `claims`.
    ///
    /// # Errors
    /// When the claims cannot be serialized.
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// Verifies an access token: signature, issuer, audience and expiry.
    ///
    /// # Errors
    /// [`InvalidToken`] saying why.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, InvalidToken> {
        self.verify(token, ACCESS_AUDIENCE)
    }

    /// Verifies a refresh token: signature, issuer, audience and expiry.
    ///
    /// # Errors
    /// [`InvalidToken`] saying why.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, InvalidToken> {
        self.verify(token, REFRESH_AUDIENCE)
    }

    fn verify<C: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<C, InvalidToken> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[audience]);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<C>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| InvalidToken {
                expired: matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature),
                reason: e.to_string(),
            })
    }
}

/// The verified caller of a request: present in a handler's arguments means the request
/// carried a valid access token (otherwise the extractor answered 401).
#[derive(Debug, Clone)]
pub struct Caller {
    claims: AccessClaims,
}

/// What a route demands of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A customer token with the scope.
    Customer(Scope),
    /// A machine-to-machine token with the scope.
    Machine(Scope),
    /// Either kind of token, with the scope.
    Any(Scope),
}

impl Caller {
    /// A caller from verified claims.
    pub fn new(claims: AccessClaims) -> Self {
        Self { claims }
    }

    /// The claims.
    pub fn claims(&self) -> &AccessClaims {
        &self.claims
    }

    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.claims
            .scope
            .split_whitespace()
            .any(|s| s == scope.as_str())
    }

    /// Checks `policy`.
    ///
    /// # Errors
    /// 403 naming the missing role or scope.
    pub fn require(&self, policy: Policy) -> Result<&Self, ApiError> {
        let (role_ok, scope, needs) = match policy {
            Policy::Customer(scope) => (self.claims.role == Role::Customer, scope, "a customer"),
            Policy::Machine(scope) => (
                self.claims.role == Role::M2MAccess,
                scope,
                "a machine-to-machine",
            ),
            Policy::Any(scope) => (true, scope, "any"),
        };
        if !role_ok {
            return Err(ApiError::Forbidden(format!(
                "this route needs {needs} token"
            )));
        }
        if !self.has_scope(scope) {
            return Err(ApiError::Forbidden(format!(
                "this route needs the `{scope}` scope"
            )));
        }
        Ok(self)
    }

    /// The caller's customer id, after checking `Policy::Customer(scope)`.
    ///
    /// # Errors
    /// 403 when the caller is not a customer with `scope`.
    pub fn customer(&self, scope: Scope) -> Result<Uuid, ApiError> {
        self.require(Policy::Customer(scope))?;
        self.claims
            .customer_id
            .ok_or_else(|| ApiError::Forbidden("the token names no customer".to_owned()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let keys = parts
            .extensions
            .get::<Arc<TokenKeys>>()
            .ok_or_else(|| ApiError::internal("token keys are not installed on this router"))?;
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("an access token is required".to_owned()))?;
        // The scheme is case-insensitive (RFC 9110 11.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| {
                ApiError::Unauthorized("use `Authorization: Bearer <token>`".to_owned())
            })?;
        // Why a token is refused goes to the log, not to the client.
        let claims = keys.verify_access(token.trim()).map_err(|error| {
            tracing::info!(%error, "access token refused");
            ApiError::Unauthorized(if error.expired() {
                "the access token has expired".to_owned()
            } else {
                "the access token is not valid".to_owned()
            })
        })?;
        Ok(Caller::new(claims))
    }
}
