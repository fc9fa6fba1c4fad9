//! Identity's settings: the signing secret, token lifetimes and the machine clients.

use std::time::Duration;

use super::limits::SignInLimits;
use crate::auth::Scope;

/// The signing secret used when none is configured. Refused in production mode.
pub const DEVELOPMENT_SECRET: &str =
    "ecommerce-development-signing-secret-do-not-use-in-production";
/// The built-in machine client used when none is configured. Refused in production mode.
pub const DEVELOPMENT_CLIENT_ID: &str = "ecommerce-internal";
/// The built-in machine client's secret. Refused in production mode.
pub const DEVELOPMENT_CLIENT_SECRET: &str = "ecommerce-internal-development-secret";

/// A machine client allowed the client-credentials grant.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The client id.
    pub id: String,
    /// The client secret.
    pub secret: String,
    /// The scopes it may request.
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Identity's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The HS256 signing secret.
    pub signing_secret: String,
    /// Customer access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: Duration,
    /// M2M access-token lifetime.
    pub m2m_token_ttl: Duration,
    /// The machine clients.
    pub clients: Vec<ClientCredentials>,
    /// How many password hashes run at once, how long a caller waits for a turn, and the
    /// sign-in rate limits.
    pub sign_in: SignInLimits,
    /// How long after a refresh token was spent presenting it again counts as a concurrent
    /// refresh (refused, the family kept) instead of a stolen copy (the family revoked).
    pub refresh_reuse_grace: Duration,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("m2m_token_ttl", &self.m2m_token_ttl)
            .field("clients", &self.clients)
            .field("sign_in", &self.sign_in)
            .finish_non_exhaustive()
    }
}

impl IdentityConfig {
    /// The development settings: the built-in secret and machine client.
    pub fn development() -> Self {
        Self {
            signing_secret: DEVELOPMENT_SECRET.to_owned(),
            access_token_ttl: Duration::from_secs(900),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            m2m_token_ttl: Duration::from_secs(3600),
            clients: vec![development_client()],
            sign_in: SignInLimits::default(),
            refresh_reuse_grace: Duration::from_secs(2),
        }
    }
}

/// The built-in machine client (refused in production mode).
pub fn development_client() -> ClientCredentials {
    ClientCredentials {
        id: DEVELOPMENT_CLIENT_ID.to_owned(),
        secret: DEVELOPMENT_CLIENT_SECRET.to_owned(),
        scopes: vec![Scope::Read, Scope::Write, Scope::Delete, Scope::Keys],
    }
}
