//! Machine tokens by the client-credentials grant, cached until shortly before they expire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Http, RemoteError};

/// How long before its expiry a token is replaced: a token is never sent with less left than
/// this (a clock skew or a slow call would see it refused).
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// The shortest time a token is kept, whatever its lifetime.
const KEEP_AT_LEAST: Duration = Duration::from_secs(1);

/// How long the identity service has to answer a token request.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A machine client's credentials and the identity service that grants its tokens.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The identity service's public base URL (`http://127.0.0.1:5101`).
    pub identity_url: String,
    /// The client id.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// The scopes asked for, space-separated (all the client's scopes when `None`).
    pub scope: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("identity_url", &self.identity_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Granted {
    access_token: String,
    expires_in: u64,
}

struct Cached {
    token: String,
    renew_at: Instant,
}

/// A machine token shared by every call of a process: asked for once, reused until
/// a minute before its expiry (or until a service refuses it), then asked for again. Calls
/// that need a token while one is being asked for wait for that one.
pub struct MachineTokens {
    credentials: ClientCredentials,
    http: Http,
    cached: Mutex<Option<Cached>>,
    granted: AtomicU64,
}

impl std::fmt::Debug for MachineTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineTokens")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl MachineTokens {
    /// Tokens for `credentials`, asked for on first use.
    pub fn new(credentials: ClientCredentials) -> Self {
        Self {
            credentials,
            http: super::http_client(),
            cached: Mutex::new(None),
            granted: AtomicU64::new(0),
        }
    }

    /// A token with more than a minute left.
    ///
    /// # Errors
    /// [`RemoteError::Unreachable`] or [`RemoteError::TimedOut`] when the identity service
    /// does not answer, [`RemoteError::Refused`] when it refuses the credentials.
    pub async fn token(&self) -> Result<String, RemoteError> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.renew_at
        {
            return Ok(current.token.clone());
        }
        let granted = self.ask().await?;
        self.granted.fetch_add(1, Ordering::Relaxed);
        let lifetime = Duration::from_secs(granted.expires_in);
        let keep = lifetime.saturating_sub(RENEW_BEFORE).max(KEEP_AT_LEAST);
        *cached = Some(Cached {
            token: granted.access_token.clone(),
            renew_at: Instant::now() + keep,
        });
        Ok(granted.access_token)
    }

    /// How many tokens the identity service granted this client so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Drops `token` if it is the cached one (a service refused it): the next call asks for
    /// a new one.
    pub async fn refused(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }

    async fn ask(&self) -> Result<Granted, RemoteError> {
        let service = "identity";
        let url = format!(
            "{}/api/v2/accounts/token",
            self.credentials.identity_url.trim_end_matches('/')
        );
        let mut body = serde_json::json!({
            "grantType": "client_credentials",
            "clientId": self.credentials.client_id,
            "clientSecret": self.credentials.client_secret,
        });
        if let Some(scope) = &self.credentials.scope {
            body["scope"] = serde_json::Value::String(scope.clone());
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| RemoteError::unreachable(service, e))?;
        let response = tokio::time::timeout(TOKEN_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| RemoteError::TimedOut {
                service: service.to_owned(),
                after: TOKEN_TIMEOUT,
            })?
            .map_err(|e| RemoteError::unreachable(service, e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| RemoteError::unreachable(service, e))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(RemoteError::refused(service, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Malformed {
            service: service.to_owned(),
            detail: e.to_string(),
        })
    }
}
