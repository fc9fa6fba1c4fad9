//! One runtime for every long-running loop: the [`Service`] lifecycle, the [`Runtime`] that
//! supervises services (restarts with backoff, drains on shutdown, reports each one's state),
//! and leadership as a port ([`Lease`], [`LeaderOnly`]).

mod lease;
mod service;
mod shutdown;
mod status;
mod supervisor;

pub use lease::{DEFAULT_REJOIN_DELAY, HeldLease, LeaderOnly, Lease};
pub use service::{FnService, Service, ServiceContext, service_fn};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use status::{ServiceState, ServiceStatus};
pub use supervisor::{RunningRuntime, Runtime, RuntimeOptions};
