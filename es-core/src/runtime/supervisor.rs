//! The runtime: runs services, restarts failed ones with backoff, drains them on shutdown.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::memory::lock;
use crate::runtime::service::{Service, ServiceContext};
use crate::runtime::shutdown::{Shutdown, ShutdownTrigger};
use crate::runtime::status::{ServiceState, ServiceStatus};

/// How a [`Runtime`] restarts and drains its services. Loadable with serde, and from the
/// environment with [`from_env`](Self::from_env).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeOptions {
    /// The first restart's delay, doubled after each failure in a row (default 100 ms).
    #[serde(with = "crate::config::duration")]
    pub restart_delay: Duration,
    /// The longest delay between restarts (default 30 s).
    #[serde(with = "crate::config::duration")]
    pub max_restart_delay: Duration,
    /// A run that lasted this long resets the delay (default 60 s).
    #[serde(with = "crate::config::duration")]
    pub healthy_after: Duration,
    /// How long a shutdown waits for the services to return before aborting them (default
    /// 10 s).
    #[serde(with = "crate::config::duration")]
    pub drain_timeout: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl RuntimeOptions {
    /// The variables that [`from_env`](Self::from_env) reads: `ES_RUNTIME_RESTART_DELAY`,
    /// `ES_RUNTIME_DRAIN_TIMEOUT`, ...
    pub const ENV_PREFIX: &'static str = "ES_RUNTIME_";

    /// The defaults, overridden by every `ES_RUNTIME_<FIELD>` variable set.
    ///
    /// # Errors
    /// [`OptionsError`](crate::OptionsError) for an unknown variable or a bad value.
    pub fn from_env() -> Result<Self, crate::OptionsError> {
        crate::options_from_env(Self::ENV_PREFIX)
    }

    /// Sets the first restart's delay and the longest one.
    #[must_use]
    pub fn restart_delays(mut self, first: Duration, max: Duration) -> Self {
        self.restart_delay = first;
        self.max_restart_delay = max;
        self
    }

    /// Sets the drain deadline.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }
}

/// Runs a set of [`Service`]s: each in its own task, run again after a failure (an error or a
/// panic) with a backoff, all told to stop by one shutdown signal and given a deadline to
/// drain; each one's state is reported for a status endpoint.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use es_core::runtime::{Runtime, RuntimeOptions, Service, ServiceContext, ServiceState};
///
/// /// Fails twice, then runs until shut down.
/// struct Flaky(Arc<AtomicU32>);
///
/// #[async_trait::async_trait]
/// impl Service for Flaky {
///     fn name(&self) -> &str { "flaky" }
///     async fn run(&mut self, context: ServiceContext) -> Result<(), es_core::BoxError> {
///         if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
///             return Err("not yet".into());
///         }
///         context.shutdown().wait().await;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let runs = Arc::new(AtomicU32::new(0));
/// let options = RuntimeOptions::default().restart_delays(Duration::from_millis(1), Duration::from_millis(10));
/// let running = Runtime::new().with_options(options).service(Flaky(runs.clone())).start();
/// while runs.load(Ordering::SeqCst) < 3 {
///     tokio::time::sleep(Duration::from_millis(1)).await;
/// }
/// let status = running.status();
/// assert_eq!((status[0].restarts, status[0].last_error.as_deref()), (2, Some("not yet")));
/// let report = running.shutdown().await;
/// assert_eq!(report[0].state, ServiceState::Stopped);
/// # });
/// ```
#[derive(Default)]
pub struct Runtime {
    services: Vec<Box<dyn Service>>,
    options: RuntimeOptions,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        f.debug_struct("Runtime")
            .field("services", &names)
            .field("options", &self.options)
            .finish()
    }
}

impl Runtime {
    /// A runtime with no service and default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the options.
    #[must_use]
    pub fn with_options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds a service.
    #[must_use]
    pub fn service(mut self, service: impl Service) -> Self {
        self.services.push(Box::new(service));
        self
    }

    /// Starts every service in its own task (on the current tokio runtime).
    pub fn start(self) -> RunningRuntime {
        let (trigger, shutdown) = Shutdown::new();
        let mut statuses = Vec::with_capacity(self.services.len());
        let mut tasks = Vec::with_capacity(self.services.len());
        for service in self.services {
            let status = Arc::new(Mutex::new(ServiceStatus::new(service.name().to_owned())));
            let task = tokio::spawn(supervise(
                service,
                shutdown.clone(),
                Arc::clone(&status),
                self.options,
            ));
            statuses.push(status);
            tasks.push(task);
        }
        RunningRuntime {
            trigger,
            statuses,
            tasks,
            options: self.options,
        }
    }
}

/// A started [`Runtime`]: its status, and its shutdown. Dropping it without
/// [`shutdown`](Self::shutdown) aborts its services.
pub struct RunningRuntime {
    trigger: ShutdownTrigger,
    statuses: Vec<Arc<Mutex<ServiceStatus>>>,
    tasks: Vec<JoinHandle<()>>,
    options: RuntimeOptions,
}

impl fmt::Debug for RunningRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningRuntime")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl RunningRuntime {
    /// Every service's status, in the order they were added.
    pub fn status(&self) -> Vec<ServiceStatus> {
        self.statuses.iter().map(|s| lock(s).clone()).collect()
    }

    /// Whether every service is ready: running (or leading, or standing by) and reporting
    /// itself able to work, a consumer once it has its partitions. Serve it as the readiness
    /// probe.
    pub fn is_ready(&self) -> bool {
        self.statuses.iter().all(|status| {
            let status = lock(status);
            status.ready
                && matches!(
                    status.state,
                    ServiceState::Running | ServiceState::Leading | ServiceState::Standby
                )
        })
    }

    /// Fires the shutdown, waits up to the drain timeout for every service to return, aborts
    /// those still running, and returns the final status ([`ServiceState::Stopped`],
    /// [`ServiceState::Completed`] or [`ServiceState::Aborted`]).
    pub async fn shutdown(mut self) -> Vec<ServiceStatus> {
        self.trigger.trigger();
        let deadline = tokio::time::Instant::now() + self.options.drain_timeout;
        for (task, status) in std::mem::take(&mut self.tasks)
            .into_iter()
            .zip(&self.statuses)
        {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                let mut status = lock(status);
                tracing::warn!(service = %status.name, "still running at the drain deadline: aborted");
                status.state = ServiceState::Aborted;
            }
        }
        self.statuses.iter().map(|s| lock(s).clone()).collect()
    }

    /// Stops every service at once, mid-work, as a crash of the process would (nothing is
    /// drained, no offset committed on the way out), waits until their tasks are gone, and
    /// returns the final status (every service [`ServiceState::Aborted`]). For fault tests and
    /// drills; [`shutdown`](Self::shutdown) is the way to stop.
    pub async fn abort(mut self) -> Vec<ServiceStatus> {
        // Aborted before the shutdown fires, so that no service starts draining first.
        for task in &self.tasks {
            task.abort();
        }
        self.trigger.trigger();
        for (task, status) in std::mem::take(&mut self.tasks)
            .into_iter()
            .zip(&self.statuses)
        {
            let _ = task.await;
            let mut status = lock(status);
            status.state = ServiceState::Aborted;
            status.ready = false;
        }
        self.statuses.iter().map(|s| lock(s).clone()).collect()
    }

    /// Runs until `signal` completes (a ctrl-c, say), then shuts down as
    /// [`shutdown`](Self::shutdown) does.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Vec<ServiceStatus> {
        signal.await;
        self.shutdown().await
    }
}

/// Dropping a runtime that was neither shut down nor aborted aborts its services, as
/// [`abort`](RunningRuntime::abort) does without waiting: a service never outlives its runtime.
impl Drop for RunningRuntime {
    fn drop(&mut self) {
        if self.tasks.is_empty() {
            return;
        }
        for task in &self.tasks {
            task.abort();
        }
        self.trigger.trigger();
    }
}

async fn supervise(
    mut service: Box<dyn Service>,
    shutdown: Shutdown,
    status: Arc<Mutex<ServiceStatus>>,
    options: RuntimeOptions,
) {
    let name = service.name().to_owned();
    let mut failures: u32 = 0;
    loop {
        {
            let mut status = lock(&status);
            status.state = ServiceState::Running;
            status.ready = service.ready_at_start();
        }
        let context = ServiceContext::new(shutdown.clone(), Arc::clone(&status));
        let started = tokio::time::Instant::now();
        let ran = AssertUnwindSafe(service.run(context)).catch_unwind().await;
        let error = match ran {
            Ok(Ok(())) => {
                lock(&status).state = if shutdown.is_triggered() {
                    ServiceState::Stopped
                } else {
                    tracing::info!(service = %name, "completed");
                    ServiceState::Completed
                };
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(panic) => panic_message(panic.as_ref()),
        };
        lock(&status).ready = false;
        if shutdown.is_triggered() {
            tracing::warn!(service = %name, %error, "failed while stopping");
            let mut status = lock(&status);
            status.last_error = Some(error);
            status.state = ServiceState::Stopped;
            return;
        }
        if started.elapsed() >= options.healthy_after {
            failures = 0;
        }
        failures += 1;
        let delay = backoff(options, failures);
        tracing::warn!(service = %name, %error, attempt = failures, ?delay, "failed; restarting after a backoff");
        {
            let mut status = lock(&status);
            status.restarts += 1;
            status.last_error = Some(error.clone());
            status.last_failure = Some(SystemTime::now());
            status.state = ServiceState::Restarting {
                attempt: failures,
                error,
            };
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.clone().wait() => {
                lock(&status).state = ServiceState::Stopped;
                return;
            }
        }
    }
}

/// The delay before restart number `failures` (1 for the first).
fn backoff(options: RuntimeOptions, failures: u32) -> Duration {
    let factor = 2_u32.saturating_pow(failures.saturating_sub(1).min(20));
    options
        .restart_delay
        .saturating_mul(factor)
        .min(options.max_restart_delay)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    format!("panicked: {text}")
}
