//! Identity: accounts, sign-in, refresh-token rotation and machine-to-machine tokens.
//!
//! Accounts are created only through customer registration (the customers context calls
//! [`Identity::create_account`]); there is no public sign-up route.

mod account;
mod limits;
mod password;
pub mod routes;

mod config;

pub use self::config::{
    ClientCredentials, DEVELOPMENT_CLIENT_ID, DEVELOPMENT_CLIENT_SECRET, DEVELOPMENT_SECRET,
    IdentityConfig, development_client,
};
pub use limits::{SignInLimits, Throttled};

use std::sync::Arc;
use std::time::Duration;

use es_core::privacy::{Personal, Privacy, SubjectId, mark_personal};
use es_core::{
    Clock, CommandContext, EventRegistry, Repository, RepositoryError, SnapshotPolicy, StreamId,
};
use uuid::Uuid;

pub use account::{
    Account, AccountCommand, AccountError, AccountEvent, Registration, account_id, normalize_email,
};

use crate::auth::{
    ACCESS_AUDIENCE, AccessClaims, ISSUER, REFRESH_AUDIENCE, RefreshClaims, Role, Scope, TokenKeys,
};
use crate::storage::{StorageError, storage};
use es_core::TransactionalStore;

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An open account already uses the email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Wrong email or password (never says which).
    #[error("the email or password is not correct")]
    InvalidCredentials,
    /// Unknown client, wrong secret or a scope the client may not have.
    #[error("the client credentials are not valid")]
    InvalidClient,
    /// A scope the client is not allowed.
    #[error("the client may not request the scope `{0}`")]
    ScopeNotAllowed(String),
    /// The refresh token is malformed, expired, spent or revoked.
    #[error("the refresh token is not valid: {0}")]
    InvalidRefreshToken(String),
    /// No such account.
    #[error("no such account")]
    NotFound,
    /// Too many attempts, or every hashing slot is busy: try again later.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// A password could not be hashed.
    #[error("password hashing: {0}")]
    Hashing(#[source] password::HashError),
    /// Storage failed (the cause kept).
    #[error("identity storage: {0}")]
    Storage(#[from] StorageError),
}

impl<E: std::error::Error + Send + Sync + 'static> From<RepositoryError<E>> for IdentityError {
    fn from(error: RepositoryError<E>) -> Self {
        IdentityError::Storage(storage(error))
    }
}

/// A new account for a customer.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// The sign-in email.
    pub email: String,
    /// The password in clear (hashed before anything is stored).
    pub password: String,
    /// The customer the account signs in as.
    pub customer_id: Uuid,
}

/// Tokens returned by sign-in and refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The access token.
    pub access_token: String,
    /// The refresh token (single use).
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// A machine-to-machine access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// The access token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// The granted scopes, space-separated.
    pub scope: String,
}

/// The identity context.
#[derive(Debug)]
pub struct Identity<S> {
    accounts: Repository<Account, S>,
    keys: Arc<TokenKeys>,
    config: IdentityConfig,
    clock: Arc<dyn Clock>,
    /// A hash checked when the email is unknown, so a miss takes as long as a wrong password.
    decoy_hash: String,
    /// Hashing slots and sign-in rate limits.
    limits: limits::Limits,
}

impl<S: TransactionalStore> Identity<S> {
    /// The identity context over `store`.
    ///
    /// # Errors
    /// When the decoy password hash cannot be computed.
    pub async fn new(
        store: S,
        keys: Arc<TokenKeys>,
        config: IdentityConfig,
        clock: Arc<dyn Clock>,
        privacy: Privacy,
    ) -> Result<Self, IdentityError> {
        let accounts = Repository::new(store)
            .with_clock(clock.clone())
            .with_registry(Arc::new(upcasters()))
            .with_privacy(privacy)
            // Every account command decides again safely on newer state: a concurrent refresh
            // of the same token then sees it spent.
            .with_conflict_retries(5)
            .with_snapshots(SnapshotPolicy::EveryNEvents(50));
        let limits = limits::Limits::new(config.sign_in);
        let decoy_hash = limits
            .hasher
            .hash(Uuid::new_v4().to_string())
            .await
            .map_err(IdentityError::Hashing)?;
        Ok(Self {
            accounts,
            keys,
            config,
            clock,
            decoy_hash,
            limits,
        })
    }

    /// Signs in with email and password.
    ///
    /// # Errors
    /// [`IdentityError::InvalidCredentials`] for an unknown email or a wrong password;
    /// [`IdentityError::Throttled`] past the rate limits (per account, and per `client`
    /// address when known) or when every hashing slot stays busy.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<TokenPair, IdentityError> {
        self.limits.attempt(email, client)?;
        let stream = account_stream(account_id(email))?;
        let account = self.accounts.load(&stream).await?.state;
        let registration = account.active_registration();
        let hash = registration
            .and_then(|r| r.password_hash.value().cloned())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let matches = {
            let _turn = self.limits.hashing_turn().await?;
            self.limits.hasher.verify(password.to_owned(), hash).await
        };
        let registration = match registration {
            Some(registration) if matches => registration.clone(),
            _ => return Err(IdentityError::InvalidCredentials),
        };
        let token_id = Uuid::new_v4();
        let family_id = Uuid::new_v4();
        let now = self.clock.now();
        let command = AccountCommand::IssueRefreshToken {
            token_id,
            family_id,
            now,
            expires_at: self.refresh_expiry(now),
        };
        self.execute(&stream, &command).await?;
        self.token_pair(&registration, token_id, family_id, now)
    }

    /// Spends a refresh token for a new pair. A spent token presented again revokes every
    /// token of its family (someone else may hold a copy), unless it was spent within the
    /// reuse grace (a concurrent refresh): then it is refused and the family kept.
    ///
    /// # Errors
    /// [`IdentityError::InvalidRefreshToken`] for a malformed, expired, unknown, spent or
    /// revoked token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, IdentityError> {
        let claims = self
            .keys
            .verify_refresh(refresh_token)
            .map_err(|e| IdentityError::InvalidRefreshToken(e.to_string()))?;
        let account_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| IdentityError::InvalidRefreshToken("malformed subject".to_owned()))?;
        let stream = account_stream(account_id)?;
        let next = Uuid::new_v4();
        let now = self.clock.now();
        let command = AccountCommand::RotateRefreshToken {
            presented: claims.jti,
            next,
            now,
            expires_at: self.refresh_expiry(now),
            reuse_grace: chrono::TimeDelta::from_std(self.config.refresh_reuse_grace)
                .unwrap_or(chrono::TimeDelta::zero()),
        };
        let executed = match self.accounts.execute(&stream, &command, &context()).await {
            Ok(executed) => executed,
            Err(RepositoryError::Rejected(error)) => {
                return Err(IdentityError::InvalidRefreshToken(error.to_string()));
            }
            Err(other) => return Err(other.into()),
        };
        if executed
            .events
            .iter()
            .any(|e| matches!(e, AccountEvent::RefreshTokenReuseDetected { .. }))
        {
            tracing::warn!(%account_id, family = %claims.fam, "refresh token reused; family revoked");
            return Err(IdentityError::InvalidRefreshToken(
                "the token was already used; every token of its family is revoked".to_owned(),
            ));
        }
        let registration = executed
            .state
            .active_registration()
            .cloned()
            .ok_or(IdentityError::NotFound)?;
        self.token_pair(&registration, next, claims.fam, now)
    }

    /// The client-credentials grant: an M2M token with the requested scopes (all the client's
    /// scopes when `scope` is `None`).
    ///
    /// # Errors
    /// [`IdentityError::InvalidClient`] for an unknown client or a wrong secret;
    /// [`IdentityError::ScopeNotAllowed`] for a scope the client may not have.
    pub fn client_token(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: Option<&str>,
    ) -> Result<ClientToken, IdentityError> {
        let client = self
            .config
            .clients
            .iter()
            .find(|c| c.id == client_id && constant_time_eq(&c.secret, client_secret))
            .ok_or(IdentityError::InvalidClient)?;
        let scopes = granted_scopes(client, scope)?;
        let now = self.clock.now().timestamp();
        let ttl = self.config.m2m_token_ttl;
        let claims = AccessClaims {
            sub: client.id.clone(),
            iss: ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now,
            exp: now + seconds(ttl),
            jti: Uuid::new_v4().to_string(),
            role: Role::M2MAccess,
            scope: scopes.clone(),
            email: None,
            customer_id: None,
        };
        let access_token = self.keys.sign(&claims).map_err(internal)?;
        Ok(ClientToken {
            access_token,
            expires_in: ttl.as_secs(),
            scope: scopes,
        })
    }

    async fn execute(
        &self,
        stream: &StreamId,
        command: &AccountCommand,
    ) -> Result<Account, IdentityError> {
        match self.accounts.execute(stream, command, &context()).await {
            Ok(executed) => Ok(executed.state),
            Err(RepositoryError::Rejected(AccountError::EmailTaken)) => {
                Err(IdentityError::EmailTaken)
            }
            Err(RepositoryError::Rejected(AccountError::NotFound)) => Err(IdentityError::NotFound),
            Err(other) => Err(other.into()),
        }
    }

    fn token_pair(
        &self,
        registration: &Registration,
        token_id: Uuid,
        family_id: Uuid,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<TokenPair, IdentityError> {
        let now = now.timestamp();
        let access = AccessClaims {
            sub: registration.account_id.to_string(),
            iss: ISSUER.to_owned(),
            aud: ACCESS_AUDIENCE.to_owned(),
            iat: now,
            exp: now + seconds(self.config.access_token_ttl),
            jti: Uuid::new_v4().to_string(),
            role: Role::Customer,
            scope: [Scope::Read, Scope::Write, Scope::Delete]
                .map(Scope::as_str)
                .join(" "),
            email: registration.email.value().cloned(),
            customer_id: Some(registration.customer_id),
        };
        let refresh = RefreshClaims {
            sub: registration.account_id.to_string(),
            iss: ISSUER.to_owned(),
            aud: REFRESH_AUDIENCE.to_owned(),
            iat: now,
            exp: now + seconds(self.config.refresh_token_ttl),
            jti: token_id,
            fam: family_id,
        };
        Ok(TokenPair {
            access_token: self.keys.sign(&access).map_err(internal)?,
            refresh_token: self.keys.sign(&refresh).map_err(internal)?,
            expires_in: self.config.access_token_ttl.as_secs(),
        })
    }
}

impl<S: TransactionalStore> Identity<S> {
    /// Creates the account of a new customer (the customers context calls this when a
    /// customer registers); returns the account id.
    ///
    /// # Errors
    /// [`IdentityError::EmailTaken`], or a failure.
    pub async fn create_account(&self, account: NewAccount) -> Result<Uuid, IdentityError> {
        let id = account_id(&account.email);
        let stream = account_stream(id)?;
        if self
            .accounts
            .load(&stream)
            .await?
            .state
            .active_registration()
            .is_some()
        {
            return Err(IdentityError::EmailTaken);
        }
        let password_hash = {
            let _turn = self.limits.hashing_turn().await?;
            self.limits
                .hasher
                .hash(account.password)
                .await
                .map_err(IdentityError::Hashing)?
        };
        let subject = SubjectId::from_uuid(account.customer_id);
        let registration = Registration {
            account_id: id,
            email: Personal::new(subject.clone(), account.email.trim().to_owned()),
            password_hash: Personal::new(subject, password_hash),
            customer_id: account.customer_id,
        };
        self.execute(&stream, &AccountCommand::Register(registration))
            .await?;
        Ok(id)
    }

    /// Closes an account (registration's compensation).
    ///
    /// # Errors
    /// [`IdentityError::NotFound`], or a failure.
    pub async fn close_account(&self, account_id: Uuid) -> Result<(), IdentityError> {
        let stream = account_stream(account_id)?;
        self.execute(&stream, &AccountCommand::Close).await?;
        Ok(())
    }

    /// Closes the account that signs in with `email`, if it is open (its customer is being
    /// forgotten); nothing when there is none.
    ///
    /// # Errors
    /// Failures.
    pub async fn close_account_of(&self, email: &str) -> Result<(), IdentityError> {
        match self.close_account(account_id(email)).await {
            Ok(()) | Err(IdentityError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// The upcasters of account events: version 1 of `AccountRegistered` held the email and the
/// password hash in clear; version 2 holds them as personal values of the customer.
fn upcasters() -> EventRegistry {
    let mut registry = EventRegistry::new();
    let registered = registry.upcaster("AccountRegistered", 1, |mut data| {
        mark_personal(&mut data, "customerId", &["email", "passwordHash"])?;
        Ok(data)
    });
    if let Err(error) = registered {
        tracing::error!(%error, "account upcasters not registered");
    }
    registry
}

fn account_stream(account_id: Uuid) -> Result<StreamId, IdentityError> {
    StreamId::for_aggregate(<Account as es_core::Aggregate>::TYPE, account_id).map_err(internal)
}

fn context() -> CommandContext {
    CommandContext::new().with_actor("identity")
}

fn internal(error: impl Into<es_core::BoxError>) -> IdentityError {
    IdentityError::Storage(StorageError::other(error))
}

impl<S> Identity<S> {
    /// When a refresh token issued `now` expires (its record is kept until then: the token's
    /// `exp`, in whole seconds, is never later).
    fn refresh_expiry(&self, now: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
        now + chrono::TimeDelta::from_std(self.config.refresh_token_ttl)
            .unwrap_or(chrono::TimeDelta::MAX)
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2)
}

fn granted_scopes(
    client: &ClientCredentials,
    requested: Option<&str>,
) -> Result<String, IdentityError> {
    let Some(requested) = requested.filter(|s| !s.trim().is_empty()) else {
        return Ok(client
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "));
    };
    let mut granted = Vec::new();
    for name in requested.split_whitespace() {
        match Scope::parse(name) {
            Some(scope) if client.scopes.contains(&scope) => granted.push(scope.as_str()),
            _ => return Err(IdentityError::ScopeNotAllowed(name.to_owned())),
        }
    }
    Ok(granted.join(" "))
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
