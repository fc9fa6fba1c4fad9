//! What keeps sign-in and registration from exhausting the server: password hashes (19 MiB of
//! Argon2 memory each) run a few at a time, sized to the machine, and a caller waits a bounded
//! time for a turn; sign-in attempts are rate-limited per account and per client address.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

/// The limits' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Password hashes computed at once (default: the machine's parallelism).
    pub hashing: usize,
    /// How long a sign-in or registration waits for a turn before a 503 with `Retry-After`.
    pub hashing_wait: Duration,
    /// Sign-in attempts per account per minute (a burst of this many, then one per
    /// `60 s / n`).
    pub per_account_per_minute: u32,
    /// Sign-in attempts per client address per minute.
    pub per_address_per_minute: u32,
}

impl Default for SignInLimits {
    fn default() -> Self {
        Self {
            hashing: std::thread::available_parallelism().map_or(2, usize::from),
            hashing_wait: Duration::from_secs(2),
            per_account_per_minute: 10,
            per_address_per_minute: 60,
        }
    }
}

/// Why a caller must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Throttled {
    /// Every hashing slot stayed busy for the whole wait: try again shortly.
    #[error("the server is busy; try again in {retry_after:?}")]
    Busy {
        /// When to try again.
        retry_after: Duration,
    },
    /// Too many sign-in attempts for this account or from this address.
    #[error("too many sign-in attempts; try again in {retry_after:?}")]
    TooManyAttempts {
        /// When to try again.
        retry_after: Duration,
    },
}

impl Throttled {
    /// When to try again.
    pub fn retry_after(&self) -> Duration {
        match *self {
            Self::Busy { retry_after } | Self::TooManyAttempts { retry_after } => retry_after,
        }
    }
}

/// The limits in force.
pub(super) struct Limits {
    settings: SignInLimits,
    hashing: Arc<Semaphore>,
    /// The threads that hash, one per slot.
    pub(super) hasher: super::password::Hasher,
    accounts: DefaultKeyedRateLimiter<String>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Keys kept by a rate limiter before the idle ones are dropped (bounds its memory).
const MAX_KEYS: usize = 100_000;

fn per_minute(n: u32) -> Quota {
    let n = NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(n).allow_burst(n)
}

impl Limits {
    pub(super) fn new(settings: SignInLimits) -> Self {
        Self {
            settings,
            hashing: Arc::new(Semaphore::new(settings.hashing.max(1))),
            hasher: super::password::Hasher::new(settings.hashing),
            accounts: RateLimiter::keyed(per_minute(settings.per_account_per_minute)),
            addresses: RateLimiter::keyed(per_minute(settings.per_address_per_minute)),
        }
    }

    /// A turn to hash a password, waiting at most the configured time.
    pub(super) async fn hashing_turn(&self) -> Result<SemaphorePermit<'_>, Throttled> {
        match tokio::time::timeout(self.settings.hashing_wait, self.hashing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Throttled::Busy {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Counts a sign-in attempt for `account` from `address`.
    pub(super) fn attempt(&self, account: &str, address: Option<IpAddr>) -> Result<(), Throttled> {
        let clock = DefaultClock::default();
        let refused = |not_until: governor::NotUntil<_>| Throttled::TooManyAttempts {
            retry_after: not_until
                .wait_time_from(clock.now())
                .max(Duration::from_secs(1)),
        };
        if let Some(address) = address {
            self.addresses.check_key(&address).map_err(refused)?;
        }
        self.accounts
            .check_key(&account.trim().to_lowercase())
            .map_err(refused)?;
        for limiter_len in [self.accounts.len(), self.addresses.len()] {
            if limiter_len > MAX_KEYS {
                self.accounts.retain_recent();
                self.addresses.retain_recent();
            }
        }
        Ok(())
    }
}
