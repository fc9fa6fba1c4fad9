//! The account aggregate: credentials of one customer and the refresh tokens issued to it.
//!
//! An account's stream is keyed by its email (the account id is a name-based UUID of the
//! normalized email), so registering an email twice is an optimistic-concurrency conflict, not
//! a lookup race.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use es_core::privacy::Personal;
use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The namespace of account ids.
const ACCOUNT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_7a0e_3b4f_4e59_9a51_6c2f_0d8e_a7b3);

/// The account id of an email: the same for every spelling that differs only in case or
/// surrounding spaces.
pub fn account_id(email: &str) -> Uuid {
    Uuid::new_v5(&ACCOUNT_NAMESPACE, normalize_email(email).as_bytes())
}

/// An email as accounts compare it: in Unicode normalization form NFKC (so composed and
/// decomposed forms, or full-width letters, are one email), trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    email.trim().nfkc().collect::<String>().to_lowercase()
}

/// The state of an account.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    registered: Option<Registration>,
    closed: bool,
    /// Unspent refresh tokens → their family.
    active: HashMap<Uuid, Uuid>,
    /// Spent refresh tokens → their family.
    spent: HashMap<Uuid, Uuid>,
    /// When each spent token was spent (tokens spent before this was recorded have none).
    #[serde(default)]
    spent_at: HashMap<Uuid, DateTime<Utc>>,
    revoked_families: HashSet<Uuid>,
    /// When each token expires (tokens issued before this was recorded have none and are
    /// kept).
    #[serde(default)]
    expires: HashMap<Uuid, DateTime<Utc>>,
    /// When the last token of each family expires.
    #[serde(default)]
    family_expires: HashMap<Uuid, DateTime<Utc>>,
}

/// How long past its expiry a token's record is kept: longer than the leeway with which an
/// expired token is still accepted, so a token that can be presented always has its record.
const KEPT_PAST_EXPIRY: TimeDelta = TimeDelta::minutes(1);

/// What registration recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The account id.
    pub account_id: Uuid,
    /// The email as given (personal data of the customer).
    pub email: Personal<String>,
    /// The Argon2id PHC string (personal data of the customer).
    pub password_hash: Personal<String>,
    /// The customer the account signs in as.
    pub customer_id: Uuid,
}

impl Account {
    /// The registration, unless the account does not exist, is closed, or its customer was
    /// forgotten.
    pub fn active_registration(&self) -> Option<&Registration> {
        self.registered
            .as_ref()
            .filter(|registration| !self.closed && !registration.password_hash.is_forgotten())
    }

    /// How many refresh-token records the account keeps (unspent and spent tokens, revoked
    /// families): those of expired tokens are pruned as new tokens are issued or rotated.
    pub fn token_records(&self) -> usize {
        self.active.len() + self.spent.len() + self.revoked_families.len()
    }

    /// Forgets every token, and every revoked family, that expired before `now` (less
    /// [`KEPT_PAST_EXPIRY`]): an expired token is refused before its record is looked up.
    fn prune(&mut self, now: DateTime<Utc>) {
        let expired = |expiry: &DateTime<Utc>| *expiry + KEPT_PAST_EXPIRY < now;
        let gone: Vec<Uuid> = self
            .expires
            .iter()
            .filter(|(_, expiry)| expired(expiry))
            .map(|(token, _)| *token)
            .collect();
        for token in gone {
            self.active.remove(&token);
            self.spent.remove(&token);
            self.spent_at.remove(&token);
            self.expires.remove(&token);
        }
        let families: Vec<Uuid> = self
            .family_expires
            .iter()
            .filter(|(_, expiry)| expired(expiry))
            .map(|(family, _)| *family)
            .collect();
        for family in families {
            self.revoked_families.remove(&family);
            self.family_expires.remove(&family);
        }
    }

    fn expiring(&mut self, token: Uuid, family: Uuid, expires_at: Option<DateTime<Utc>>) {
        if let Some(expiry) = expires_at {
            self.expires.insert(token, expiry);
            let last = self.family_expires.entry(family).or_insert(expiry);
            *last = (*last).max(expiry);
        }
    }
}

/// What an account can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Opens the account (again, if it was closed).
    Register(Registration),
    /// Closes the account: it can no longer sign in and its refresh tokens stop working.
    Close,
    /// Records a refresh token issued at sign-in, starting a rotation family.
    IssueRefreshToken {
        /// The token's id.
        token_id: Uuid,
        /// Its new family.
        family_id: Uuid,
        /// Now.
        now: DateTime<Utc>,
        /// When the token expires.
        expires_at: DateTime<Utc>,
    },
    /// Spends `presented` and records `next` in its family.
    RotateRefreshToken {
        /// The id of the token presented.
        presented: Uuid,
        /// The id of the token that replaces it.
        next: Uuid,
        /// When it is presented.
        now: DateTime<Utc>,
        /// When `next` expires.
        expires_at: DateTime<Utc>,
        /// How long after a token was spent presenting it again is taken for a concurrent
        /// refresh (refused, the family kept) rather than a stolen copy (the family revoked).
        reuse_grace: TimeDelta,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    /// The account was opened.
    #[serde(rename = "AccountRegistered")]
    #[event(version = 2)]
    Registered(Registration),
    /// The account was closed.
    #[serde(rename = "AccountClosed")]
    Closed {
        /// The account id.
        #[serde(rename = "accountId")]
        account_id: Uuid,
    },
    /// A refresh token was issued at sign-in.
    #[serde(rename = "RefreshTokenIssued")]
    RefreshTokenIssued {
        /// The token's id.
        #[serde(rename = "tokenId")]
        token_id: Uuid,
        /// Its family.
        #[serde(rename = "familyId")]
        family_id: Uuid,
        /// When (absent from events recorded before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
        /// When the token expires (absent from events recorded before it was kept).
        #[serde(default, rename = "expiresAt", skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
    /// A refresh token was spent and replaced.
    #[serde(rename = "RefreshTokenRotated")]
    RefreshTokenRotated {
        /// The spent token.
        #[serde(rename = "spentTokenId")]
        spent_token_id: Uuid,
        /// Its replacement.
        #[serde(rename = "tokenId")]
        token_id: Uuid,
        /// The family of both.
        #[serde(rename = "familyId")]
        family_id: Uuid,
        /// When the token was spent (absent from events recorded before it was kept).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
        /// When the replacement expires (absent from events recorded before it was kept).
        #[serde(default, rename = "expiresAt", skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
    /// A spent refresh token was presented again: its whole family is revoked.
    #[serde(rename = "RefreshTokenReuseDetected")]
    RefreshTokenReuseDetected {
        /// The token presented again.
        #[serde(rename = "tokenId")]
        token_id: Uuid,
        /// The revoked family.
        #[serde(rename = "familyId")]
        family_id: Uuid,
    },
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// An open account already uses this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// No open account.
    #[error("no such account")]
    NotFound,
    /// The refresh token is unknown, or its family was revoked.
    #[error("the refresh token is not valid")]
    InvalidRefreshToken,
    /// The refresh token was spent moments ago (by a concurrent refresh): refused, and its
    /// family kept.
    #[error("the refresh token was spent moments ago")]
    SpentMomentsAgo,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Register(registration) => {
                if self.active_registration().is_some() {
                    return Err(AccountError::EmailTaken);
                }
                Ok(vec![AccountEvent::Registered(registration.clone())])
            }
            AccountCommand::Close => {
                let registration = self.active_registration().ok_or(AccountError::NotFound)?;
                Ok(vec![AccountEvent::Closed {
                    account_id: registration.account_id,
                }])
            }
            AccountCommand::IssueRefreshToken {
                token_id,
                family_id,
                now,
                expires_at,
            } => {
                self.active_registration().ok_or(AccountError::NotFound)?;
                Ok(vec![AccountEvent::RefreshTokenIssued {
                    token_id: *token_id,
                    family_id: *family_id,
                    at: Some(*now),
                    expires_at: Some(*expires_at),
                }])
            }
            AccountCommand::RotateRefreshToken {
                presented,
                next,
                now,
                expires_at,
                reuse_grace,
            } => {
                self.active_registration().ok_or(AccountError::NotFound)?;
                if let Some(&family_id) = self.active.get(presented) {
                    return Ok(vec![AccountEvent::RefreshTokenRotated {
                        spent_token_id: *presented,
                        token_id: *next,
                        family_id,
                        at: Some(*now),
                        expires_at: Some(*expires_at),
                    }]);
                }
                let spent_moments_ago = self
                    .spent_at
                    .get(presented)
                    .is_some_and(|at| *now - *at < *reuse_grace);
                match self.spent.get(presented) {
                    Some(&family_id)
                        if !self.revoked_families.contains(&family_id) && spent_moments_ago =>
                    {
                        Err(AccountError::SpentMomentsAgo)
                    }
                    Some(&family_id) if !self.revoked_families.contains(&family_id) => {
                        Ok(vec![AccountEvent::RefreshTokenReuseDetected {
                            token_id: *presented,
                            family_id,
                        }])
                    }
                    _ => Err(AccountError::InvalidRefreshToken),
                }
            }
        }
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Registered(registration) => {
                *self = Account {
                    registered: Some(registration.clone()),
                    ..Account::default()
                };
            }
            AccountEvent::Closed { .. } => {
                self.closed = true;
                self.active.clear();
            }
            AccountEvent::RefreshTokenIssued {
                token_id,
                family_id,
                at,
                expires_at,
            } => {
                self.active.insert(*token_id, *family_id);
                self.expiring(*token_id, *family_id, *expires_at);
                if let Some(at) = at {
                    self.prune(*at);
                }
            }
            AccountEvent::RefreshTokenRotated {
                spent_token_id,
                token_id,
                family_id,
                at,
                expires_at,
            } => {
                self.active.remove(spent_token_id);
                self.spent.insert(*spent_token_id, *family_id);
                if let Some(at) = at {
                    self.spent_at.insert(*spent_token_id, *at);
                }
                self.active.insert(*token_id, *family_id);
                self.expiring(*token_id, *family_id, *expires_at);
                if let Some(at) = at {
                    self.prune(*at);
                }
            }
            AccountEvent::RefreshTokenReuseDetected { family_id, .. } => {
                self.revoked_families.insert(*family_id);
                self.active.retain(|_, family| family != family_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use es_core::testing::given;

    use super::*;

    /// `seconds` after the fixed start of these tests.
    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap_or_default()
    }

    /// Presents token `presented` at `at(seconds)`, with a ten-second grace.
    fn rotate(presented: u128, next: u128, seconds: i64) -> AccountCommand {
        AccountCommand::RotateRefreshToken {
            presented: Uuid::from_u128(presented),
            next: Uuid::from_u128(next),
            now: at(seconds),
            expires_at: at(seconds + LIFETIME),
            reuse_grace: TimeDelta::seconds(10),
        }
    }

    fn registration() -> Registration {
        let customer = Uuid::from_u128(7);
        let personal = |value: &str| {
            Personal::new(
                es_core::privacy::SubjectId::from_uuid(customer),
                value.to_owned(),
            )
        };
        Registration {
            account_id: account_id("ada@example.com"),
            email: personal("ada@example.com"),
            password_hash: personal("$argon2id$..."),
            customer_id: customer,
        }
    }

    /// Seconds a refresh token lives in these tests.
    const LIFETIME: i64 = 3600;

    /// Token `token` of a new family `family`, issued at `at(0)`.
    fn issued(token: u128, family: u128) -> AccountEvent {
        issued_at(token, family, 0)
    }

    fn issued_at(token: u128, family: u128, seconds: i64) -> AccountEvent {
        AccountEvent::RefreshTokenIssued {
            token_id: Uuid::from_u128(token),
            family_id: Uuid::from_u128(family),
            at: Some(at(seconds)),
            expires_at: Some(at(seconds + LIFETIME)),
        }
    }

    #[test]
    fn account_ids_ignore_case_and_spaces() {
        assert_eq!(
            account_id(" Ada@Example.COM "),
            account_id("ada@example.com")
        );
        // Composed (NFC) and decomposed (NFD) forms, or full-width letters, are one email.
        assert_eq!(
            account_id("jos\u{e9}@example.com"),
            account_id("jose\u{301}@example.com")
        );
        assert_eq!(
            account_id("\u{ff41}da@example.com"),
            account_id("ada@example.com")
        );
        assert_ne!(account_id("ada@example.com"), account_id("bob@example.com"));
    }

    #[test]
    fn an_email_registers_once_until_closed() {
        given::<Account>([])
            .when(AccountCommand::Register(registration()))
            .then([AccountEvent::Registered(registration())]);
        given::<Account>([AccountEvent::Registered(registration())])
            .when(AccountCommand::Register(registration()))
            .then_error(AccountError::EmailTaken);
        let closed = AccountEvent::Closed {
            account_id: registration().account_id,
        };
        given::<Account>([AccountEvent::Registered(registration()), closed])
            .when(AccountCommand::Register(registration()))
            .then([AccountEvent::Registered(registration())]);
    }

    #[test]
    fn a_refresh_token_rotates_once() {
        given::<Account>([AccountEvent::Registered(registration()), issued(1, 9)])
            .when(rotate(1, 2, 0))
            .then([AccountEvent::RefreshTokenRotated {
                spent_token_id: Uuid::from_u128(1),
                token_id: Uuid::from_u128(2),
                family_id: Uuid::from_u128(9),
                at: Some(at(0)),
                expires_at: Some(at(LIFETIME)),
            }]);
    }

    #[test]
    fn reusing_a_spent_token_revokes_its_family() {
        let rotated = AccountEvent::RefreshTokenRotated {
            spent_token_id: Uuid::from_u128(1),
            token_id: Uuid::from_u128(2),
            family_id: Uuid::from_u128(9),
            at: Some(at(0)),
            expires_at: Some(at(LIFETIME)),
        };
        let history = [
            AccountEvent::Registered(registration()),
            issued(1, 9),
            rotated.clone(),
        ];
        // Moments after it was spent (a concurrent refresh): refused, the family kept.
        given::<Account>(history.clone())
            .when(rotate(1, 3, 1))
            .then_error(AccountError::SpentMomentsAgo);
        // Later: a copy someone else holds.
        given::<Account>(history.clone())
            .when(rotate(1, 3, 60))
            .then([AccountEvent::RefreshTokenReuseDetected {
                token_id: Uuid::from_u128(1),
                family_id: Uuid::from_u128(9),
            }]);
        let revoked = AccountEvent::RefreshTokenReuseDetected {
            token_id: Uuid::from_u128(1),
            family_id: Uuid::from_u128(9),
        };
        let mut after = history.to_vec();
        after.push(revoked);
        // The token that replaced the reused one is revoked with its family.
        given::<Account>(after)
            .when(rotate(2, 4, 0))
            .then_error(AccountError::InvalidRefreshToken);
    }

    #[test]
    fn unknown_tokens_and_closed_accounts_are_refused() {
        given::<Account>([AccountEvent::Registered(registration())])
            .when(rotate(5, 6, 0))
            .then_error(AccountError::InvalidRefreshToken);
        let closed = AccountEvent::Closed {
            account_id: registration().account_id,
        };
        given::<Account>([
            AccountEvent::Registered(registration()),
            issued(1, 9),
            closed,
        ])
        .when(rotate(1, 2, 0))
        .then_error(AccountError::NotFound);
        given::<Account>([])
            .when(AccountCommand::Close)
            .then_error(AccountError::NotFound);
    }

    #[test]
    fn records_of_expired_tokens_are_pruned() {
        let revoked = AccountEvent::RefreshTokenReuseDetected {
            token_id: Uuid::from_u128(1),
            family_id: Uuid::from_u128(9),
        };
        let rotated = AccountEvent::RefreshTokenRotated {
            spent_token_id: Uuid::from_u128(1),
            token_id: Uuid::from_u128(2),
            family_id: Uuid::from_u128(9),
            at: Some(at(0)),
            expires_at: Some(at(LIFETIME)),
        };
        let mut history = vec![
            AccountEvent::Registered(registration()),
            issued(1, 9),
            rotated,
            revoked,
        ];
        // A hundred sign-ins over the lifetime of a token: all their records are kept.
        history.extend((0..100).map(|i| issued_at(100 + i, 200 + i, i64::try_from(i).unwrap())));
        let mut kept = Account::default();
        for event in &history {
            kept.evolve(event);
        }
        // The hundred unspent tokens, the spent one and its revoked family.
        assert_eq!(kept.token_records(), 100 + 1 + 1);
        // A sign-in after every earlier token expired: only its own record is left.
        let later = LIFETIME + 200;
        let state = given::<Account>(history)
            .when(AccountCommand::IssueRefreshToken {
                token_id: Uuid::from_u128(7),
                family_id: Uuid::from_u128(8),
                now: at(later),
                expires_at: at(later + LIFETIME),
            })
            .then([issued_at(7, 8, later)]);
        assert_eq!(state.token_records(), 1);
        // Nothing is pruned before its token expired (with a minute's margin).
        let mut young = Account::default();
        for event in [
            AccountEvent::Registered(registration()),
            issued(1, 9),
            issued_at(2, 10, LIFETIME + 30),
        ] {
            young.evolve(&event);
        }
        assert_eq!(young.token_records(), 2);
    }
}
