//! The key-store port: one key per data subject (in versions), and forgetting it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use super::SubjectId;
use crate::BoxError;

/// The length of a subject key, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// One version of a subject's key. Its `Debug` form never shows the key, and its bytes are
/// wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey {
    version: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl SubjectKey {
    /// Version `version` of a key with these bytes.
    pub fn new(version: u32, bytes: [u8; KEY_LEN]) -> Self {
        Self {
            version,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A fresh random key (from the operating system's generator).
    pub fn generate(version: u32) -> Self {
        use chacha20poly1305::KeyInit;
        let key =
            chacha20poly1305::XChaCha20Poly1305::generate_key(&mut chacha20poly1305::aead::OsRng);
        let mut bytes = [0_u8; KEY_LEN];
        bytes.copy_from_slice(&key);
        Self::new(version, bytes)
    }

    /// Its version (1 for a subject's first key).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectKey(v{}, <redacted>)", self.version)
    }
}

/// What forgetting a subject recorded: no personal data, only who asked and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgetting {
    /// The subject.
    pub subject: SubjectId,
    /// Who asked (a user id, an operator's client id).
    pub by: String,
    /// When the keys were destroyed.
    pub at: DateTime<Utc>,
    /// Whether the subject had been forgotten before (this call changed nothing).
    pub already: bool,
}

/// Why the key store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The storage behind it failed.
    #[error("key store: {0}")]
    Storage(#[source] BoxError),
    /// A stored key could not be decrypted with any master key (a wrong or missing master
    /// key in the configuration).
    #[error(
        "the key of {subject} (v{version}) cannot be decrypted with the configured master keys"
    )]
    MasterKey {
        /// The subject.
        subject: SubjectId,
        /// The key's version.
        version: u32,
    },
}

/// Where the subjects' keys live. Forgetting a subject destroys every version of its key, so
/// every copy of its personal data anywhere (events, snapshots, messages on the broker,
/// backups) becomes unreadable at once; a forgotten subject never gets a key again.
///
/// Every implementation passes [`testing::key_store_contract`](crate::testing::key_store_contract).
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug {
    /// The subject's current key, created on first use; `None` once the subject is forgotten
    /// (nothing of theirs is encrypted any more: it is stored as forgotten).
    async fn current_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError>;

    /// Version `version` of the subject's key; `None` when it was forgotten (or never made).
    async fn key(
        &self,
        subject: &SubjectId,
        version: u32,
    ) -> Result<Option<SubjectKey>, KeyStoreError>;

    /// Several keys at once, each `(subject, version)` as [`key`](Self::key) reads it: the
    /// map holds those that exist (a forgotten subject's are absent). The default reads them
    /// one by one; a store over a network answers them in one request (decrypting a batch of
    /// events from many subjects then costs one read, not one per subject).
    async fn keys(
        &self,
        wanted: &[(SubjectId, u32)],
    ) -> Result<HashMap<(SubjectId, u32), SubjectKey>, KeyStoreError> {
        let mut found = HashMap::with_capacity(wanted.len());
        for (subject, version) in wanted {
            if let Some(key) = self.key(subject, *version).await? {
                found.insert((subject.clone(), *version), key);
            }
        }
        Ok(found)
    }

    /// Makes a new version of the subject's key the current one (older versions still read
    /// what they encrypted); `None` once the subject is forgotten.
    async fn rotate(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError>;

    /// Destroys every version of the subject's key and records that it happened (who, when);
    /// idempotent.
    async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, KeyStoreError>;

    /// Whether the subject was forgotten.
    async fn is_forgotten(&self, subject: &SubjectId) -> Result<bool, KeyStoreError>;
}

/// The in-memory key store (the embedded default): keys are lost with the process, which
/// loses the events with them.
#[derive(Default)]
pub struct MemoryKeyStore {
    inner: Mutex<MemoryKeys>,
}

#[derive(Default)]
struct MemoryKeys {
    keys: HashMap<SubjectId, Vec<SubjectKey>>,
    forgotten: HashMap<SubjectId, Forgetting>,
}

impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore").finish_non_exhaustive()
    }
}

impl MemoryKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryKeys> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn current_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        let mut keys = self.lock();
        if keys.forgotten.contains_key(subject) {
            return Ok(None);
        }
        let versions = keys.keys.entry(subject.clone()).or_default();
        if versions.is_empty() {
            versions.push(SubjectKey::generate(1));
        }
        Ok(versions.last().cloned())
    }

    async fn key(
        &self,
        subject: &SubjectId,
        version: u32,
    ) -> Result<Option<SubjectKey>, KeyStoreError> {
        let keys = self.lock();
        Ok(keys
            .keys
            .get(subject)
            .and_then(|versions| versions.iter().find(|k| k.version() == version))
            .cloned())
    }

    async fn rotate(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, KeyStoreError> {
        let mut keys = self.lock();
        if keys.forgotten.contains_key(subject) {
            return Ok(None);
        }
        let versions = keys.keys.entry(subject.clone()).or_default();
        let next = versions.last().map_or(1, |k| k.version() + 1);
        let key = SubjectKey::generate(next);
        versions.push(key.clone());
        Ok(Some(key))
    }

    async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, KeyStoreError> {
        let mut keys = self.lock();
        keys.keys.remove(subject);
        if let Some(earlier) = keys.forgotten.get(subject) {
            return Ok(Forgetting {
                already: true,
                ..earlier.clone()
            });
        }
        let forgetting = Forgetting {
            subject: subject.clone(),
            by: by.to_owned(),
            at: Utc::now(),
            already: false,
        };
        keys.forgotten.insert(subject.clone(), forgetting.clone());
        Ok(forgetting)
    }

    async fn is_forgotten(&self, subject: &SubjectId) -> Result<bool, KeyStoreError> {
        Ok(self.lock().forgotten.contains_key(subject))
    }
}

/// A key that encrypts subject keys at rest (in a backend's key store), with its version, so
/// that a store can hold keys wrapped by an older master key while it is being rotated. Its
/// `Debug` form never shows the key.
#[derive(Clone)]
pub struct MasterKey {
    version: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

/// Why a master key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidMasterKey {
    /// Not base64 of exactly [`KEY_LEN`] bytes.
    #[error("a master key is {KEY_LEN} bytes in base64")]
    Length,
    /// Two master keys of one set share a version.
    #[error("two master keys have version {0}")]
    DuplicateVersion(u32),
}

/// A subject key as a backend stores it: sealed with a master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The master key's version.
    pub master_version: u32,
    /// The 24-byte nonce.
    pub nonce: Vec<u8>,
    /// The sealed key.
    pub sealed: Vec<u8>,
}

impl MasterKey {
    /// Version `version` of a master key with these bytes.
    pub fn new(version: u32, bytes: [u8; KEY_LEN]) -> Self {
        Self {
            version,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// A master key from its base64 form (as configuration holds it).
    ///
    /// # Errors
    /// [`InvalidMasterKey::Length`] unless it is base64 of [`KEY_LEN`] bytes.
    pub fn from_base64(version: u32, text: &str) -> Result<Self, InvalidMasterKey> {
        use base64::Engine as _;
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| InvalidMasterKey::Length)?,
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| InvalidMasterKey::Length)?;
        Ok(Self::new(version, bytes))
    }

    /// Its version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `key` of `subject`, sealed with this master key (the subject and key version bound as
    /// associated data).
    pub fn wrap(&self, subject: &SubjectId, key: &SubjectKey) -> WrappedKey {
        use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
        use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
        let cipher = XChaCha20Poly1305::new(self.bytes.as_ref().into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = wrap_aad(subject, key.version());
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: key.bytes(),
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        WrappedKey {
            master_version: self.version,
            nonce: nonce.to_vec(),
            sealed,
        }
    }

    /// Version `version` of `subject`'s key from `wrapped`; `None` when it does not open with
    /// this master key (another master key, or altered).
    pub fn unwrap(
        &self,
        subject: &SubjectId,
        version: u32,
        wrapped: &WrappedKey,
    ) -> Option<SubjectKey> {
        use chacha20poly1305::aead::{Aead, Payload};
        use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
        if wrapped.nonce.len() != 24 {
            return None;
        }
        let cipher = XChaCha20Poly1305::new(self.bytes.as_ref().into());
        let aad = wrap_aad(subject, version);
        let opened = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(&wrapped.nonce),
                    Payload {
                        msg: &wrapped.sealed,
                        aad: &aad,
                    },
                )
                .ok()?,
        );
        let bytes: [u8; KEY_LEN] = opened.as_slice().try_into().ok()?;
        Some(SubjectKey::new(version, bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(v{}, <redacted>)", self.version)
    }
}

fn wrap_aad(subject: &SubjectId, version: u32) -> Vec<u8> {
    let mut aad = b"es-subject-key/v1\0".to_vec();
    aad.extend_from_slice(subject.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// The master keys a key store knows: the current one wraps new keys; older ones still unwrap
/// what they wrapped until the store is rewrapped.
#[derive(Debug, Clone)]
pub struct MasterKeys {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl MasterKeys {
    /// `current`, and the `older` keys still in use.
    ///
    /// # Errors
    /// [`InvalidMasterKey::DuplicateVersion`] when two keys share a version.
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Result<Self, InvalidMasterKey> {
        let mut versions = vec![current.version()];
        for key in &older {
            if versions.contains(&key.version()) {
                return Err(InvalidMasterKey::DuplicateVersion(key.version()));
            }
            versions.push(key.version());
        }
        Ok(Self { current, older })
    }

    /// The key new subject keys are wrapped with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The master key of `version`, if known.
    pub fn get(&self, version: u32) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|key| key.version() == version)
    }
}
