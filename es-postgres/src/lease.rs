//! `PgLeases`: es-core's lease port on PostgreSQL advisory locks.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::Pool;
use es_core::BoxError;
use es_core::runtime::{HeldLease, Lease};

use crate::leader::Leader;
use crate::store::PgEventStore;

/// How often a standby tries for a lease, and a holder checks it still holds it (default).
pub const DEFAULT_LEASE_POLL: Duration = Duration::from_secs(1);

/// Leases on PostgreSQL: each one a session-level advisory lock keyed by (schema, name), held
/// by a [`Leader`] on a connection taken out of the pool. A standby tries every `poll`; a holder
/// checks its connection and lock every `poll`, so a service it gates stops within about
/// `poll` (plus the check's timeout) of a lost connection, and another runtime takes over.
///
/// ```no_run
/// use es_core::runtime::{LeaderOnly, Runtime};
/// # use es_core::runtime::{Service, ServiceContext};
/// # struct Relay;
/// # #[async_trait::async_trait]
/// # impl Service for Relay {
/// #     fn name(&self) -> &str { "relay" }
/// #     async fn run(&mut self, c: ServiceContext) -> Result<(), es_core::BoxError> { c.shutdown().wait().await; Ok(()) }
/// # }
/// # async fn demo(store: es_postgres::PgEventStore) {
/// let leases = store.leases();
/// let running = Runtime::new().service(LeaderOnly::new(leases, Relay)).start();
/// # running.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct PgLeases {
    pool: Pool,
    schema: String,
    poll: Duration,
}

impl fmt::Debug for PgLeases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgLeases")
            .field("schema", &self.schema)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl PgLeases {
    /// Leases of `schema` on connections from `pool`, polled every [`DEFAULT_LEASE_POLL`].
    pub fn new(pool: Pool, schema: impl Into<String>) -> Self {
        Self {
            pool,
            schema: schema.into(),
            poll: DEFAULT_LEASE_POLL,
        }
    }

    /// Sets how often standbys try and holders check.
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

impl PgEventStore {
    /// Leases in this store's schema, on its pool (see [`PgLeases`]).
    pub fn leases(&self) -> PgLeases {
        PgLeases::new(self.pool().clone(), self.schema())
    }
}

#[async_trait::async_trait]
impl Lease for PgLeases {
    async fn acquire(&self, name: &str) -> Result<Box<dyn HeldLease>, BoxError> {
        let leader = Leader::acquire(&self.pool, &self.schema, name, self.poll).await?;
        Ok(Box::new(PgHeldLease {
            leader: Some(leader),
            poll: self.poll,
        }))
    }
}

struct PgHeldLease {
    leader: Option<Leader>,
    poll: Duration,
}

#[async_trait::async_trait]
impl HeldLease for PgHeldLease {
    async fn lost(&mut self) {
        let Some(leader) = self.leader.as_mut() else {
            return;
        };
        loop {
            tokio::time::sleep(self.poll).await;
            if !leader.is_leader().await {
                return;
            }
        }
    }

    async fn release(mut self: Box<Self>) {
        if let Some(leader) = self.leader.take()
            && let Err(error) = leader.release().await
        {
            tracing::warn!(%error, "lease not released cleanly; closing its connection releases it");
        }
    }
}
