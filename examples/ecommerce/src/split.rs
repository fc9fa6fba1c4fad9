//! The shop split into services (`ecommerce serve --service NAME`): one context per process,
//! on its own schemas, with its own relay, consumer group and projections, calling the other
//! services through the client traits over HTTP (`crate::remote`) and reaching the
//! customers' key store the same way. Orders runs the ordering workflow's saga too: the saga
//! answers every step of an order and keeps its state beside the orders it drives, and a
//! process of its own would add a hop and a process at rest for nothing it could do alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::TimeDelta;
use es_core::memory::MemoryBackend;
use es_core::privacy::Privacy;
use es_core::{BoxError, Clock, SystemClock};
use es_saga::SagaRunner;
use tokio::sync::broadcast;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::app::{App, AppConfig, Parts, StartError};
use crate::auth::TokenKeys;
use crate::backend::{Backend, ShopBackend};
use crate::catalog::Catalog;
use crate::customers::Customers;
use crate::http::{InternalApi, PublicApi};
use crate::identity::Identity;
use crate::invariants::{Books, ContextBooks, OrderPayment};
use crate::inventory::{Inventory, ReservationStatus, StockUnit};
use crate::messages::topics;
use crate::ops::Operations;
use crate::orders::{Notification, OrderSummary, Orders, OrdersClients, RebuildError, ViewStatus};
use crate::payments::Payments;
use crate::quotes::Quotes;
use crate::remote::clients::{HttpAccounts, HttpCustomers, HttpPrices, HttpQuotes, HttpStock};
use crate::remote::keys::HttpKeyStore;
use crate::remote::ledgers::HttpLedgers;
use crate::remote::{CallPolicy, ClientCredentials, MachineTokens, ServiceClient};
use crate::runtime::bus::Bus;
use crate::runtime::{SagaParts, WorkflowServices, consumer};
use crate::shipments::Shipments;
use crate::wiring::fail;
use crate::workflow::saga::{self, OrderSaga, OrderSagaState};
use crate::{catalog, customers, identity, inventory, ops, orders, payments, quotes};

/// A service of the split deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ServiceName {
    /// Accounts, sign-in and machine tokens.
    Identity,
    /// Customers, and the data subjects' key store.
    Customers,
    /// The products and their prices.
    Catalog,
    /// Stock and reservations.
    Inventory,
    /// Quotes (the cart).
    Quotes,
    /// Orders, their view and notifications, and the ordering workflow's saga.
    Orders,
    /// Credit and payments.
    Payments,
    /// Shipments.
    Shipments,
}

impl ServiceName {
    /// Every service, in start order (those others call first).
    pub const ALL: [ServiceName; 8] = [
        ServiceName::Identity,
        ServiceName::Customers,
        ServiceName::Catalog,
        ServiceName::Inventory,
        ServiceName::Quotes,
        ServiceName::Orders,
        ServiceName::Payments,
        ServiceName::Shipments,
    ];

    /// Its name (`orders`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Identity => "identity",
            ServiceName::Customers => "customers",
            ServiceName::Catalog => "catalog",
            ServiceName::Inventory => "inventory",
            ServiceName::Quotes => "quotes",
            ServiceName::Orders => "orders",
            ServiceName::Payments => "payments",
            ServiceName::Shipments => "shipments",
        }
    }

    /// The contexts whose schemas (`{prefix}_{context}`) it owns, its home first (its
    /// relay checkpoints, paused partitions and leases live there).
    pub fn schemas(self) -> &'static [&'static str] {
        match self {
            ServiceName::Customers => &["customers", "privacy"],
            ServiceName::Orders => &["orders", "saga"],
            ServiceName::Identity => &["identity"],
            ServiceName::Catalog => &["catalog"],
            ServiceName::Inventory => &["inventory"],
            ServiceName::Quotes => &["quotes"],
            ServiceName::Payments => &["payments"],
            ServiceName::Shipments => &["shipments"],
        }
    }

    /// Its default public and internal ports on one machine (the gateway's
    /// `gateway.json` names the public ones).
    pub fn ports(self) -> (u16, u16) {
        let index = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        let offset = u16::try_from(index).unwrap_or(0) + 1;
        (5100 + offset, 5200 + offset)
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a service of the split deployment needs to know of the others.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    /// The service this process runs.
    pub service: ServiceName,
    /// Each service's internal base URL.
    pub internal: BTreeMap<ServiceName, String>,
    /// The identity service's public base URL (machine tokens come from there).
    pub identity_url: String,
    /// The machine client this service calls the others as.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Timeouts and retries of its calls.
    pub calls: CallPolicy,
}

impl SplitConfig {
    /// `service` with every service on 127.0.0.1 at its default ports and the development
    /// machine client.
    pub fn local(service: ServiceName) -> Self {
        Self {
            service,
            internal: ServiceName::ALL
                .iter()
                .map(|s| (*s, format!("http://127.0.0.1:{}", s.ports().1)))
                .collect(),
            identity_url: format!("http://127.0.0.1:{}", ServiceName::Identity.ports().0),
            client_id: identity::DEVELOPMENT_CLIENT_ID.to_owned(),
            client_secret: identity::DEVELOPMENT_CLIENT_SECRET.to_owned(),
            calls: CallPolicy::default(),
        }
    }
}

impl App {
    /// Starts one service of the split deployment on the configured backend.
    ///
    /// # Errors
    /// [`StartError::Storage`] when a schema cannot be migrated or seeded, or the bus
    /// prepared.
    pub async fn start_service(config: AppConfig, split: SplitConfig) -> Result<Self, StartError> {
        match config.backend.clone() {
            Backend::Memory => wire(MemoryBackend::new(), config, split).await,
            Backend::Postgres(pg) => wire(pg, config, split).await,
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn wire<B: ShopBackend>(
    backend: B,
    config: AppConfig,
    split: SplitConfig,
) -> Result<App, StartError> {
    let service = split.service;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = Arc::new(
        TokenKeys::new(config.identity.signing_secret.as_bytes()).map_err(fail("identity"))?,
    );
    let tokens = Arc::new(MachineTokens::new(ClientCredentials {
        identity_url: split.identity_url.clone(),
        client_id: split.client_id.clone(),
        client_secret: split.client_secret.clone(),
        scope: None,
    }));
    let client = |name: ServiceName| {
        let url = split.internal.get(&name).cloned().unwrap_or_default();
        ServiceClient::new(name.as_str(), &url, tokens.clone()).with_policy(split.calls)
    };
    let store = |context: &'static str| {
        let backend = backend.clone();
        async move { backend.store(context).await.map_err(fail(context)) }
    };
    let privacy = if service == ServiceName::Customers {
        Privacy::new(
            backend
                .key_store(config.master_keys.clone())
                .await
                .map_err(fail("privacy"))?,
        )
    } else {
        Privacy::new(Arc::new(HttpKeyStore(client(ServiceName::Customers))))
    };
    let workflow = config.workflow;
    let bus = Bus::new(
        config
            .kafka
            .as_ref()
            .map(|k| (k.config.clone(), k.topic_prefix.clone())),
        &workflow,
    );
    bus.prepare(workflow.partitions)
        .await
        .map_err(fail("the message bus"))?;
    let home = store(service.schemas()[0]).await?;
    let mut public = OpenApiRouter::with_openapi(PublicApi::openapi());
    let mut internal = OpenApiRouter::with_openapi(InternalApi::openapi());
    let mut outboxes = Vec::new();
    let mut consumers = Vec::new();
    let mut saga_parts = None;
    let mut view = None;
    let mut books: Arc<dyn Books> = Arc::new(ServiceBooks {
        service,
        push: broadcast::channel(1).0,
    });
    match service {
        ServiceName::Identity => {
            let identity = Arc::new(
                Identity::new(
                    home.clone(),
                    keys.clone(),
                    config.identity,
                    clock.clone(),
                    privacy.clone(),
                )
                .await
                .map_err(fail("identity"))?,
            );
            public = public.merge(identity::routes::public().with_state(identity.clone()));
            internal = internal.merge(identity::routes::internal().with_state(identity));
        }
        ServiceName::Customers => {
            let customers = Arc::new(Customers::new(
                home.clone(),
                Arc::new(HttpAccounts(client(ServiceName::Identity))),
                clock.clone(),
                privacy.clone(),
            ));
            public = public.merge(customers::routes::public().with_state(customers.clone()));
            internal = internal
                .merge(customers::routes::internal().with_state(customers))
                .merge(customers::keys::internal().with_state(privacy.keys().clone()));
        }
        ServiceName::Catalog => {
            let products = backend.products().await.map_err(fail("catalog"))?;
            let catalog = Arc::new(Catalog::new(
                products,
                Arc::new(HttpStock(client(ServiceName::Inventory))),
            ));
            public = public.merge(catalog::routes::public().with_state(catalog.clone()));
            internal = internal.merge(catalog::routes::internal().with_state(catalog));
        }
        ServiceName::Inventory => {
            let inventory = Arc::new(
                Inventory::open(home.clone(), clock.clone(), &catalog::product_ids())
                    .await
                    .map_err(fail("inventory"))?,
            );
            consumers.push(consumer(
                "inventory",
                &[topics::INVENTORY_COMMANDS],
                inventory.handlers(),
            ));
            outboxes.push(("inventory", home.clone()));
            public = public.merge(inventory::routes::public().with_state(inventory.clone()));
            internal = internal.merge(inventory::routes::internal().with_state(inventory));
        }
        ServiceName::Quotes => {
            let quotes = Arc::new(Quotes::new(
                home.clone(),
                Arc::new(HttpPrices(client(ServiceName::Catalog))),
                clock.clone(),
            ));
            public = public.merge(quotes::routes::public().with_state(quotes.clone()));
            internal = internal.merge(quotes::routes::internal().with_state(quotes));
        }
        ServiceName::Orders => {
            let read_model = backend.orders_view(&home, &privacy);
            let orders = Arc::new(Orders::new(
                home.clone(),
                read_model,
                OrdersClients {
                    quotes: Arc::new(HttpQuotes(client(ServiceName::Quotes))),
                    addresses: Arc::new(HttpCustomers(client(ServiceName::Customers))),
                    privacy: privacy.clone(),
                },
                clock.clone(),
            ));
            orders.prepare().await.map_err(fail("the orders view"))?;
            let saga_store = store("saga").await?;
            let sagas = backend.sagas(&saga_store);
            let step_timeout =
                TimeDelta::from_std(workflow.step_timeout).unwrap_or(TimeDelta::seconds(60));
            let runner = Arc::new(
                SagaRunner::new(OrderSaga { step_timeout }, sagas.clone())
                    .with_privacy(privacy.clone()),
            );
            consumers.push(consumer("order-saga", &saga::TOPICS, (*runner).clone()));
            // The invariants span orders, the saga, inventory and payments: the orders
            // service checks them, reading the other two over their internal routes.
            books = Arc::new(ContextBooks {
                orders: orders.clone(),
                ledgers: Arc::new(HttpLedgers {
                    inventory: client(ServiceName::Inventory),
                    payments: client(ServiceName::Payments),
                }),
                saga: runner.clone(),
            });
            consumers.push(consumer(
                "orders",
                &[topics::ORDER_COMMANDS],
                orders.handlers(),
            ));
            outboxes.push(("orders", home.clone()));
            saga_parts = Some(SagaParts { sagas, runner });
            view = Some(orders.clone());
            public = public.merge(orders::routes::public().with_state(orders));
        }
        ServiceName::Payments => {
            let payments = Arc::new(Payments::new(
                home.clone(),
                Arc::new(HttpCustomers(client(ServiceName::Customers))),
                workflow.failures,
                clock.clone(),
            ));
            consumers.push(consumer(
                "payments",
                &[topics::PAYMENT_COMMANDS],
                payments.handlers(),
            ));
            public = public.merge(payments::routes::public().with_state(payments.clone()));
            internal = internal.merge(payments::routes::internal().with_state(payments));
            outboxes.push(("payments", home.clone()));
        }
        ServiceName::Shipments => {
            let shipments = Arc::new(Shipments::new(
                home.clone(),
                workflow.failures,
                clock.clone(),
                privacy.clone(),
            ));
            consumers.push(consumer(
                "shipments",
                &[topics::SHIPMENT_COMMANDS],
                shipments.handlers(),
            ));
            outboxes.push(("shipments", home.clone()));
        }
    }
    let wiring = Arc::new(WorkflowServices {
        checkpoints: backend.checkpoints(&home),
        paused: backend.paused_partitions(&home),
        leases: backend.relay_leases(&home),
        backend,
        bus: bus.clone(),
        workflow,
        outboxes,
        saga: saga_parts,
        orders: view,
        consumers,
        // The orders service writes and reads these two alone: the saga's commands to the
        // orders context, and the orders context's events to the saga.
        local: if service == ServiceName::Orders {
            vec![topics::ORDERS, topics::ORDER_COMMANDS]
        } else {
            Vec::new()
        },
        group: format!("ecommerce-{service}"),
        held: Mutex::new(workflow.held.iter().map(|g| (*g).to_owned()).collect()),
    });
    let runtime = Arc::new(Mutex::new(
        crate::runtime::Workflow::start(wiring.as_ref()).map_err(fail("the workflow"))?,
    ));
    let operations = Operations {
        backend: B::NAME,
        runtime: runtime.clone(),
        books: books.clone(),
    };
    internal = internal.merge(ops::internal().with_state(operations));
    Ok(App::new(Parts {
        backend: B::NAME,
        keys,
        body_limit: config.body_limit,
        server: config.server,
        trusted_proxies: config.trusted_proxies,
        public: crate::wiring::documented(public),
        internal: crate::wiring::documented(internal),
        books,
        bus,
        runtime,
        workflow: wiring,
    }))
}

/// The books of a service other than orders: it keeps no order, so it checks no invariant
/// (the orders service checks them, reading inventory and payments over HTTP) and its status
/// says so.
struct ServiceBooks {
    service: ServiceName,
    /// Notifications of a service without orders: none.
    push: broadcast::Sender<Notification>,
}

impl std::fmt::Debug for ServiceBooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBooks")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServiceBooks {
    fn elsewhere(&self, what: &str) -> BoxError {
        format!(
            "{what} is kept by the orders service, not the {} service",
            self.service
        )
        .into()
    }
}

#[async_trait]
impl Books for ServiceBooks {
    fn checks_invariants(&self) -> bool {
        false
    }

    async fn orders(&self) -> Result<Vec<OrderSummary>, BoxError> {
        Err(self.elsewhere("the orders view"))
    }

    async fn notifications(
        &self,
        _customer_id: Uuid,
        _after: u64,
    ) -> Result<Vec<Notification>, BoxError> {
        Err(self.elsewhere("the notifications"))
    }

    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.push.subscribe()
    }

    async fn view_status(&self) -> ViewStatus {
        ViewStatus {
            name: "orders-view".to_owned(),
            state: "elsewhere".to_owned(),
            lag_events: 0,
            lag_seconds: 0.0,
            paused_reason: None,
            error: Some(format!(
                "the orders view runs in the orders service, not {}",
                self.service
            )),
            version: 0,
            rebuilding: None,
        }
    }

    async fn rebuild_view(&self) -> Result<u32, RebuildError> {
        Err(RebuildError::Storage(crate::storage::StorageError::other(
            self.elsewhere("the orders view"),
        )))
    }

    async fn reservation(&self, _order_id: Uuid) -> Result<Option<ReservationStatus>, BoxError> {
        Err(self.elsewhere("the invariants' reads"))
    }

    async fn stock(&self, _product_id: Uuid) -> Result<StockUnit, BoxError> {
        Err(self.elsewhere("the invariants' reads"))
    }

    async fn payment(&self, _customer_id: Uuid, _order_id: Uuid) -> Result<OrderPayment, BoxError> {
        Err(self.elsewhere("the invariants' reads"))
    }

    async fn saga(
        &self,
        _order_id: Uuid,
    ) -> Result<Option<es_saga::SagaView<OrderSagaState>>, BoxError> {
        Err(self.elsewhere("the saga"))
    }
}
