//! A client of the shop's HTTP API: in process (through the routers, no sockets) or remote
//! (a running instance). The demo drives the workflow through it, exactly as a user would.

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::ServiceExt;

/// Which listener a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The public API.
    Public,
    /// The internal API (M2M tokens) of an instance, by index below
    /// [`Shop::internal_listeners`] (one process has one; the split deployment one per
    /// service).
    Internal(usize),
}

/// A response: status and JSON body (`null` when empty).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// The status.
    pub(crate) status: StatusCode,
    /// The body.
    pub(crate) body: Value,
}

/// Something that answers the shop's HTTP API.
#[async_trait]
pub(crate) trait Shop: Send + Sync {
    /// One request.
    ///
    /// # Errors
    /// When the request cannot be sent or the answer read.
    async fn call(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, String>;

    /// How many internal listeners answer (one per service of a split deployment).
    fn internal_listeners(&self) -> usize {
        1
    }
}

fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(axum::http::request::Builder, Bytes), String> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
        }
        None => Bytes::new(),
    };
    Ok((builder, bytes))
}

fn decode(status: StatusCode, bytes: &[u8]) -> Reply {
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    };
    Reply { status, body }
}

/// The shop in this process, through its routers.
#[derive(Debug, Clone)]
pub(crate) struct InProcess {
    public: Router,
    internal: Router,
}

impl InProcess {
    /// A client of `app`'s routers.
    pub(crate) fn new(app: &ecommerce::app::App) -> Self {
        Self {
            public: app.public_router(),
            internal: app.internal_router(),
        }
    }
}

#[async_trait]
impl Shop for InProcess {
    async fn call(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let (builder, bytes) = request(method, path, token, body)?;
        let request = builder.body(Body::from(bytes)).map_err(|e| e.to_string())?;
        let router = match listener {
            Listener::Public => self.public.clone(),
            Listener::Internal(_) => self.internal.clone(),
        };
        let response = router.oneshot(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(decode(status, &bytes))
    }
}

/// A running instance, over HTTP/1.1: one process, or the split services behind their
/// gateway.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    public: String,
    internal: Vec<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Remote {
    /// A client of the public API at `public` (e.g. `http://127.0.0.1:5000`, one process's
    /// or the gateway's) and of the internal API at each of `internal` (one process's, or
    /// every service's).
    pub(crate) fn new(public: &str, internal: &[String]) -> Self {
        Self {
            public: public.trim_end_matches('/').to_owned(),
            internal: internal
                .iter()
                .map(|url| url.trim_end_matches('/').to_owned())
                .collect(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

#[async_trait]
impl Shop for Remote {
    async fn call(
        &self,
        listener: Listener,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let base = match listener {
            Listener::Public => &self.public,
            Listener::Internal(index) => self
                .internal
                .get(index)
                .ok_or_else(|| format!("no internal URL number {index}"))?,
        };
        let (builder, bytes) = request(method, &format!("{base}{path}"), token, body)?;
        let request = builder.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{base}{path}: {e}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(decode(status, &bytes))
    }

    fn internal_listeners(&self) -> usize {
        self.internal.len()
    }
}
