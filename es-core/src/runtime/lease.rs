//! Leadership as a port: services that must run once per fleet run only while their runtime
//! holds a lease.

use std::fmt;
use std::time::Duration;

use crate::error::BoxError;
use crate::runtime::service::{Service, ServiceContext};
use crate::runtime::status::ServiceState;

/// Grants named leases, one holder at a time across every runtime that shares it (for
/// PostgreSQL, an advisory lock on a dedicated connection: `es_postgres::PgLeases`; in memory,
/// [`MemoryLeases`](crate::memory::MemoryLeases)).
///
/// A lease elects but does not fence: a holder cut off from the backend may believe it still
/// holds it for a while. Services gated by a lease keep their writes fenced by compare-and-set
/// checkpoints.
#[async_trait::async_trait]
pub trait Lease: Send + Sync + 'static {
    /// Waits until this caller holds the lease `name`.
    ///
    /// # Errors
    /// A backend failure (the caller tries again later).
    async fn acquire(&self, name: &str) -> Result<Box<dyn HeldLease>, BoxError>;
}

/// A lease held: it completes [`lost`](HeldLease::lost) when it is lost, and is given back by
/// [`release`](HeldLease::release) (or by dropping it).
#[async_trait::async_trait]
pub trait HeldLease: Send {
    /// Completes once the lease is lost (its connection died, it was revoked). Checks at the
    /// backend's pace: the service it gates stops within that bound.
    async fn lost(&mut self);

    /// Gives the lease back at once, so another runtime can take it.
    async fn release(self: Box<Self>);
}

/// Runs a service only while its runtime holds a lease: it waits as
/// [`ServiceState::Standby`], runs the inner service as [`ServiceState::Leading`], stops it
/// when the lease is lost (then waits for the lease again), and releases the lease when the
/// inner service returns.
///
/// ```
/// use es_core::memory::MemoryLeases;
/// use es_core::runtime::{LeaderOnly, Runtime, Service, ServiceContext, ServiceState};
///
/// struct Relay;
///
/// #[async_trait::async_trait]
/// impl Service for Relay {
///     fn name(&self) -> &str { "relay" }
///     async fn run(&mut self, context: ServiceContext) -> Result<(), es_core::BoxError> {
///         context.shutdown().wait().await;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let leases = MemoryLeases::new();
/// let first = Runtime::new().service(LeaderOnly::new(leases.clone(), Relay)).start();
/// let second = Runtime::new().service(LeaderOnly::new(leases.clone(), Relay)).start();
/// tokio::time::sleep(std::time::Duration::from_millis(20)).await;
/// let states = [first.status()[0].state.clone(), second.status()[0].state.clone()];
/// assert!(states.contains(&ServiceState::Leading) && states.contains(&ServiceState::Standby));
/// # first.shutdown().await;
/// # second.shutdown().await;
/// # });
/// ```
pub struct LeaderOnly<L, S> {
    lease: L,
    name: String,
    inner: S,
    rejoin_delay: Duration,
}

/// How long a runtime that lost a lease waits before competing for it again (default), so
/// that another runtime takes it over rather than the one that just lost it.
pub const DEFAULT_REJOIN_DELAY: Duration = Duration::from_secs(1);

impl<L, S> fmt::Debug for LeaderOnly<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderOnly")
            .field("lease", &self.name)
            .finish_non_exhaustive()
    }
}

impl<L: Lease, S: Service> LeaderOnly<L, S> {
    /// Gates `inner` by the lease named after it.
    pub fn new(lease: L, inner: S) -> Self {
        let name = inner.name().to_owned();
        Self {
            lease,
            name,
            inner,
            rejoin_delay: DEFAULT_REJOIN_DELAY,
        }
    }

    /// Sets how long to wait after losing the lease before competing again (default
    /// [`DEFAULT_REJOIN_DELAY`]).
    #[must_use]
    pub fn with_rejoin_delay(mut self, delay: Duration) -> Self {
        self.rejoin_delay = delay;
        self
    }

    /// Gates `inner` by the lease `name` (several services can share one lease).
    pub fn with_lease_name(lease: L, name: impl Into<String>, inner: S) -> Self {
        Self {
            lease,
            name: name.into(),
            inner,
            rejoin_delay: DEFAULT_REJOIN_DELAY,
        }
    }
}

#[async_trait::async_trait]
impl<L: Lease, S: Service> Service for LeaderOnly<L, S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        let shutdown = context.shutdown();
        loop {
            context.set_state(ServiceState::Standby);
            let mut held = tokio::select! {
                held = self.lease.acquire(&self.name) => held?,
                () = shutdown.clone().wait() => return Ok(()),
            };
            context.set_state(ServiceState::Leading);
            tracing::info!(service = %self.inner.name(), lease = %self.name, "leading");
            let (stop, term) = shutdown.child();
            let mut lost = false;
            let ran = {
                let inner = self.inner.run(context.with_shutdown(term));
                tokio::pin!(inner);
                tokio::select! {
                    ran = &mut inner => ran,
                    () = held.lost() => {
                        tracing::warn!(lease = %self.name, "lease lost: stopping");
                        lost = true;
                        stop.trigger();
                        inner.await
                    }
                }
            };
            held.release().await;
            ran?;
            if shutdown.is_triggered() {
                return Ok(());
            }
            if lost {
                context.set_state(ServiceState::Standby);
                tokio::select! {
                    () = tokio::time::sleep(self.rejoin_delay) => {}
                    () = shutdown.clone().wait() => return Ok(()),
                }
            }
        }
    }
}
