//! Argon2id password hashes (PHC strings), computed off the async runtime on a fixed set of
//! threads: each hash touches 19 MiB, and a thread keeps what it touched in its allocator's
//! arena, so the threads that ever hash bound the process's memory (the runtime's blocking
//! pool would grow to hundreds of threads under a burst).

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::oneshot;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Argon2 refused (it does not for valid parameters).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The hashing threads are gone (the process is shutting down).
    #[error("the password hashing threads are gone")]
    Gone,
    /// More hashes were asked at once than there are threads (a caller without a turn).
    #[error("every password hashing thread is busy")]
    Full,
}

type Job = Box<dyn FnOnce() + Send>;

/// `threads` threads that hash and verify passwords; they end when the hasher is dropped.
#[derive(Debug, Clone)]
pub(super) struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    pub(super) fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{n}"))
                .spawn(move || work(&queue));
            if let Err(error) = spawned {
                tracing::error!(%error, "a password hashing thread did not start");
            }
        }
        Self { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        // The callers hold a hashing turn (no more than there are threads), so the queue,
        // as long as there are threads, always has room.
        self.jobs.try_send(job).map_err(|error| match error {
            TrySendError::Full(_) => HashError::Full,
            TrySendError::Disconnected(_) => HashError::Gone,
        })?;
        result.await.map_err(|_| HashError::Gone)
    }

    /// Hashes `password` with Argon2id and a random salt.
    ///
    /// # Errors
    /// [`HashError`] when hashing fails or the threads are gone.
    pub(super) async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| HashError::Argon2(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches the PHC string `hash`; a malformed hash never matches.
    pub(super) async fn verify(&self, password: String, hash: String) -> bool {
        self.run(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password() -> Result<(), HashError> {
        let hasher = Hasher::new(1);
        let hashed = hasher.hash("correct horse".to_owned()).await?;
        assert!(hashed.starts_with("$argon2id$"));
        assert!(
            hasher
                .verify("correct horse".to_owned(), hashed.clone())
                .await
        );
        assert!(!hasher.verify("wrong horse".to_owned(), hashed).await);
        assert!(!hasher.verify("x".to_owned(), "not a hash".to_owned()).await);
        Ok(())
    }
}
