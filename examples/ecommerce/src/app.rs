//! The whole application in one process: every context wired to one backend, the public and
//! internal routers, and serving them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use es_core::{Clock, SystemClock};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::auth::TokenKeys;
use crate::backend::Backend;
use crate::catalog::{Catalog, NoInventory};
use crate::config::IdentityConfig;
use crate::customers::Customers;
use crate::http::problem::ApiError;
use crate::http::{Health, InternalApi, PublicApi, not_found, trace_requests};
use crate::identity::{AccountsClient, Identity};
use crate::{catalog, customers, identity};

/// What the application needs to start.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where contexts keep their data.
    pub backend: Backend,
    /// Identity's settings.
    pub identity: IdentityConfig,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
}

impl AppConfig {
    /// The embedded default: in memory, development secrets, 64 KiB bodies.
    pub fn embedded() -> Self {
        Self {
            backend: Backend::Memory,
            identity: IdentityConfig::development(),
            body_limit: 64 * 1024,
        }
    }
}

/// Why the application did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A context's storage could not be prepared.
    #[error("cannot prepare {context}: {reason}")]
    Storage {
        /// The context.
        context: &'static str,
        /// Why.
        reason: String,
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

/// Every context, wired.
#[derive(Debug, Clone)]
pub struct App {
    backend: Backend,
    keys: Arc<TokenKeys>,
    body_limit: usize,
    /// Identity.
    pub identity: Arc<Identity>,
    /// Customers.
    pub customers: Arc<Customers>,
    /// The product catalog.
    pub catalog: Arc<Catalog>,
}

impl App {
    /// Prepares every context's storage and wires the contexts together.
    ///
    /// # Errors
    /// [`StartError::Storage`] when a schema cannot be migrated or seeded.
    pub async fn start(config: AppConfig) -> Result<Self, StartError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let keys = TokenKeys::new(config.identity.signing_secret.as_bytes()).map_err(|e| {
            StartError::Storage {
                context: "identity",
                reason: e.to_string(),
            }
        })?;
        let keys = Arc::new(keys);
        let backend = config.backend;
        let storage = |context: &'static str| {
            move |e: &dyn std::fmt::Display| StartError::Storage {
                context,
                reason: e.to_string(),
            }
        };
        let identity_store = backend
            .event_store("identity")
            .await
            .map_err(|e| storage("identity")(&e))?;
        let identity = Arc::new(
            Identity::new(identity_store, keys.clone(), config.identity, clock.clone())
                .await
                .map_err(|e| storage("identity")(&e))?,
        );
        let customers_store = backend
            .event_store("customers")
            .await
            .map_err(|e| storage("customers")(&e))?;
        let accounts: Arc<dyn AccountsClient> = identity.clone();
        let customers = Arc::new(Customers::new(customers_store, accounts, clock.clone()));
        let catalog = Arc::new(
            Catalog::open(&backend, Arc::new(NoInventory))
                .await
                .map_err(|e| storage("catalog")(&e))?,
        );
        Ok(Self {
            backend,
            keys,
            body_limit: config.body_limit,
            identity,
            customers,
            catalog,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The token keys (to mint tokens in tests and tools).
    pub fn keys(&self) -> &Arc<TokenKeys> {
        &self.keys
    }

    fn public_api(&self) -> OpenApiRouter {
        OpenApiRouter::with_openapi(PublicApi::openapi())
            .merge(identity::routes::public().with_state(self.identity.clone()))
            .merge(customers::routes::public().with_state(self.customers.clone()))
            .merge(catalog::routes::public().with_state(self.catalog.clone()))
    }

    fn internal_api(&self) -> OpenApiRouter {
        OpenApiRouter::with_openapi(InternalApi::openapi())
            .merge(identity::routes::internal().with_state(self.identity.clone()))
            .merge(customers::routes::internal().with_state(self.customers.clone()))
    }

    /// The public API's OpenAPI document.
    pub fn public_openapi(&self) -> utoipa::openapi::OpenApi {
        self.public_api().into_openapi()
    }

    /// The internal API's OpenAPI document.
    pub fn internal_openapi(&self) -> utoipa::openapi::OpenApi {
        self.internal_api().into_openapi()
    }

    /// The public router: `/api/v2/...`, `/health`, `/ready` and `/api/v2/openapi.json`.
    /// Internal routes are not on it.
    pub fn public_router(&self) -> Router {
        let (router, openapi) = self.public_api().split_for_parts();
        let openapi = Arc::new(openapi);
        let router = router
            .route("/health", get(health))
            .route("/ready", get(ready).with_state(self.backend.clone()))
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
        let (router, openapi) = self.internal_api().split_for_parts();
        let openapi = Arc::new(openapi);
        let router = router.route(
            "/api/v2/internal/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref().clone()) }
            }),
        );
        self.finish(router)
    }

    fn finish(&self, router: Router) -> Router {
        router
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(axum::Extension(self.keys.clone()))
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
        tracing::info!(public = %public_addr, internal = %internal_addr, backend = self.backend.name(), "serving");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let public_server = axum::serve(public, self.public_router())
            .with_graceful_shutdown(signal(stopped.clone()));
        let internal_server =
            axum::serve(internal, self.internal_router()).with_graceful_shutdown(signal(stopped));
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight requests");
            let _ = stop.send(true);
        });
        let (public_result, internal_result) = tokio::join!(public_server, internal_server);
        for result in [public_result, internal_result] {
            if let Err(error) = result {
                tracing::error!(%error, "listener failed");
            }
        }
        Ok(())
    }
}

async fn health() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".to_owned(),
        backend: None,
    })
}

async fn ready(State(backend): State<Backend>) -> Result<axum::Json<Health>, ApiError> {
    backend.check().await.map_err(ApiError::Unavailable)?;
    Ok(axum::Json(Health {
        status: "ready".to_owned(),
        backend: Some(backend.name().to_owned()),
    }))
}
