//! The one lifecycle of every long-running loop.

use std::sync::{Arc, Mutex};

use crate::error::BoxError;
use crate::runtime::shutdown::Shutdown;
use crate::runtime::status::{ServiceState, ServiceStatus};

/// A long-running loop (a relay, a consumer, a projection daemon, a deadline scheduler, a
/// subscription) with one lifecycle: [`run`](Service::run) until the context's shutdown fires,
/// then return; run again after it returned (after a failure, or for another leadership term).
///
/// ```
/// use es_core::runtime::{Service, ServiceContext};
///
/// struct Ticker;
///
/// #[async_trait::async_trait]
/// impl Service for Ticker {
///     fn name(&self) -> &str {
///         "ticker"
///     }
///
///     async fn run(&mut self, context: ServiceContext) -> Result<(), es_core::BoxError> {
///         let shutdown = context.shutdown();
///         tokio::select! {
///             () = shutdown.wait() => Ok(()),
///             () = async { loop { tokio::time::sleep(std::time::Duration::from_secs(1)).await } } => Ok(()),
///         }
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Service: Send + 'static {
    /// The service's name, unique in its runtime (shown in the status).
    fn name(&self) -> &str;

    /// Runs until `context`'s shutdown fires, then drains and returns `Ok`. Returning `Ok`
    /// before the shutdown means the service is done (it is not run again); an error (or a
    /// panic) has it run again after a backoff.
    ///
    /// # Errors
    /// Whatever stopped it; the runtime records it in the status and restarts it.
    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError>;

    /// Whether the service counts as ready as soon as it runs (the default). A service that
    /// must first reach something (a consumer waiting for its partitions) returns `false`
    /// and reports readiness with [`ServiceContext::set_ready`].
    fn ready_at_start(&self) -> bool {
        true
    }
}

/// What a running [`Service`] is given: the shutdown signal to watch, and a way to report its
/// state (leading or standby, a lag) to the runtime's status.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    shutdown: Shutdown,
    status: Arc<Mutex<ServiceStatus>>,
}

impl ServiceContext {
    /// A context watching `shutdown`, reporting into `status`.
    pub(crate) fn new(shutdown: Shutdown, status: Arc<Mutex<ServiceStatus>>) -> Self {
        Self { shutdown, status }
    }

    /// A context for running a service outside a runtime (its reports go nowhere else).
    pub fn detached(name: impl Into<String>, shutdown: Shutdown) -> Self {
        let status = ServiceStatus::new(name.into());
        Self::new(shutdown, Arc::new(Mutex::new(status)))
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The same context with another shutdown signal (for a wrapper that stops its inner
    /// service on its own conditions too, such as a lost lease).
    #[must_use]
    pub fn with_shutdown(&self, shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            status: Arc::clone(&self.status),
        }
    }

    /// Reports the service's state (for example [`ServiceState::Standby`] while it waits for
    /// leadership).
    pub fn set_state(&self, state: ServiceState) {
        crate::memory::lock(&self.status).state = state;
    }

    /// Reports whether the service can do its work (see [`Service::ready_at_start`]).
    pub fn set_ready(&self, ready: bool) {
        crate::memory::lock(&self.status).ready = ready;
    }

    /// Reports a free-form detail shown with the state (a lag, a checkpoint), or clears it.
    pub fn set_detail(&self, detail: Option<String>) {
        crate::memory::lock(&self.status).detail = detail;
    }
}

/// A [`Service`] made of a name and a function from the context to the run's future: for a
/// loop that needs no type of its own. The function is called again for every run (after a
/// failure, the service is restarted as any other).
///
/// ```
/// use es_core::runtime::{Runtime, ServiceState, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let running = Runtime::new()
///     .service(service_fn("view", |context| async move {
///         // Catch a read model up until the shutdown...
///         context.shutdown().wait().await;
///         Ok(())
///     }))
///     .start();
/// let report = running.shutdown().await;
/// assert_eq!(report[0].state, ServiceState::Stopped);
/// # });
/// ```
pub fn service_fn<F, Fut>(name: impl Into<String>, run: F) -> FnService<F>
where
    F: FnMut(ServiceContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    FnService {
        name: name.into(),
        run,
    }
}

/// The [`Service`] [`service_fn`] makes.
pub struct FnService<F> {
    name: String,
    run: F,
}

impl<F> std::fmt::Debug for FnService<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnService")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F, Fut> Service for FnService<F>
where
    F: FnMut(ServiceContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        (self.run)(context).await
    }
}
