//! The whole application in one process: every context wired to one backend, the public and
//! internal routers, and serving them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use tokio::net::TcpListener;

use es_core::privacy::{MasterKey, MasterKeys};

use crate::auth::TokenKeys;
use crate::backend::Backend;
use crate::http::problem::ApiError;
use crate::http::server::{self, ServerLimits};
use crate::http::{Health, not_found, problems_only, trace_requests};
use crate::identity::IdentityConfig;
use crate::invariants::Books;
use crate::ops::Operations;
pub use crate::runtime::WorkflowConfig;
use crate::runtime::bus::Bus;
use crate::runtime::{Runtime, RuntimeError, Workflow, lock};

/// What the application needs to start.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where contexts keep their data.
    pub backend: Backend,
    /// Identity's settings.
    pub identity: IdentityConfig,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// What each listener lets its clients hold: connections, timeouts.
    pub server: ServerLimits,
    /// The master keys that wrap the customers' personal-data keys at rest.
    pub master_keys: MasterKeys,
    /// The ordering workflow's settings.
    pub workflow: WorkflowConfig,
    /// Kafka, when messages go through a broker instead of the in-process bus.
    pub kafka: Option<KafkaSettings>,
    /// Proxies (the gateway) whose `X-Forwarded-For` names the client: a request from one of
    /// them counts as coming from the address it forwarded for (sign-in limits per address).
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Where the workflow's messages go on Kafka.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// The cluster.
    pub config: es_kafka::KafkaConfig,
    /// A prefix before every topic name.
    pub topic_prefix: String,
}

impl AppConfig {
    /// The embedded default: in memory, development secrets, 64 KiB bodies, the default
    /// [`ServerLimits`].
    pub fn embedded() -> Self {
        Self {
            backend: Backend::Memory,
            identity: IdentityConfig::development(),
            body_limit: 64 * 1024,
            server: ServerLimits::default(),
            master_keys: development_master_keys(),
            workflow: WorkflowConfig::default(),
            kafka: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The built-in master key, for development only (production mode refuses it).
pub const DEVELOPMENT_MASTER_KEY: [u8; 32] = *b"ecommerce-development-master-key";

/// The master keys of development: the built-in key, version 1.
pub fn development_master_keys() -> MasterKeys {
    MasterKeys::new(MasterKey::new(1, DEVELOPMENT_MASTER_KEY), Vec::new())
        .unwrap_or_else(|_| unreachable!("one key has no duplicate version"))
}

/// Why the application did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A context's storage could not be prepared.
    #[error("cannot prepare {context}: {source}")]
    Storage {
        /// The context.
        context: &'static str,
        /// Why.
        #[source]
        source: es_core::BoxError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Every context, wired: the routers, the workflow's runtime and what the checks read. The
/// backend is chosen once, in [`start`](Self::start); nothing here depends on it.
#[derive(Clone)]
pub struct App {
    backend: &'static str,
    keys: Arc<TokenKeys>,
    body_limit: usize,
    server: ServerLimits,
    trusted_proxies: crate::http::extract::TrustedProxies,
    public: (Router, utoipa::openapi::OpenApi),
    internal: (Router, utoipa::openapi::OpenApi),
    books: Arc<dyn Books>,
    bus: Bus,
    runtime: Arc<Mutex<Arc<Runtime>>>,
    workflow: Arc<dyn Workflow>,
    /// The last answer of the storage and the bus to `/ready`, and when.
    checked: Arc<tokio::sync::Mutex<Option<Checked>>>,
}

/// An answer of the storage and the bus, and when it was had.
type Checked = (std::time::Instant, Result<(), String>);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.backend)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// What the wiring hands the application.
pub(crate) struct Parts {
    pub(crate) backend: &'static str,
    pub(crate) keys: Arc<TokenKeys>,
    pub(crate) body_limit: usize,
    pub(crate) server: ServerLimits,
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
    pub(crate) public: (Router, utoipa::openapi::OpenApi),
    pub(crate) internal: (Router, utoipa::openapi::OpenApi),
    pub(crate) books: Arc<dyn Books>,
    pub(crate) bus: Bus,
    pub(crate) runtime: Arc<Mutex<Arc<Runtime>>>,
    pub(crate) workflow: Arc<dyn Workflow>,
}

impl App {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            backend: parts.backend,
            keys: parts.keys,
            body_limit: parts.body_limit,
            server: parts.server,
            trusted_proxies: crate::http::extract::TrustedProxies(parts.trusted_proxies.into()),
            public: parts.public,
            internal: parts.internal,
            books: parts.books,
            bus: parts.bus,
            runtime: parts.runtime,
            workflow: parts.workflow,
            checked: Arc::default(),
        }
    }

    /// The running workflow.
    pub fn runtime(&self) -> Arc<Runtime> {
        lock(&self.runtime).clone()
    }

    /// Stops the workflow's relays, consumers and scheduler (gracefully: in-flight messages
    /// finish; or abruptly, as a crash would, when `crash`) and starts them again: they resume
    /// from their checkpoints and committed offsets.
    ///
    /// # Errors
    /// When the workflow cannot start again.
    pub async fn restart_workflow(&self, crash: bool) -> Result<(), RuntimeError> {
        let old = self.runtime();
        if crash {
            old.abort().await;
        } else {
            old.shutdown().await;
        }
        let new = self.workflow.start()?;
        *lock(&self.runtime) = new;
        Ok(())
    }

    /// Starts a consumer group held back by [`WorkflowConfig::held`]; returns whether it was.
    /// (On Kafka every handler shares one group: a held one starts in a group of its own.)
    pub fn release(&self, group: &str) -> bool {
        self.workflow.release(&self.runtime(), group)
    }

    /// What the invariants check: orders, stock, payments and the order saga.
    pub fn books(&self) -> Arc<dyn Books> {
        self.books.clone()
    }

    /// What the operational view reads.
    pub fn operations(&self) -> Operations {
        Operations {
            backend: self.backend,
            runtime: self.runtime.clone(),
            books: self.books.clone(),
        }
    }

    /// The backend's name (`memory`, `postgres`).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The token keys (to mint tokens in tests and tools).
    pub fn keys(&self) -> &Arc<TokenKeys> {
        &self.keys
    }

    /// The public API's OpenAPI document.
    pub fn public_openapi(&self) -> utoipa::openapi::OpenApi {
        self.public.1.clone()
    }

    /// The internal API's OpenAPI document.
    pub fn internal_openapi(&self) -> utoipa::openapi::OpenApi {
        self.internal.1.clone()
    }

    /// The public router: `/api/v2/...`, `/health`, `/ready` and `/api/v2/openapi.json`.
    /// Internal routes are not on it.
    pub fn public_router(&self) -> Router {
        let openapi = Arc::new(self.public.1.clone());
        let router = self
            .public
            .0
            .clone()
            .route("/health", get(health))
            .route("/ready", get(ready).with_state(self.clone()))
            .route(
                "/api/v2/openapi.json",
                get(move || {
                    let openapi = openapi.clone();
                    async move { axum::Json(openapi.as_ref().clone()) }
                }),
            );
        self.finish(router)
    }

    /// The internal router: `/api/v2/internal/...` (M2M tokens) and its OpenAPI document.
    pub fn internal_router(&self) -> Router {
        let openapi = Arc::new(self.internal.1.clone());
        let router = self
            .internal
            .0
            .clone()
            .route(
                "/api/v2/internal/openapi.json",
                get(move || {
                    let openapi = openapi.clone();
                    async move { axum::Json(openapi.as_ref().clone()) }
                }),
            )
            .route("/metrics", get(metrics))
            .route("/ready", get(ready_in_detail).with_state(self.clone()));
        self.finish(router)
    }

    fn finish(&self, router: Router) -> Router {
        router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(axum::Extension(self.keys.clone()))
            .layer(axum::Extension(self.trusted_proxies.clone()))
            .layer(axum::middleware::from_fn(problems_only))
            .layer(axum::middleware::from_fn(trace_requests))
    }

    /// Serves the public and internal routers until `shutdown` completes, then drains
    /// in-flight requests.
    ///
    /// # Errors
    /// [`StartError::Bind`] when a listener cannot be bound.
    pub async fn serve(
        &self,
        public_addr: SocketAddr,
        internal_addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let public = bind(public_addr).await?;
        let internal = bind(internal_addr).await?;
        self.serve_on(public, internal, shutdown).await;
        Ok(())
    }

    /// [`serve`](Self::serve) on listeners already bound (to port 0, say), within the
    /// configured [`ServerLimits`] on each.
    pub async fn serve_on(
        &self,
        public: TcpListener,
        internal: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let address = |listener: &TcpListener| {
            listener
                .local_addr()
                .map_or_else(|error| error.to_string(), |addr| addr.to_string())
        };
        tracing::info!(
            public = address(&public),
            internal = address(&internal),
            backend = self.backend,
            limits = ?self.server,
            "serving"
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop.send(true);
        });
        tokio::join!(
            server::serve(
                public,
                self.public_router(),
                self.server,
                signal(stopped.clone())
            ),
            server::serve(
                internal,
                self.internal_router(),
                self.server,
                signal(stopped)
            ),
        );
        self.runtime().shutdown().await;
        tracing::info!("stopped");
    }
}

/// Every metric of the process in the Prometheus text format (`es_telemetry`); for
/// scrapers, on the internal listener, without a token. 503 when telemetry was not set up.
async fn metrics() -> Result<([(axum::http::header::HeaderName, &'static str); 1], String), ApiError>
{
    let text = es_telemetry::render_metrics().ok_or_else(|| {
        ApiError::Unavailable("telemetry is not set up in this process".to_owned())
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            es_telemetry::METRICS_CONTENT_TYPE,
        )],
        text,
    ))
}

/// A known route asked with a method it does not take: problem+json, like every error.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("this route does not take {method}"))
}

async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        backend: None,
        bus: None,
    })
}

/// Ready once the storage and the bus answer and every workflow service runs and is ready
/// (each consumer has its partitions): a 503 names those that are not.
async fn ready(State(app): State<App>) -> Result<axum::Json<Health>, ApiError> {
    readiness(&app, false).await
}

/// `/ready` on the internal listener: the same, saying what does not answer.
async fn ready_in_detail(State(app): State<App>) -> Result<axum::Json<Health>, ApiError> {
    readiness(&app, true).await
}

/// How long the storage's and the bus's answers stand for `/ready` (they are asked at most
/// once per this, one caller at a time, however many ask).
const READY_CHECK_TTL: std::time::Duration = std::time::Duration::from_secs(1);

async fn readiness(app: &App, detail: bool) -> Result<axum::Json<Health>, ApiError> {
    let bus = &app.bus;
    let dependencies = {
        let mut last = app.checked.lock().await;
        match &*last {
            Some((at, result)) if at.elapsed() < READY_CHECK_TTL => result.clone(),
            _ => {
                let result = match app.workflow.check().await {
                    Err(error) => Err(format!("storage: {error}")),
                    Ok(()) => bus.check().await.map_err(|error| error.to_string()),
                };
                *last = Some((std::time::Instant::now(), result.clone()));
                result
            }
        }
    };
    if let Err(error) = dependencies {
        return Err(ApiError::Unavailable(if detail {
            error
        } else {
            "not ready: the storage or the bus does not answer".to_owned()
        }));
    }
    let runtime = app.runtime();
    if !runtime.is_ready() {
        let waiting: Vec<String> = runtime
            .services()
            .into_iter()
            .filter(|service| !service.ready)
            .map(|service| format!("{} ({:?})", service.name, service.state))
            .collect();
        return Err(ApiError::Unavailable(format!(
            "not ready: {}",
            waiting.join(", ")
        )));
    }
    Ok(axum::Json(Health {
        status: "ready".to_owned(),
        backend: Some(app.backend.to_owned()),
        bus: Some(bus.name().to_owned()),
    }))
}
