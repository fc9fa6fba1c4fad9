//! Calls between services over HTTP: one [`ServiceClient`] per service called, with machine
//! tokens from the identity service ([`MachineTokens`]), a timeout per attempt, bounded
//! retries with backoff, the caller's trace context and request id, and typed failures
//! ([`RemoteError`]); and the client traits' implementations over it ([`clients`]).
//!
//! Which calls are retried: a request that never reached the service (refused or failed
//! connection) always; one that may have reached it (a timeout, a 502, 503 or 504) only when
//! the call is idempotent. A 401 drops the cached token and tries once more with a new one.
//! Any other answer, 4xx or 5xx, is the caller's to read.

pub mod clients;
pub mod keys;
pub mod ledgers;
mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use tokens::{ClientCredentials, MachineTokens};

/// The HTTP/1.1 client every call goes through (it pools connections per host).
pub(crate) type Http = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn http_client() -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

use crate::http::CURRENT_REQUEST_ID;
pub use crate::http::REQUEST_ID;

/// How a [`ServiceClient`] waits and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// How long one attempt may take, answer included.
    pub timeout: Duration,
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    pub backoff: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            attempts: 3,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Why a call to another service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The service could not be reached (after the retries).
    #[error("{service} is unreachable: {detail}")]
    Unreachable {
        /// The service called.
        service: String,
        /// What failed.
        detail: String,
    },
    /// An attempt got no answer in time (after the retries).
    #[error("{service} did not answer within {after:?}")]
    TimedOut {
        /// The service called.
        service: String,
        /// The timeout of an attempt.
        after: Duration,
    },
    /// The service answered with an error status the caller does not expect.
    #[error("{service} answered {status}: {detail}")]
    Refused {
        /// The service called.
        service: String,
        /// Its status.
        status: StatusCode,
        /// Its problem's detail (or title), or the body.
        detail: String,
    },
    /// The service's answer could not be read.
    #[error("{service} answered something unreadable: {detail}")]
    Malformed {
        /// The service called.
        service: String,
        /// What was wrong.
        detail: String,
    },
}

impl RemoteError {
    fn unreachable(service: &str, error: impl std::fmt::Display) -> Self {
        Self::Unreachable {
            service: service.to_owned(),
            detail: error.to_string(),
        }
    }

    /// An error status and its problem+json body (or whatever the body was).
    pub(crate) fn refused(service: &str, status: StatusCode, body: &[u8]) -> Self {
        let detail = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|problem| {
                problem["detail"]
                    .as_str()
                    .or_else(|| problem["title"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect());
        Self::Refused {
            service: service.to_owned(),
            status,
            detail,
        }
    }

    /// Whether the service was down or overloaded (as opposed to refusing the request).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::TimedOut { .. } => true,
            Self::Refused { status, .. } => status.is_server_error(),
            Self::Malformed { .. } => false,
        }
    }
}

/// A service's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its body as JSON (`null` when empty or not JSON).
    pub body: Value,
    /// Its `Retry-After`, in seconds (a busy or throttled service says when to come back).
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// The body as `T` when the status is `expected`, else the error the status means.
    ///
    /// # Errors
    /// [`RemoteError::Refused`] for another status, [`RemoteError::Malformed`] for a body
    /// that is not a `T`.
    pub fn expect<T: serde::de::DeserializeOwned>(
        self,
        service: &str,
        expected: StatusCode,
    ) -> Result<T, RemoteError> {
        if self.status != expected {
            return Err(self.error(service));
        }
        serde_json::from_value(self.body).map_err(|e| RemoteError::Malformed {
            service: service.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The error this answer's status means.
    pub fn error(&self, service: &str) -> RemoteError {
        RemoteError::refused(service, self.status, self.body.to_string().as_bytes())
    }

    /// The problem's `detail` (or `title`), if the body is one.
    pub fn detail(&self) -> Option<&str> {
        self.body["detail"]
            .as_str()
            .or_else(|| self.body["title"].as_str())
    }
}

/// Calls one service's internal API with a machine token.
#[derive(Clone)]
pub struct ServiceClient {
    service: String,
    base: String,
    http: Http,
    tokens: Arc<MachineTokens>,
    policy: CallPolicy,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("service", &self.service)
            .field("base", &self.base)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Answered(Reply),
    /// Never reached the service: always safe to try again.
    NotSent(RemoteError),
    /// May have reached it: safe to try again only when idempotent.
    Unknown(RemoteError),
    /// The token was refused.
    Unauthorized(String),
}

impl ServiceClient {
    /// A client of `service` (its name, for errors and logs) at `base`
    /// (`http://127.0.0.1:5203`), authenticating with `tokens`.
    pub fn new(service: &str, base: &str, tokens: Arc<MachineTokens>) -> Self {
        Self {
            service: service.to_owned(),
            base: base.trim_end_matches('/').to_owned(),
            http: http_client(),
            tokens,
            policy: CallPolicy::default(),
        }
    }

    /// Sets the timeout and retries.
    #[must_use]
    pub fn with_policy(mut self, policy: CallPolicy) -> Self {
        self.policy = CallPolicy {
            attempts: policy.attempts.max(1),
            ..policy
        };
        self
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Sends `method` `path` (under the base URL) with `body` as JSON, retrying as the module
    /// says; `idempotent` when sending it twice does what sending it once does.
    ///
    /// # Errors
    /// [`RemoteError::Unreachable`] or [`RemoteError::TimedOut`] once the attempts are spent;
    /// the identity service's error when no token can be had. An answer, whatever its
    /// status, is a [`Reply`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Reply, RemoteError> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let request_id = request_id();
        let mut trace = BTreeMap::new();
        es_core::telemetry::inject_current(&mut trace);
        let mut backoff = self.policy.backoff;
        let mut reauthorized = false;
        let mut attempt = 1;
        loop {
            let token = self.tokens.token().await?;
            let outcome = self
                .attempt(&method, path, body.clone(), &token, &request_id, &trace)
                .await;
            let retry = match outcome {
                Attempt::Answered(reply) => return Ok(reply),
                Attempt::Unauthorized(token) if !reauthorized => {
                    self.tokens.refused(&token).await;
                    reauthorized = true;
                    continue;
                }
                Attempt::Unauthorized(_) => {
                    return Err(RemoteError::Refused {
                        service: self.service.clone(),
                        status: StatusCode::UNAUTHORIZED,
                        detail: "the machine token was refused twice".to_owned(),
                    });
                }
                Attempt::NotSent(error) => error,
                Attempt::Unknown(error) if idempotent => error,
                Attempt::Unknown(error) => return Err(error),
            };
            if attempt >= self.policy.attempts {
                return Err(retry);
            }
            tracing::debug!(service = %self.service, %path, attempt, error = %retry, "call failed; trying again");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
        token: &str,
        request_id: &str,
        trace: &BTreeMap<String, String>,
    ) -> Attempt {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header(REQUEST_ID, request_id);
        for (name, value) in trace {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let request = match builder.body(Full::new(body.unwrap_or_default())) {
            Ok(request) => request,
            Err(error) => return Attempt::NotSent(RemoteError::unreachable(&self.service, error)),
        };
        let answered = tokio::time::timeout(self.policy.timeout, async {
            let response = self.http.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, retry_after, bytes))
        })
        .await;
        let (status, retry_after, bytes) = match answered {
            Err(_) => {
                return Attempt::Unknown(RemoteError::TimedOut {
                    service: self.service.clone(),
                    after: self.policy.timeout,
                });
            }
            Ok(Err(error)) => {
                let not_sent = error
                    .downcast_ref::<hyper_util::client::legacy::Error>()
                    .is_some_and(hyper_util::client::legacy::Error::is_connect);
                let error = RemoteError::unreachable(&self.service, error);
                return if not_sent {
                    Attempt::NotSent(error)
                } else {
                    Attempt::Unknown(error)
                };
            }
            Ok(Ok(answer)) => answer,
        };
        if status == StatusCode::UNAUTHORIZED {
            return Attempt::Unauthorized(token.to_owned());
        }
        // A gateway's or an overloaded server's failure; a 503 that says when to come back
        // (`Retry-After`: busy, nothing done) is an answer for the caller to read.
        let failed = matches!(
            status,
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT
        ) || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after.is_none());
        if failed {
            return Attempt::Unknown(RemoteError::refused(&self.service, status, &bytes));
        }
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Attempt::Answered(Reply {
            status,
            body,
            retry_after,
        })
    }
}

/// The current request's id when this call is made while serving one, else a new one.
fn request_id() -> String {
    CURRENT_REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string())
}
