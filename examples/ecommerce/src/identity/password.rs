//! Argon2id password hashes (PHC strings), computed off the async runtime.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// Hashes `password` with Argon2id and a random salt.
///
/// # Errors
/// When hashing fails (it does not for valid parameters) or the blocking pool is gone.
pub(super) async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
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
    async fn hashes_verify_only_their_password() -> Result<(), String> {
        let hashed = hash("correct horse".to_owned()).await?;
        assert!(hashed.starts_with("$argon2id$"));
        assert!(verify("correct horse".to_owned(), hashed.clone()).await);
        assert!(!verify("wrong horse".to_owned(), hashed).await);
        assert!(!verify("x".to_owned(), "not a hash".to_owned()).await);
        Ok(())
    }
}
