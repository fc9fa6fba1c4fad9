//! The personal value of one data subject, and the subject's id.

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// The JSON key that marks a personal value: `{"$personal": {...}}`.
pub const PERSONAL_MARKER: &str = "$personal";

/// The largest subject id, in bytes.
pub const MAX_SUBJECT_LEN: usize = 200;

/// Whose personal data a value is: the id keys are kept and forgotten under (a customer id,
/// say). It is not itself personal: it names the person without saying anything about them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SubjectId(String);

/// Why a string is not a subject id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSubjectId {
    /// Empty.
    #[error("a subject id cannot be empty")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LEN`] bytes.
    #[error("a subject id has at most {MAX_SUBJECT_LEN} bytes (got {0})")]
    TooLong(usize),
}

impl SubjectId {
    /// A subject id: 1 to [`MAX_SUBJECT_LEN`] bytes.
    ///
    /// # Errors
    /// [`InvalidSubjectId`] when empty or too long.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidSubjectId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidSubjectId::Empty);
        }
        if id.len() > MAX_SUBJECT_LEN {
            return Err(InvalidSubjectId::TooLong(id.len()));
        }
        Ok(Self(id))
    }

    /// The subject id of a UUID (never fails).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SubjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let id = String::deserialize(deserializer)?;
        SubjectId::new(id).map_err(de::Error::custom)
    }
}

/// A personal value of one data subject (a name, an email, an address).
///
/// In events, snapshots, saga state and integration messages it is stored encrypted with the
/// subject's key (see [`Privacy`](super::Privacy)); once the subject is forgotten every copy
/// reads back as [forgotten](Self::is_forgotten), while the rest of the record stays intact.
/// Its `Debug` form never shows the value, so logs and traces do not print it.
///
/// Serialized, before encryption, as `{"$personal": {"subject": "...", "value": ...}}`, or
/// `{"$personal": {"subject": "...", "forgotten": true}}`; encrypted, as
/// `{"$personal": {"subject": "...", "key": 1, "nonce": "...", "cipher": "..."}}`, which does
/// not deserialize until [revealed](super::Privacy::reveal).
///
/// ```
/// use es_core::privacy::{Personal, SubjectId};
///
/// let subject = SubjectId::new("customer-7").unwrap();
/// let name = Personal::new(subject.clone(), "Ada Lovelace".to_owned());
/// assert_eq!(name.value().map(String::as_str), Some("Ada Lovelace"));
/// assert_eq!(format!("{name:?}"), "Personal(customer-7, <redacted>)");
/// let forgotten: Personal<String> = Personal::forgotten(subject);
/// assert_eq!(forgotten.value_or("(forgotten)"), "(forgotten)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Personal<T> {
    subject: SubjectId,
    value: Option<T>,
}

impl<T> Personal<T> {
    /// `value`, personal data of `subject`.
    pub fn new(subject: SubjectId, value: T) -> Self {
        Self {
            subject,
            value: Some(value),
        }
    }

    /// A value of `subject` that was forgotten.
    pub fn forgotten(subject: SubjectId) -> Self {
        Self {
            subject,
            value: None,
        }
    }

    /// Whose data it is.
    pub fn subject(&self) -> &SubjectId {
        &self.subject
    }

    /// The value, unless its subject was forgotten.
    pub fn value(&self) -> Option<&T> {
        self.value.as_ref()
    }

    /// The value, or `placeholder` when its subject was forgotten.
    pub fn value_or<'a>(&'a self, placeholder: &'a T::Target) -> &'a T::Target
    where
        T: std::ops::Deref,
    {
        self.value.as_deref().unwrap_or(placeholder)
    }

    /// Whether its subject was forgotten.
    pub fn is_forgotten(&self) -> bool {
        self.value.is_none()
    }

    /// The value, unless forgotten.
    pub fn into_value(self) -> Option<T> {
        self.value
    }
}

impl<T> fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_some() {
            write!(f, "Personal({}, <redacted>)", self.subject)
        } else {
            write!(f, "Personal({}, <forgotten>)", self.subject)
        }
    }
}

impl<T: Serialize> Serialize for Personal<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Plain<'a, T> {
            subject: &'a SubjectId,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<&'a T>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            forgotten: bool,
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(
            PERSONAL_MARKER,
            &Plain {
                subject: &self.subject,
                value: self.value.as_ref(),
                forgotten: self.value.is_none(),
            },
        )?;
        map.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Personal<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[serde(rename = "$personal")]
            personal: Inner,
        }
        #[derive(Deserialize)]
        struct Inner {
            subject: SubjectId,
            #[serde(default)]
            value: Option<serde_json::Value>,
            #[serde(default)]
            forgotten: bool,
            #[serde(default)]
            cipher: Option<serde::de::IgnoredAny>,
        }
        let Outer { personal } = Outer::deserialize(deserializer)?;
        if personal.cipher.is_some() {
            return Err(de::Error::custom(format!(
                "a personal value of {} is still encrypted: read it through \
                 es_core::privacy::Privacy::reveal",
                personal.subject
            )));
        }
        match (personal.value, personal.forgotten) {
            (_, true) => Ok(Self::forgotten(personal.subject)),
            (Some(value), false) => {
                let value = T::deserialize(value).map_err(de::Error::custom)?;
                Ok(Self::new(personal.subject, value))
            }
            (None, false) => Err(de::Error::custom(
                "a personal value has neither a value nor `forgotten`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn a_personal_value_round_trips_and_never_debug_prints() {
        let subject = SubjectId::new("c-1").unwrap();
        let name = Personal::new(subject.clone(), "Ada".to_owned());
        let json = serde_json::to_value(&name).unwrap();
        assert_eq!(
            json,
            json!({"$personal": {"subject": "c-1", "value": "Ada"}})
        );
        let back: Personal<String> = serde_json::from_value(json).unwrap();
        assert_eq!(back, name);
        assert!(!format!("{name:?}").contains("Ada"));
        let gone: Personal<String> = Personal::forgotten(subject);
        let json = serde_json::to_value(&gone).unwrap();
        assert_eq!(
            json,
            json!({"$personal": {"subject": "c-1", "forgotten": true}})
        );
        let back: Personal<String> = serde_json::from_value(json).unwrap();
        assert!(back.is_forgotten());
    }

    #[test]
    fn an_encrypted_value_does_not_deserialize_unrevealed() {
        let sealed =
            json!({"$personal": {"subject": "c-1", "key": 1, "nonce": "AA", "cipher": "AA"}});
        let error = serde_json::from_value::<Personal<String>>(sealed).unwrap_err();
        assert!(error.to_string().contains("still encrypted"), "{error}");
    }

    #[test]
    fn subject_ids_are_bounded() {
        assert_eq!(SubjectId::new(""), Err(InvalidSubjectId::Empty));
        assert!(SubjectId::new("x".repeat(MAX_SUBJECT_LEN)).is_ok());
        assert_eq!(
            SubjectId::new("x".repeat(MAX_SUBJECT_LEN + 1)),
            Err(InvalidSubjectId::TooLong(MAX_SUBJECT_LEN + 1))
        );
    }
}
