//! Crypto-shredding: forgetting a person in an append-only log.
//!
//! Personal fields are [`Personal`] values tied to a data subject. Before a record leaves the
//! process (an event appended, a snapshot saved, a message put in the outbox) [`Privacy::protect`]
//! encrypts each one with the subject's key from a [`KeyStore`] (XChaCha20-Poly1305, a fresh
//! nonce per value, the subject id and key version bound as associated data); after a record
//! is read [`Privacy::reveal`] decrypts them. [`KeyStore::forget`] destroys the subject's keys:
//! from then on every copy anywhere reads back as [forgotten](Personal::is_forgotten), a value
//! and not an error, so projections, consumers and sagas go on, and the rest of the history
//! (amounts, statuses) stays as it was.
//!
//! ```
//! # async fn demo() -> Result<(), es_core::privacy::PrivacyError> {
//! use std::sync::Arc;
//! use es_core::privacy::{MemoryKeyStore, Personal, Privacy, SubjectId};
//!
//! let privacy = Privacy::new(Arc::new(MemoryKeyStore::new()));
//! let ada = SubjectId::new("customer-7").unwrap();
//! let mut stored = serde_json::json!({
//!     "name": Personal::new(ada.clone(), "Ada Lovelace".to_owned()),
//!     "amount": 42,
//! });
//! privacy.protect(&mut stored).await?;
//! assert!(!stored.to_string().contains("Ada"));
//!
//! let mut read = stored.clone();
//! privacy.reveal(&mut read).await?;
//! let name: Personal<String> = serde_json::from_value(read["name"].clone()).unwrap();
//! assert_eq!(name.value().map(String::as_str), Some("Ada Lovelace"));
//!
//! privacy.forget(&ada, "operator").await?;
//! let mut read = stored.clone();
//! privacy.reveal(&mut read).await?;
//! let name: Personal<String> = serde_json::from_value(read["name"].clone()).unwrap();
//! assert!(name.is_forgotten());
//! assert_eq!(read["amount"], 42);
//! # Ok(())
//! # }
//! ```

mod forgetting;
mod keys;
mod personal;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, AeadCore, OsRng, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use serde_json::{Map, Value};

pub use forgetting::{
    FORGOTTEN_STREAM_TYPE, ForgetError, Revealing, SUBJECT_FORGOTTEN, SubjectForgotten,
    forgotten_record, forgotten_stream, forgotten_subject,
};
pub use keys::{
    Forgetting, InvalidMasterKey, KEY_LEN, KeyStore, KeyStoreError, MasterKey, MasterKeys,
    MemoryKeyStore, SubjectKey, WrappedKey,
};
pub use personal::{InvalidSubjectId, MAX_SUBJECT_LEN, PERSONAL_MARKER, Personal, SubjectId};

/// Why personal data could not be protected or revealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// The key store failed.
    #[error(transparent)]
    Keys(#[from] KeyStoreError),
    /// A sealed value does not open with its subject's key: it was altered, or moved from
    /// another subject's record.
    #[error("a personal value of {subject} was altered or does not belong to it")]
    Tampered {
        /// The subject the value claims.
        subject: SubjectId,
    },
    /// A `$personal` marker is malformed.
    #[error("malformed personal value: {0}")]
    Malformed(String),
}

/// Encrypts and decrypts the personal values of records with a [`KeyStore`]'s keys.
///
/// The subjects' *current* keys, which encrypt, are kept for a while (a minute by default,
/// [`with_key_cache`](Self::with_key_cache)) so that a write does not cost a key-store read.
/// This is safe with forgetting: a value encrypted after its subject was forgotten, with the
/// destroyed key, is as unreadable as one never written. Keys that decrypt are never kept
/// beyond one call, so a forgotten subject reads as forgotten at once, in every process.
#[derive(Debug, Clone)]
pub struct Privacy {
    keys: Arc<dyn KeyStore>,
    current: Arc<std::sync::Mutex<CurrentKeys>>,
    keep_current: Duration,
}

/// Each subject's current key (`None`: forgotten) and when it was read.
type CurrentKeys = HashMap<SubjectId, (Option<SubjectKey>, Instant)>;

/// How many subjects' current keys a [`Privacy`] keeps at most.
const KEPT_KEYS: usize = 10_000;

impl Privacy {
    /// Protects and reveals with `keys`.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        Self {
            keys,
            current: Arc::default(),
            keep_current: Duration::from_secs(60),
        }
    }

    /// Keeps each subject's current key for `keep` after reading it (zero: read it for every
    /// write).
    #[must_use]
    pub fn with_key_cache(mut self, keep: Duration) -> Self {
        self.keep_current = keep;
        self
    }

    /// Forgets `subject` ([`KeyStore::forget`]), and stops encrypting for them here at once.
    ///
    /// # Errors
    /// [`PrivacyError::Keys`] when the key store fails.
    pub async fn forget(&self, subject: &SubjectId, by: &str) -> Result<Forgetting, PrivacyError> {
        let forgetting = self.keys.forget(subject, by).await?;
        self.remember(subject, None);
        Ok(forgetting)
    }

    /// Rotates `subject`'s key ([`KeyStore::rotate`]); values written here from now on use
    /// the new version.
    ///
    /// # Errors
    /// [`PrivacyError::Keys`] when the key store fails.
    pub async fn rotate(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, PrivacyError> {
        let key = self.keys.rotate(subject).await?;
        self.remember(subject, key.clone());
        Ok(key)
    }

    fn remember(&self, subject: &SubjectId, key: Option<SubjectKey>) {
        if self.keep_current.is_zero() {
            return;
        }
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.len() >= KEPT_KEYS {
            current.clear();
        }
        current.insert(subject.clone(), (key, Instant::now()));
    }

    /// The subject's current key, from the cache while it is fresh.
    async fn current_key(&self, subject: &SubjectId) -> Result<Option<SubjectKey>, PrivacyError> {
        let cached = {
            let current = self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            current
                .get(subject)
                .filter(|(_, at)| at.elapsed() < self.keep_current)
                .map(|(key, _)| key.clone())
        };
        if let Some(key) = cached {
            return Ok(key);
        }
        let key = self.keys.current_key(subject).await?;
        self.remember(subject, key.clone());
        Ok(key)
    }

    /// The key store.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Encrypts every plain personal value inside `value` with its subject's current key
    /// (a value of a forgotten subject is stored as forgotten); returns how many it sealed.
    /// Sealed and forgotten values are left as they are.
    ///
    /// # Errors
    /// [`PrivacyError::Keys`] when the key store fails; [`PrivacyError::Malformed`].
    pub async fn protect(&self, value: &mut Value) -> Result<usize, PrivacyError> {
        let mut subjects = HashSet::new();
        visit(value, &mut |marker| {
            if marker.contains_key("value") {
                subjects.insert(subject_of(marker)?);
            }
            Ok(())
        })?;
        if subjects.is_empty() {
            return Ok(0);
        }
        let mut keys: HashMap<SubjectId, Option<SubjectKey>> = HashMap::new();
        for subject in subjects {
            let key = self.current_key(&subject).await?;
            keys.insert(subject, key);
        }
        let mut sealed = 0;
        visit_mut(value, &mut |marker| {
            let Some(plain) = marker.get("value") else {
                return Ok(());
            };
            let subject = subject_of(marker)?;
            *marker = match keys.get(&subject).cloned().flatten() {
                Some(key) => {
                    sealed += 1;
                    seal(&key, &subject, plain)?
                }
                None => forgotten_marker(&subject),
            };
            Ok(())
        })?;
        Ok(sealed)
    }

    /// Decrypts every sealed personal value inside `value`; a value whose key was forgotten
    /// becomes a forgotten one. Returns how many it opened.
    ///
    /// # Errors
    /// [`PrivacyError::Tampered`] when a value does not open with its subject's key;
    /// [`PrivacyError::Keys`] when the key store fails; [`PrivacyError::Malformed`].
    pub async fn reveal(&self, value: &mut Value) -> Result<usize, PrivacyError> {
        self.reveal_all([value]).await
    }

    /// [`reveal`](Self::reveal) over many records at once (the events of a stream): each key
    /// is fetched from the store once, however many values it opens.
    ///
    /// # Errors
    /// As [`reveal`](Self::reveal).
    pub async fn reveal_all<'a>(
        &self,
        values: impl IntoIterator<Item = &'a mut Value>,
    ) -> Result<usize, PrivacyError> {
        let mut values: Vec<&'a mut Value> = values.into_iter().collect();
        let mut wanted = HashSet::new();
        for value in &values {
            visit(value, &mut |marker| {
                if marker.contains_key("cipher") {
                    wanted.insert((subject_of(marker)?, version_of(marker)?));
                }
                Ok(())
            })?;
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let wanted: Vec<(SubjectId, u32)> = wanted.into_iter().collect();
        let keys = self.keys.keys(&wanted).await?;
        let mut opened = 0;
        for value in &mut values {
            visit_mut(value, &mut |marker| {
                if !marker.contains_key("cipher") {
                    return Ok(());
                }
                let subject = subject_of(marker)?;
                let version = version_of(marker)?;
                *marker = match keys.get(&(subject.clone(), version)).cloned() {
                    Some(key) => {
                        opened += 1;
                        open(&key, &subject, marker)?
                    }
                    None => forgotten_marker(&subject),
                };
                Ok(())
            })?;
        }
        Ok(opened)
    }
}

/// An upcaster's step for fields that were stored in clear and are now personal: wraps each of
/// `fields` of `data` as a plain personal value of the subject named by the string field
/// `subject_field` (the next write, or [`Privacy::reveal`]'s caller, sees a `Personal`).
///
/// ```
/// let mut v1 = serde_json::json!({ "customerId": "c-7", "name": "Ada" });
/// es_core::privacy::mark_personal(&mut v1, "customerId", &["name"]).unwrap();
/// assert_eq!(v1["name"], serde_json::json!({ "$personal": { "subject": "c-7", "value": "Ada" } }));
/// ```
///
/// # Errors
/// When `subject_field` is not a string: the upcaster's error.
pub fn mark_personal(data: &mut Value, subject_field: &str, fields: &[&str]) -> Result<(), String> {
    let subject = data[subject_field]
        .as_str()
        .ok_or_else(|| format!("no {subject_field}"))?
        .to_owned();
    for field in fields {
        let value = data[*field].take();
        data[*field] =
            serde_json::json!({ (PERSONAL_MARKER): { "subject": subject, "value": value } });
    }
    Ok(())
}

/// What a forgotten personal value shows as when a record is [presented](present).
pub const FORGOTTEN: &str = "[forgotten]";

/// Replaces every revealed personal value inside `value` by the value itself, and every
/// forgotten one by [`FORGOTTEN`]: a record as a person reads it (an event history shown to a
/// client). Sealed values (not revealed) are replaced by [`FORGOTTEN`] too: nothing encrypted
/// is ever shown.
pub fn present(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(marker) = personal(map) {
                *value = marker
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| Value::String(FORGOTTEN.to_owned()));
                return;
            }
            map.values_mut().for_each(present);
        }
        Value::Array(items) => items.iter_mut().for_each(present),
        _ => {}
    }
}

/// Whether `value` holds a sealed personal value, one that [`Privacy::reveal`] would open (or
/// read as forgotten): a cheap look before copying a record to reveal it.
pub fn holds_sealed(value: &Value) -> bool {
    match value {
        Value::Object(map) => match personal(map) {
            Some(marker) => marker.contains_key("cipher"),
            None => map.values().any(holds_sealed),
        },
        Value::Array(items) => items.iter().any(holds_sealed),
        _ => false,
    }
}

/// Calls `each` with the inside of every `$personal` marker in `value`.
fn visit(
    value: &Value,
    each: &mut impl FnMut(&Map<String, Value>) -> Result<(), PrivacyError>,
) -> Result<(), PrivacyError> {
    match value {
        Value::Object(map) => match personal(map) {
            Some(marker) => each(marker),
            None => map.values().try_for_each(|v| visit(v, each)),
        },
        Value::Array(items) => items.iter().try_for_each(|v| visit(v, each)),
        _ => Ok(()),
    }
}

/// [`visit`], letting `each` replace the inside of each marker.
fn visit_mut(
    value: &mut Value,
    each: &mut impl FnMut(&mut Map<String, Value>) -> Result<(), PrivacyError>,
) -> Result<(), PrivacyError> {
    match value {
        Value::Object(map) => {
            if personal(map).is_some() {
                if let Some(Value::Object(marker)) = map.get_mut(PERSONAL_MARKER) {
                    return each(marker);
                }
                return Ok(());
            }
            map.values_mut().try_for_each(|v| visit_mut(v, each))
        }
        Value::Array(items) => items.iter_mut().try_for_each(|v| visit_mut(v, each)),
        _ => Ok(()),
    }
}

/// The inside of `map` when it is a `$personal` marker.
fn personal(map: &Map<String, Value>) -> Option<&Map<String, Value>> {
    if map.len() != 1 {
        return None;
    }
    map.get(PERSONAL_MARKER)?.as_object()
}

fn subject_of(marker: &Map<String, Value>) -> Result<SubjectId, PrivacyError> {
    let id = marker
        .get("subject")
        .and_then(Value::as_str)
        .ok_or_else(|| PrivacyError::Malformed("no subject".to_owned()))?;
    SubjectId::new(id).map_err(|e| PrivacyError::Malformed(e.to_string()))
}

fn version_of(marker: &Map<String, Value>) -> Result<u32, PrivacyError> {
    marker
        .get("key")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| PrivacyError::Malformed("no key version".to_owned()))
}

fn forgotten_marker(subject: &SubjectId) -> Map<String, Value> {
    let mut marker = Map::new();
    marker.insert("subject".to_owned(), Value::String(subject.to_string()));
    marker.insert("forgotten".to_owned(), Value::Bool(true));
    marker
}

/// What a sealed value is bound to besides its key: the subject and the key version, so a
/// value moved to another subject's record, or relabelled with another version, is refused.
fn associated_data(subject: &SubjectId, version: u32) -> Vec<u8> {
    let mut aad = b"es-personal/v1\0".to_vec();
    aad.extend_from_slice(subject.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn seal(
    key: &SubjectKey,
    subject: &SubjectId,
    plain: &Value,
) -> Result<Map<String, Value>, PrivacyError> {
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let plaintext =
        serde_json::to_vec(plain).map_err(|e| PrivacyError::Malformed(e.to_string()))?;
    let aad = associated_data(subject, key.version());
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| PrivacyError::Malformed("encryption failed".to_owned()))?;
    let mut marker = Map::new();
    marker.insert("subject".to_owned(), Value::String(subject.to_string()));
    marker.insert("key".to_owned(), Value::from(key.version()));
    marker.insert("nonce".to_owned(), Value::String(BASE64.encode(nonce)));
    marker.insert("cipher".to_owned(), Value::String(BASE64.encode(sealed)));
    Ok(marker)
}

fn open(
    key: &SubjectKey,
    subject: &SubjectId,
    marker: &Map<String, Value>,
) -> Result<Map<String, Value>, PrivacyError> {
    let field = |name: &str| {
        marker
            .get(name)
            .and_then(Value::as_str)
            .and_then(|text| BASE64.decode(text).ok())
            .ok_or_else(|| PrivacyError::Malformed(format!("no readable {name}")))
    };
    let nonce = field("nonce")?;
    if nonce.len() != 24 {
        return Err(PrivacyError::Malformed("a nonce has 24 bytes".to_owned()));
    }
    let sealed = field("cipher")?;
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let aad = associated_data(subject, key.version());
    let plaintext = cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .map_err(|_| PrivacyError::Tampered {
            subject: subject.clone(),
        })?;
    let plain: Value = serde_json::from_slice(&plaintext).map_err(|_| PrivacyError::Tampered {
        subject: subject.clone(),
    })?;
    let mut opened = Map::new();
    opened.insert("subject".to_owned(), Value::String(subject.to_string()));
    opened.insert("value".to_owned(), plain);
    Ok(opened)
}

#[cfg(test)]
mod tests;
