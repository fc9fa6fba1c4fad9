//! The HTTP server: hyper's HTTP/1 connections behind a limit on how many are open at once,
//! with a header read timeout (which also closes connections kept alive but idle), a request
//! body timeout (tower-http), and draining on shutdown (hyper-util).
//!
//! A client that opens connections and sends nothing, sends half a request, or trickles a body
//! holds a connection slot for at most the timeout; past `max_connections`, new connections
//! wait in the listener's backlog until a slot frees.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How much a listener lets its clients hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; further ones wait in the backlog until one closes.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, counted from when the server
    /// awaits them: from the connection's opening, and after each response on a kept-alive
    /// connection (so it is also how long an idle connection stays open).
    pub header_read_timeout: Duration,
    /// The longest pause while a request body is read; then the request is answered 408.
    pub body_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests and open streams before it closes them.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    /// 1,024 connections, 10 s for headers (and idle keep-alive), 10 s body pauses, 10 s of
    /// draining.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish (for up to [`ServerLimits::drain_timeout`]) and
/// returns. Handlers see the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = GracefulShutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(Body::new)
                });
        let connection = connections
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout = ?limits.drain_timeout,
            "connections still open after the drain timeout are closed"
        );
    }
    tasks.shutdown().await;
}
