//! Leader election by a session-level advisory lock on a connection held out of the pool.

use std::fmt;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Object, Pool};

use crate::config::Schema;
use crate::error::PgError;

/// How long a health check waits for the server before deciding leadership is lost.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0)), pg_backend_pid()";

const HOLDS_LOCK: &str = "SELECT EXISTS (
    SELECT 1 FROM pg_locks l, (SELECT hashtextextended($1, 0) AS k) h
    WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
      AND l.classid = ((h.k >> 32) & 4294967295)::oid
      AND l.objid = (h.k & 4294967295)::oid
      AND l.objsubid = 1)";

const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";

/// Leadership of a named role (one relay per outbox, one daemon per projection) within a
/// schema, elected by a session-level advisory lock.
///
/// The lock lives on a connection taken out of the pool for as long as this value lives: it
/// is never handed to another user of the pool, and when the connection dies (the process
/// crashed, the server terminated the backend, the network failed and the server noticed),
/// the lock dies with it and a standby polling [`try_acquire`](Self::try_acquire) takes
/// over. Dropping a `Leader` closes the connection, which releases the lock.
///
/// **A lock elects but does not fence.** A leader cut off from the database can still believe
/// it leads while another node has taken over. So everything a leader writes must be guarded
/// by a compare-and-set, normally its checkpoint
/// ([`PgCheckpointStore`](crate::PgCheckpointStore)): a failed one means another node leads,
/// and the old leader must stop. [`is_leader`](Self::is_leader) notices a lost connection
/// early; it does not make writes safe.
///
/// ```no_run
/// use std::time::Duration;
/// use es_postgres::{Leader, PgEventStore};
///
/// # async fn run(store: &PgEventStore) -> Result<(), es_postgres::PgError> {
/// // Standbys wait here, polling every second.
/// let mut leader =
///     Leader::acquire(store.pool(), store.schema(), "relay", Duration::from_secs(1)).await?;
/// while leader.is_leader().await {
///     // ... one batch, ending with a compare-and-set checkpoint write ...
/// #   break;
/// }
/// leader.release().await?;
/// # Ok(())
/// # }
/// ```
pub struct Leader {
    client: Option<ClientWrapper>,
    key: String,
    schema: String,
    name: String,
    backend_pid: i32,
    check_timeout: Duration,
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader")
            .field("schema", &self.schema)
            .field("name", &self.name)
            .field("backend_pid", &self.backend_pid)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

/// The text the lock key is hashed from; the prefix keeps it apart from stream locks, saga
/// locks and the migration lock.
fn lock_text(schema: &Schema, name: &str) -> String {
    format!("es-postgres leader:{}:{name}", schema.name)
}

impl Leader {
    /// Takes leadership of `name` in `schema` if no one holds it; `None` when another
    /// connection does. The lock is keyed by a 64-bit hash of the schema and the name.
    ///
    /// # Errors
    /// [`PgError::InvalidSchema`], or a pool or server error.
    pub async fn try_acquire(
        pool: &Pool,
        schema: &str,
        name: &str,
    ) -> Result<Option<Self>, PgError> {
        let schema = Schema::new(schema)?;
        let key = lock_text(&schema, name);
        // Until the answer is in, the connection may hold the lock: a caller dropped meanwhile
        // (its task aborted) closes it rather than handing the pool a connection that holds
        // the lock for good.
        let asking = Asking(Some(pool.get().await?));
        let row = asking.client().query_one(TRY_LOCK, &[&key]).await?;
        let client = asking.answered();
        if !row.try_get::<_, bool>(0)? {
            // It holds no lock: back to the pool.
            return Ok(None);
        }
        // From here on the connection holds the lock: it must never return to the pool.
        let client = Object::take(client);
        let backend_pid: i32 = row.try_get(1)?;
        tracing::info!(schema = %schema.name, name, backend_pid, "acquired leadership");
        Ok(Some(Self {
            client: Some(client),
            key,
            schema: schema.name,
            name: name.to_owned(),
            backend_pid,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
        }))
    }

    /// Waits for leadership of `name` in `schema`, trying every `poll` (a standby's loop).
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire): a failed attempt ends the wait.
    pub async fn acquire(
        pool: &Pool,
        schema: &str,
        name: &str,
        poll: Duration,
    ) -> Result<Self, PgError> {
        loop {
            if let Some(leader) = Self::try_acquire(pool, schema, name).await? {
                return Ok(leader);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Sets how long [`is_leader`](Self::is_leader) waits for the server (default 5 s).
    #[must_use]
    pub fn with_check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Checks, on the held connection, that it is alive and still holds the lock. Once this
    /// returns `false` it always does: the connection is closed and leadership is over (try
    /// [`try_acquire`](Self::try_acquire) again to compete anew).
    pub async fn is_leader(&mut self) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.key];
        let check = client.query_one(HOLDS_LOCK, &params);
        let holds = match tokio::time::timeout(self.check_timeout, check).await {
            Ok(Ok(row)) => row.try_get::<_, bool>(0).unwrap_or(false),
            Ok(Err(error)) => {
                tracing::warn!(%error, name = %self.name, "leader connection failed");
                false
            }
            Err(_) => {
                tracing::warn!(name = %self.name, "leader health check timed out");
                false
            }
        };
        if !holds {
            tracing::warn!(schema = %self.schema, name = %self.name, "lost leadership");
            self.client = None;
        }
        holds
    }

    /// Gives leadership up: unlocks, then closes the connection.
    ///
    /// # Errors
    /// A server error when the unlock fails (closing the connection releases the lock
    /// anyway).
    pub async fn release(mut self) -> Result<(), PgError> {
        let Some(client) = self.client.take() else {
            return Ok(());
        };
        client.query_one(UNLOCK, &[&self.key]).await?;
        tracing::info!(schema = %self.schema, name = %self.name, "released leadership");
        Ok(())
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema the role belongs to.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The server process holding the lock (`pg_backend_pid()`), for logs and operations.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }
}

/// A pooled connection asking for a lock: closed, not returned to the pool, when dropped
/// before the answer was read.
struct Asking(Option<Object>);

impl Asking {
    fn client(&self) -> &Object {
        match &self.0 {
            Some(object) => object,
            None => unreachable!("an Asking holds its connection until answered"),
        }
    }

    /// The answer is in: the connection, to keep or to give back.
    fn answered(mut self) -> Object {
        match self.0.take() {
            Some(object) => object,
            None => unreachable!("an Asking holds its connection until answered"),
        }
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}
