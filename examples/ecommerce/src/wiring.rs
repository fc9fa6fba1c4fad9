//! The composition root's wiring, written once for any backend: every context on its store,
//! the adapters between them, their handlers, the relays, the consumers, the saga and its
//! deadlines, and the orders view, registered with the workflow's runtime.

use std::sync::{Arc, Mutex};

use chrono::TimeDelta;
use es_core::memory::MemoryBackend;
use es_core::privacy::Privacy;
use es_core::{Clock, SystemClock};
use es_saga::SagaRunner;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::app::{App, AppConfig, Parts, StartError};
use crate::auth::TokenKeys;
use crate::backend::{Backend, ShopBackend};
use crate::catalog::Catalog;
use crate::customers::Customers;
use crate::http::{InternalApi, PublicApi};
use crate::identity::Identity;
use crate::invariants::{Books, ContextBooks, LocalLedgers};
use crate::inventory::Inventory;
use crate::messages::topics;
use crate::ops::Operations;
use crate::orders::{Orders, OrdersClients};
use crate::payments::Payments;
use crate::quotes::Quotes;
use crate::runtime::bus::Bus;
use crate::runtime::{SagaParts, Workflow, WorkflowServices, consumer};
use crate::shipments::Shipments;
use crate::workflow::saga::{self, OrderSaga};
use crate::{catalog, customers, identity, inventory, ops, orders, payments, quotes};

impl App {
    /// Prepares every context's storage on the configured backend (chosen here, once) and
    /// wires the contexts together.
    ///
    /// # Errors
    /// [`StartError::Storage`] when a schema cannot be migrated or seeded.
    pub async fn start(config: AppConfig) -> Result<Self, StartError> {
        match config.backend.clone() {
            Backend::Memory => wire(MemoryBackend::new(), config).await,
            Backend::Postgres(pg) => wire(pg, config).await,
        }
    }
}

/// Prepares every context on `backend` and wires them together.
async fn wire<B: ShopBackend>(backend: B, config: AppConfig) -> Result<App, StartError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = Arc::new(
        TokenKeys::new(config.identity.signing_secret.as_bytes()).map_err(fail("identity"))?,
    );
    let store = |context: &'static str| {
        let backend = backend.clone();
        async move { backend.store(context).await.map_err(fail(context)) }
    };
    let privacy = Privacy::new(
        backend
            .key_store(config.master_keys.clone())
            .await
            .map_err(fail("privacy"))?,
    );
    let identity = Arc::new(
        Identity::new(
            store("identity").await?,
            keys.clone(),
            config.identity,
            clock.clone(),
            privacy.clone(),
        )
        .await
        .map_err(fail("identity"))?,
    );
    let customers = Arc::new(Customers::new(
        store("customers").await?,
        identity.clone(),
        clock.clone(),
        privacy.clone(),
    ));
    let inventory = Arc::new(
        Inventory::open(
            store("inventory").await?,
            clock.clone(),
            &catalog::product_ids(),
        )
        .await
        .map_err(fail("inventory"))?,
    );
    let products = backend.products().await.map_err(fail("catalog"))?;
    let catalog = Arc::new(Catalog::new(products, inventory.clone()));
    let quotes = Arc::new(Quotes::new(
        store("quotes").await?,
        catalog.clone(),
        clock.clone(),
    ));
    let orders_store = store("orders").await?;
    let view = backend.orders_view(&orders_store, &privacy);
    let orders = Arc::new(Orders::new(
        orders_store.clone(),
        view,
        OrdersClients {
            quotes: quotes.clone(),
            addresses: customers.clone(),
            privacy: privacy.clone(),
        },
        clock.clone(),
    ));
    orders.prepare().await.map_err(fail("the orders view"))?;
    let workflow = config.workflow;
    let payments = Arc::new(Payments::new(
        store("payments").await?,
        customers.clone(),
        workflow.failures,
        clock.clone(),
    ));
    let shipments = Arc::new(Shipments::new(
        store("shipments").await?,
        workflow.failures,
        clock.clone(),
        privacy.clone(),
    ));
    let saga_store = store("saga").await?;
    let sagas = backend.sagas(&saga_store);
    let step_timeout = TimeDelta::from_std(workflow.step_timeout).unwrap_or(TimeDelta::seconds(60));
    let saga = Arc::new(
        SagaRunner::new(OrderSaga { step_timeout }, sagas.clone()).with_privacy(privacy.clone()),
    );
    let kafka = config.kafka.as_ref();
    let bus = Bus::new(
        kafka.map(|k| (k.config.clone(), k.topic_prefix.clone())),
        &workflow,
    );
    bus.prepare(workflow.partitions)
        .await
        .map_err(fail("the message bus"))?;
    let consumers = vec![
        consumer("order-saga", &saga::TOPICS, (*saga).clone()),
        consumer(
            "inventory",
            &[topics::INVENTORY_COMMANDS],
            inventory.handlers(),
        ),
        consumer("payments", &[topics::PAYMENT_COMMANDS], payments.handlers()),
        consumer(
            "shipments",
            &[topics::SHIPMENT_COMMANDS],
            shipments.handlers(),
        ),
        consumer("orders", &[topics::ORDER_COMMANDS], orders.handlers()),
    ];
    let outboxes = vec![
        ("inventory", inventory.store().clone()),
        ("orders", orders_store),
        ("payments", payments.store().clone()),
        ("shipments", shipments.store().clone()),
    ];
    let books: Arc<dyn Books> = Arc::new(ContextBooks {
        orders: orders.clone(),
        ledgers: Arc::new(LocalLedgers {
            inventory: inventory.clone(),
            payments: payments.clone(),
        }),
        saga: saga.clone(),
    });
    let wiring = Arc::new(WorkflowServices {
        checkpoints: backend.checkpoints(&saga_store),
        paused: backend.paused_partitions(&saga_store),
        leases: backend.relay_leases(&saga_store),
        backend,
        bus: bus.clone(),
        workflow,
        outboxes,
        saga: Some(SagaParts {
            sagas,
            runner: saga,
        }),
        orders: Some(orders.clone()),
        consumers,
        // Every context runs here: every topic is written and read in this process alone.
        local: topics::ALL.to_vec(),
        group: "ecommerce".to_owned(),
        held: Mutex::new(workflow.held.iter().map(|g| (*g).to_owned()).collect()),
    });
    let runtime = Arc::new(Mutex::new(wiring.start().map_err(fail("the workflow"))?));
    let operations = Operations {
        backend: B::NAME,
        runtime: runtime.clone(),
        books: books.clone(),
    };
    let public = OpenApiRouter::with_openapi(PublicApi::openapi())
        .merge(identity::routes::public().with_state(identity.clone()))
        .merge(customers::routes::public().with_state(customers.clone()))
        .merge(catalog::routes::public().with_state(catalog.clone()))
        .merge(inventory::routes::public().with_state(inventory.clone()))
        .merge(quotes::routes::public().with_state(quotes.clone()))
        .merge(orders::routes::public().with_state(orders))
        .merge(payments::routes::public().with_state(payments.clone()));
    let internal = OpenApiRouter::with_openapi(InternalApi::openapi())
        .merge(identity::routes::internal().with_state(identity))
        .merge(customers::routes::internal().with_state(customers))
        .merge(customers::keys::internal().with_state(privacy.keys().clone()))
        .merge(inventory::routes::internal().with_state(inventory))
        .merge(payments::routes::internal().with_state(payments))
        .merge(catalog::routes::internal().with_state(catalog))
        .merge(quotes::routes::internal().with_state(quotes))
        .merge(ops::internal().with_state(operations));
    Ok(App::new(Parts {
        backend: B::NAME,
        keys,
        body_limit: config.body_limit,
        server: config.server,
        trusted_proxies: config.trusted_proxies,
        public: documented(public),
        internal: documented(internal),
        books,
        bus,
        runtime,
        workflow: wiring,
    }))
}

/// The router and its OpenAPI document, every error answer listed.
pub(crate) fn documented(router: OpenApiRouter) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = router.split_for_parts();
    crate::http::document_errors(&mut openapi);
    (router, openapi)
}

/// A start-up failure of `context`.
pub(crate) fn fail<E: Into<es_core::BoxError>>(context: &'static str) -> impl Fn(E) -> StartError {
    move |e| StartError::Storage {
        context,
        source: e.into(),
    }
}
