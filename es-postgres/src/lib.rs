#![doc = include_str!("../README.md")]

mod backend;
mod checkpoint;
mod config;
mod conn;
mod connect;
mod daemon;
mod error;
mod inbox;
mod jsonb;
mod keys;
mod leader;
mod lease;
mod migrate;
mod paused;
mod saga;
mod store;
mod transaction;
mod wakeup;
mod xid8;

pub use backend::PgBackend;
pub use checkpoint::PgCheckpointStore;
pub use config::PgConfig;
pub use connect::{ConnectError, DATABASE_URL_ENV, connect, database_url};
pub use daemon::{
    DaemonError, DaemonOptions, DeadLetter, PgProjectionTx, PoisonPolicy, ProjectionDaemon,
    ProjectionOptions, ProjectionState, ProjectionStatus, RebuildProgress, project_inline,
    recorded_events,
};
pub use error::PgError;
pub use inbox::PgInbox;
pub use keys::PgKeyStore;
pub use leader::Leader;
pub use lease::{DEFAULT_LEASE_POLL, PgLeases};
pub use migrate::LATEST_MIGRATION;
pub use paused::PgPausedPartitions;
pub use saga::PgSagaStore;
pub use store::PgEventStore;
pub use transaction::PgTransaction;
pub use wakeup::{DEFAULT_NOTIFY_INTERVAL, PgWakeups};
