//! The whole application in one process: every context wired to one backend, the public and
//! internal routers, and serving them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;
use es_core::{Clock, SystemClock};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use chrono::TimeDelta;
use es_core::MessageHandler;
use es_core::memory::{MemoryBus, MemoryCheckpointStore, MemoryPausedPartitions, MemorySagaStore};
use es_postgres::{PgCheckpointStore, PgSagaStore};
use es_saga::SagaRunner;

use crate::auth::TokenKeys;
use crate::backend::{Backend, ContextStore};
use crate::catalog::{Catalog, StockClient};
use crate::customers::Customers;
use crate::failures::FailureRules;
use crate::http::problem::ApiError;
use crate::http::{Health, InternalApi, PublicApi, not_found, trace_requests};
use crate::identity::{AccountsClient, Identity, IdentityConfig};
use crate::inventory::Inventory;
use crate::messages::topics;
use crate::ops::Operations;
use crate::orders::Orders;
use crate::payments::{CreditClient, Payments};
use crate::quotes::{PriceClient, Quotes, QuotesClient};
use crate::shipments::Shipments;
use crate::workflow::bus::Bus;
use crate::workflow::invariants::Books;
use crate::workflow::runtime::{OrderSagaRunner, Runtime, lock};
use crate::workflow::saga::OrderSaga;
use crate::workflow::stores::{Checkpoints, PausedStore, SagaStores};
use crate::{catalog, customers, identity, inventory, orders, quotes};

/// What the application needs to start.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where contexts keep their data.
    pub backend: Backend,
    /// Identity's settings.
    pub identity: IdentityConfig,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// The ordering workflow's settings.
    pub workflow: WorkflowConfig,
    /// Kafka, when messages go through a broker instead of the in-process bus.
    pub kafka: Option<KafkaSettings>,
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
    /// The embedded default: in memory, development secrets, 64 KiB bodies.
    pub fn embedded() -> Self {
        Self {
            backend: Backend::Memory,
            identity: IdentityConfig::development(),
            body_limit: 64 * 1024,
            workflow: WorkflowConfig::default(),
            kafka: None,
        }
    }
}

/// The ordering workflow's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkflowConfig {
    /// How long a step may go unanswered before the order is cancelled.
    pub step_timeout: Duration,
    /// How often the deadline scheduler looks for due deadlines.
    pub deadline_poll: Duration,
    /// Orders that fail on purpose.
    pub failures: FailureRules,
    /// Deliver every message twice (to show handlers are idempotent).
    pub duplicate_delivery: bool,
    /// Partitions per topic of the bus.
    pub partitions: u32,
    /// Members of the workflow's consumer group on Kafka (each handles its share of the
    /// partitions, in order per partition).
    pub consumers: usize,
    /// Consumer groups not started until [`App::release`] (to hold a context back in tests
    /// and demos: its commands wait on the bus, as if it were down).
    pub held: &'static [&'static str],
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(60),
            deadline_poll: Duration::from_millis(500),
            failures: FailureRules::default(),
            duplicate_delivery: false,
            partitions: 8,
            consumers: 4,
            held: &[],
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
    /// Inventory.
    pub inventory: Arc<Inventory>,
    /// Quotes.
    pub quotes: Arc<Quotes>,
    /// Orders.
    pub orders: Arc<Orders>,
    /// Payments.
    pub payments: Arc<Payments>,
    /// Shipments.
    pub shipments: Arc<Shipments>,
    /// The order saga.
    pub saga: Arc<OrderSagaRunner>,
    runtime: Arc<std::sync::Mutex<Arc<Runtime>>>,
    wiring: Arc<Wiring>,
}

/// The topics the order saga reads.
const SAGA_TOPICS: [&str; 4] = [
    topics::ORDERS,
    topics::INVENTORY,
    topics::PAYMENTS,
    topics::SHIPMENTS,
];

/// What the workflow's tasks are made of, kept to restart them.
struct Wiring {
    bus: Bus,
    workflow: WorkflowConfig,
    outboxes: Vec<(&'static str, ContextStore)>,
    sagas: SagaStores,
    checkpoints: Checkpoints,
    /// Where consumer partitions paused by policy are kept.
    paused: PausedStore,
    handlers: Vec<(
        &'static str,
        &'static [&'static str],
        Arc<dyn MessageHandler>,
    )>,
    held: std::sync::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring")
            .field("bus", &self.bus)
            .field("workflow", &self.workflow)
            .finish_non_exhaustive()
    }
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
        let store = |context: &'static str| {
            let backend = backend.clone();
            async move {
                backend
                    .event_store(context)
                    .await
                    .map_err(|e| storage(context)(&e))
            }
        };
        let inventory_store = store("inventory").await?;
        let inventory = Arc::new(
            Inventory::open(inventory_store.clone(), clock.clone())
                .await
                .map_err(|e| storage("inventory")(&e))?,
        );
        let stock: Arc<dyn StockClient> = inventory.clone();
        let catalog = Arc::new(
            Catalog::open(&backend, stock)
                .await
                .map_err(|e| storage("catalog")(&e))?,
        );
        let prices: Arc<dyn PriceClient> = catalog.clone();
        let quotes = Arc::new(Quotes::new(store("quotes").await?, prices, clock.clone()));
        let quotes_client: Arc<dyn QuotesClient> = quotes.clone();
        let orders_store = store("orders").await?;
        let orders = Arc::new(Orders::new(
            orders_store.clone(),
            quotes_client,
            clock.clone(),
        ));
        orders
            .prepare()
            .await
            .map_err(|e| storage("the orders view")(&e))?;
        let workflow = config.workflow;
        let credit: Arc<dyn CreditClient> = customers.clone();
        let payments_store = store("payments").await?;
        let payments = Arc::new(Payments::new(
            payments_store.clone(),
            credit,
            workflow.failures,
            clock.clone(),
        ));
        let shipments_store = store("shipments").await?;
        let shipments = Arc::new(Shipments::new(
            shipments_store.clone(),
            workflow.failures,
            clock.clone(),
        ));
        let (sagas, checkpoints, paused) = match store("saga").await? {
            ContextStore::Memory(_) => (
                SagaStores::Memory(MemorySagaStore::new()),
                Checkpoints::Memory(MemoryCheckpointStore::new()),
                PausedStore::Memory(MemoryPausedPartitions::new()),
            ),
            ContextStore::Postgres(pg) => (
                SagaStores::Postgres(PgSagaStore::new(&pg)),
                Checkpoints::Postgres(PgCheckpointStore::new(&pg)),
                PausedStore::Postgres(pg.paused_partitions()),
            ),
        };
        let step_timeout =
            TimeDelta::from_std(workflow.step_timeout).unwrap_or(TimeDelta::seconds(60));
        let saga = Arc::new(SagaRunner::new(OrderSaga { step_timeout }, sagas.clone()));

        let bus = match &config.kafka {
            None => Bus::Memory(
                MemoryBus::new()
                    .with_partitions(workflow.partitions)
                    .with_duplicate_delivery(workflow.duplicate_delivery),
            ),
            Some(kafka) => Bus::Kafka {
                config: kafka.config.clone(),
                prefix: kafka.topic_prefix.clone(),
            },
        };
        bus.prepare(workflow.partitions)
            .await
            .map_err(|e| storage("the message bus")(&e))?;
        let handlers: Vec<(
            &'static str,
            &'static [&'static str],
            Arc<dyn MessageHandler>,
        )> = vec![
            ("order-saga", &SAGA_TOPICS, saga.clone()),
            (
                "inventory",
                &[topics::INVENTORY_COMMANDS],
                inventory.clone(),
            ),
            ("payments", &[topics::PAYMENT_COMMANDS], payments.clone()),
            ("shipments", &[topics::SHIPMENT_COMMANDS], shipments.clone()),
            ("orders", &[topics::ORDER_COMMANDS], orders.clone()),
        ];
        let wiring = Arc::new(Wiring {
            bus,
            workflow,
            outboxes: vec![
                ("inventory", inventory_store),
                ("orders", orders_store),
                ("payments", payments_store),
                ("shipments", shipments_store),
            ],
            sagas,
            checkpoints,
            paused,
            handlers,
            held: std::sync::Mutex::new(workflow.held.iter().map(|g| (*g).to_owned()).collect()),
        });
        let app = Self {
            backend,
            keys,
            body_limit: config.body_limit,
            identity,
            customers,
            catalog,
            inventory,
            quotes,
            orders,
            payments,
            shipments,
            saga,
            runtime: Arc::new(std::sync::Mutex::new(Arc::new(Runtime::new(
                wiring.bus.clone(),
                false,
            )))),
            wiring,
        };
        let runtime = app
            .start_workflow()
            .map_err(|e| storage("the workflow")(&e))?;
        *lock(&app.runtime) = runtime;
        Ok(app)
    }

    /// Starts the workflow's relays, consumers (but held ones), deadline scheduler and the
    /// orders read model.
    fn start_workflow(&self) -> Result<Arc<Runtime>, String> {
        let wiring = &self.wiring;
        let runtime = Arc::new(
            Runtime::new(wiring.bus.clone(), wiring.workflow.duplicate_delivery)
                .with_paused(wiring.paused.clone()),
        );
        // On PostgreSQL, one process at a time relays each outbox: the lease of its name.
        let leases = match &wiring.sagas {
            SagaStores::Memory(_) => None,
            SagaStores::Postgres(sagas) => Some(sagas.event_store().leases()),
        };
        for (name, source) in &wiring.outboxes {
            runtime.relay(
                &format!("{name}-relay"),
                source.clone(),
                wiring.checkpoints.clone(),
                leases.clone(),
                Some(source.append_signal()),
            );
        }
        runtime.relay(
            "saga-relay",
            wiring.sagas.clone(),
            wiring.checkpoints.clone(),
            leases,
            None,
        );
        let held = lock(&wiring.held).clone();
        match &wiring.bus {
            Bus::Memory(_) => {
                for (group, topics, handler) in &wiring.handlers {
                    if !held.contains(*group) {
                        runtime.consume(group, topics, handler.clone())?;
                    }
                }
            }
            Bus::Kafka { .. } => {
                let routes: Vec<_> = wiring
                    .handlers
                    .iter()
                    .filter(|(group, _, _)| !held.contains(*group))
                    .map(|(_, topics, handler)| (*topics, handler.clone()))
                    .collect();
                runtime.consume_together("ecommerce", &routes, wiring.workflow.consumers)?;
            }
        }
        runtime.schedule(
            self.saga.clone(),
            wiring.sagas.clone(),
            wiring.workflow.deadline_poll,
        );
        let orders = self.orders.clone();
        runtime.run_until_stopped("orders-view", move |stopped| {
            orders.clone().run_view(stopped)
        });
        runtime.start();
        Ok(runtime)
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
    pub async fn restart_workflow(&self, crash: bool) -> Result<(), String> {
        let old = self.runtime();
        if crash {
            old.abort().await;
        } else {
            old.shutdown().await;
        }
        let new = self.start_workflow()?;
        *lock(&self.runtime) = new;
        Ok(())
    }

    /// Starts a consumer group held back by [`WorkflowConfig::held`]; returns whether it was.
    /// (On Kafka every handler shares one group: a held one starts in a group of its own.)
    pub fn release(&self, group: &str) -> bool {
        if !lock(&self.wiring.held).remove(group) {
            return false;
        }
        let runtime = self.runtime();
        for (name, topics, handler) in &self.wiring.handlers {
            if *name == group
                && let Err(error) = runtime.consume(name, topics, handler.clone())
            {
                tracing::error!(%group, %error, "held consumer not started");
                return false;
            }
        }
        runtime.start();
        true
    }

    /// What the invariants check: orders, stock, payments and the order saga.
    pub fn books(&self) -> Books {
        Books {
            orders: self.orders.clone(),
            inventory: self.inventory.clone(),
            payments: self.payments.clone(),
            saga: self.saga.clone(),
        }
    }

    /// What the operational view reads.
    pub fn operations(&self) -> Operations {
        Operations {
            backend: self.backend.name(),
            runtime: self.runtime.clone(),
            books: self.books(),
        }
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
            .merge(inventory::routes::public().with_state(self.inventory.clone()))
            .merge(quotes::routes::public().with_state(self.quotes.clone()))
            .merge(orders::routes::public().with_state(self.orders.clone()))
    }

    fn internal_api(&self) -> OpenApiRouter {
        OpenApiRouter::with_openapi(InternalApi::openapi())
            .merge(identity::routes::internal().with_state(self.identity.clone()))
            .merge(customers::routes::internal().with_state(self.customers.clone()))
            .merge(inventory::routes::internal().with_state(self.inventory.clone()))
            .merge(crate::ops::internal().with_state(self.operations()))
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
        let (router, openapi) = self.internal_api().split_for_parts();
        let openapi = Arc::new(openapi);
        let router = router
            .route(
                "/api/v2/internal/openapi.json",
                get(move || {
                    let openapi = openapi.clone();
                    async move { axum::Json(openapi.as_ref().clone()) }
                }),
            )
            .route("/metrics", get(metrics));
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
        self.runtime().shutdown().await;
        tracing::info!("stopped");
        Ok(())
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
    let (backend, bus) = (app.backend(), &app.wiring.bus);
    backend.check().await.map_err(ApiError::Unavailable)?;
    bus.check().await.map_err(ApiError::Unavailable)?;
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
        backend: Some(backend.name().to_owned()),
        bus: Some(bus.name().to_owned()),
    }))
}
