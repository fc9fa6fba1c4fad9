//! In-memory leases, shared by the runtimes of one process (or of one test).

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::lock;
use crate::error::BoxError;
use crate::runtime::{HeldLease, Lease};

/// In-memory [`Lease`]s: one holder per name among the clones of a `MemoryLeases`.
/// [`revoke`](Self::revoke) takes a lease from its holder, as a lost connection would.
#[derive(Debug, Clone, Default)]
pub struct MemoryLeases {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The holder of each held lease.
    held: Mutex<HashMap<String, u64>>,
    next_holder: Mutex<u64>,
    /// Signalled whenever a lease is taken, released or revoked.
    changed: Notify,
}

impl MemoryLeases {
    /// Leases that nobody holds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the lease `name` from its holder (whose [`HeldLease::lost`] then completes);
    /// `true` when it was held.
    pub fn revoke(&self, name: &str) -> bool {
        let revoked = lock(&self.shared.held).remove(name).is_some();
        self.shared.changed.notify_waiters();
        revoked
    }

    /// Whether the lease `name` is held.
    pub fn is_held(&self, name: &str) -> bool {
        lock(&self.shared.held).contains_key(name)
    }
}

#[async_trait::async_trait]
impl Lease for MemoryLeases {
    async fn acquire(&self, name: &str) -> Result<Box<dyn HeldLease>, BoxError> {
        let holder = {
            let mut next = lock(&self.shared.next_holder);
            *next += 1;
            *next
        };
        loop {
            // Registered before looking, so a release between the look and the wait wakes us.
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            {
                let mut held = lock(&self.shared.held);
                if !held.contains_key(name) {
                    held.insert(name.to_owned(), holder);
                    return Ok(Box::new(MemoryHeldLease {
                        shared: Arc::clone(&self.shared),
                        name: name.to_owned(),
                        holder,
                    }));
                }
            }
            changed.await;
        }
    }
}

struct MemoryHeldLease {
    shared: Arc<Shared>,
    name: String,
    holder: u64,
}

impl MemoryHeldLease {
    fn holds(&self) -> bool {
        lock(&self.shared.held).get(&self.name) == Some(&self.holder)
    }

    fn give_back(&self) {
        let mut held = lock(&self.shared.held);
        if held.get(&self.name) == Some(&self.holder) {
            held.remove(&self.name);
        }
        drop(held);
        self.shared.changed.notify_waiters();
    }
}

#[async_trait::async_trait]
impl HeldLease for MemoryHeldLease {
    async fn lost(&mut self) {
        loop {
            let mut changed = pin!(self.shared.changed.notified());
            changed.as_mut().enable();
            if !self.holds() {
                return;
            }
            changed.await;
        }
    }

    async fn release(self: Box<Self>) {
        self.give_back();
    }
}

impl Drop for MemoryHeldLease {
    fn drop(&mut self) {
        self.give_back();
    }
}
