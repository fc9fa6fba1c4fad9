//! Argon2id password hashes (PHC strings), computed off the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// Argon2 refused (it does not for valid parameters).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The blocking pool is gone (the runtime is shutting down).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Hashes `password` with Argon2id and a random salt.
///
/// # Errors
/// [`HashError`] when hashing fails or the blocking pool is gone.
pub(super) async fn hash(password: String) -> Result<String, HashError> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| HashError::Argon2(e.to_string()))
    })
    .await?
}

/// Whether `password` matches the PHC string `hash`; a malformed hash never matches.
pub(super) async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password() -> Result<(), HashError> {
        let hashed = hash("correct horse".to_owned()).await?;
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify("correct horse".to_owned(), hashed.clone()).await);
        assert!(!verify("wrong horse".to_owned(), hashed).await);
        assert!(!verify("x".to_owned(), "not a hash".to_owned()).await);
        Ok(())
    }
}
