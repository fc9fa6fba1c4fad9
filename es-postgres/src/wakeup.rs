//! Wake-ups across processes: `LISTEN`/`NOTIFY` on a schema's channel, so that a relay,
//! daemon, scheduler or subscription in one process wakes when another process commits.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::Pool;
use es_core::runtime::{Service, ServiceContext};
use es_core::{AppendSignal, BoxError};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::PgEventStore;
use crate::error::PgError;

/// The shortest time between two `NOTIFY`s of one process on one channel, unless set.
pub const DEFAULT_NOTIFY_INTERVAL: Duration = Duration::from_millis(5);

/// The payload's suffix by which a process that starts listening announces itself.
const HELLO: &str = "hello";

/// The suffix of the answer to a [`HELLO`].
const HERE: &str = "here";

/// How long to wait before listening again after the connection failed or was lost.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Wakes the readers of a store's schema in every process when any process commits to it.
///
/// The store's [`AppendSignal`] wakes the relays, daemons, deadline schedulers and
/// subscriptions of its own process at once. `PgWakeups` carries it to the other processes
/// that use the same schema (replicas of a service, whose leader relay or daemon may be in
/// another process), as a [`Service`] with two halves:
///
/// - **Notify**: after commits of this process (the signal's
///   [`local_commits`](AppendSignal::local_commits) moved), it sends one `NOTIFY` on the
///   schema's channel, outside any append's transaction and at most once per
///   [`notify_interval`](Self::notify_interval) (5 ms by default): commits that come meanwhile
///   share the next one. No append ever notifies: PostgreSQL serializes the commits of
///   notifying transactions (docs/postgres.md). And only once another process is known to
///   listen: each announces itself when it starts listening (and is answered), so a process
///   alone on its schema (the single-process app) sends nothing but its announcement.
/// - **Listen**: on a connection of its own, it listens on the channel and fires the signal
///   ([`notify_from_elsewhere`](AppendSignal::notify_from_elsewhere)) for every notification
///   another process sent, so readers here wake at once; its own notifications (named by a
///   random origin in the payload) are ignored, and a wake-up from elsewhere is never sent on.
///   After every (re)connect it fires the signal once, since notifications sent while it was
///   not listening are lost.
///
/// Readers keep their slow poll as the fallback. At rest it costs nothing: no commit, no
/// `NOTIFY`; the listening connection waits.
///
/// The listening connection is opened from a URL without TLS, like [`PgConfig`](crate::PgConfig).
#[derive(Debug)]
pub struct PgWakeups {
    name: String,
    config: tokio_postgres::Config,
    pool: Pool,
    channel: String,
    origin: String,
    signal: AppendSignal,
    notify_interval: Duration,
}

impl PgWakeups {
    /// Wake-ups for `store`'s schema, listening on a connection to `url` (the store's
    /// database).
    ///
    /// # Errors
    /// [`PgError::Config`] when `url` does not parse.
    pub fn new(url: &str, store: &PgEventStore) -> Result<Self, PgError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| PgError::Config(format!("the database URL does not parse: {e}")))?;
        let channel = channel_of(store.schema());
        Ok(Self {
            name: format!("wakeups-{}", store.schema()),
            config,
            pool: store.pool().clone(),
            channel,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            signal: store.append_signal().clone(),
            notify_interval: DEFAULT_NOTIFY_INTERVAL,
        })
    }

    /// Wake-ups for any `signal` shared by processes of one database: they fire it for one
    /// another on the channel `es:<name>` (a hash of it past 63 bytes) as for a schema's
    /// commits, `pool` sending the `NOTIFY`s. A deployment whose relays and consumers run in
    /// different processes fires its relays' "published" signal this way, so a consumer
    /// that stopped fetching while idle hears at once of what another process published.
    ///
    /// # Errors
    /// [`PgError::Config`] when `url` does not parse.
    pub fn for_signal(
        url: &str,
        pool: Pool,
        name: &str,
        signal: AppendSignal,
    ) -> Result<Self, PgError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| PgError::Config(format!("the database URL does not parse: {e}")))?;
        Ok(Self {
            name: format!("wakeups-{name}"),
            config,
            pool,
            channel: channel_of(name),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            signal,
            notify_interval: DEFAULT_NOTIFY_INTERVAL,
        })
    }

    /// Sets the shortest time between two `NOTIFY`s of this process.
    #[must_use]
    pub fn notify_interval(mut self, interval: Duration) -> Self {
        self.notify_interval = interval;
        self
    }

    /// The channel: `es:` and the schema (or a hash of it when the name would pass
    /// PostgreSQL's 63 bytes).
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Listens and notifies until `shutdown` completes.
    ///
    /// # Errors
    /// Never while it can reconnect: a lost connection is logged, and it listens again after
    /// a second.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<(), PgError> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut waiter = self.signal.waiter();
        let mut sent = self.signal.local_commits();
        let mut next_allowed = Instant::now();
        // Whether another process listens on the channel: until one says so, nothing is sent.
        let mut peers = false;
        loop {
            let (client, mut incoming) = match self.listen().await {
                Ok(listening) => listening,
                Err(error) => {
                    tracing::warn!(channel = %self.channel, %error, "cannot listen; trying again");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(RECONNECT_DELAY) => continue,
                    }
                }
            };
            // Whatever was sent while nobody listened here is lost: look again.
            self.signal.notify_from_elsewhere();
            waiter.borrow_and_update();
            self.send(HELLO).await;
            let mut pending = false;
            loop {
                tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(()),
                    received = incoming.recv() => {
                        let Some(payload) = received else { break };
                        let (origin, kind) = payload.split_once(':').unwrap_or((&payload, ""));
                        if origin == self.origin {
                            continue;
                        }
                        if !peers {
                            tracing::debug!(channel = %self.channel, "another process listens");
                        }
                        peers = true;
                        match kind {
                            HELLO => self.send(HERE).await,
                            HERE => {}
                            _ => {
                                self.signal.notify_from_elsewhere();
                                waiter.borrow_and_update();
                            }
                        }
                    }
                    changed = waiter.changed(), if !pending => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        let local = self.signal.local_commits();
                        pending = peers && local != sent;
                        if !peers {
                            sent = local;
                        }
                    }
                    () = tokio::time::sleep_until(next_allowed), if pending => {
                        sent = self.signal.local_commits();
                        pending = false;
                        next_allowed = Instant::now() + self.notify_interval;
                        self.send("").await;
                    }
                }
            }
            drop(client);
            tracing::warn!(channel = %self.channel, "listening connection lost; listening again");
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
    }

    /// Connects, listens on the channel, and forwards the payload of each notification.
    async fn listen(
        &self,
    ) -> Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<String>), tokio_postgres::Error>
    {
        let (client, mut connection) = self.config.connect(NoTls).await?;
        let (forward, incoming) = mpsc::unbounded_channel();
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        if forward.send(notification.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, "listening connection failed");
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.channel))
            .await?;
        Ok((client, incoming))
    }

    /// Sends one notification of `kind` (empty for a wake-up), from a pooled connection, in a
    /// transaction of its own; a failure is logged (readers keep their slow poll).
    async fn send(&self, kind: &str) {
        let payload = if kind.is_empty() {
            self.origin.clone()
        } else {
            format!("{}:{kind}", self.origin)
        };
        let sent: Result<(), BoxError> = async {
            let client = self.pool.get().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&self.channel, &payload])
                .await?;
            Ok(())
        }
        .await;
        if let Err(error) = sent {
            tracing::debug!(channel = %self.channel, %error, "NOTIFY failed");
        }
    }
}

#[async_trait::async_trait]
impl Service for PgWakeups {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&mut self, context: ServiceContext) -> Result<(), BoxError> {
        PgWakeups::run(self, context.shutdown().wait()).await?;
        Ok(())
    }
}

/// The channel of `schema`: `es:<schema>`, or `es:` and a hash of it when longer than the 63
/// bytes PostgreSQL keeps of a name.
fn channel_of(schema: &str) -> String {
    let channel = format!("es:{schema}");
    if channel.len() <= 63 {
        return channel;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in schema.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("es:{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::channel_of;

    #[test]
    fn a_channel_fits_in_a_name() {
        assert_eq!(channel_of("shop_orders"), "es:shop_orders");
        let long = "s".repeat(63);
        let channel = channel_of(&long);
        assert!(channel.len() <= 63, "{channel}");
        assert_ne!(channel, channel_of(&"t".repeat(63)));
    }
}
