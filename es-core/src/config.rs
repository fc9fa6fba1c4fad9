//! Options loaded from the environment, and the serde forms of their durations.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Options that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings {prefix}*: {reason}")]
pub struct OptionsError {
    /// The prefix of the variables read.
    pub prefix: String,
    /// What was wrong (an unknown name, a value of the wrong kind).
    pub reason: String,
}

/// Loads options of type `T` from the variables `<prefix><FIELD>` of `vars`: the rest of each
/// name, lower-cased, is a field of `T`; a value that reads as a number or a boolean is one,
/// anything else is a string. Fields not given keep their defaults (`T` is
/// `#[serde(default)]`); durations take a number of milliseconds or a number with a unit
/// (`250ms`, `5s`, `2m`, `1h`).
///
/// ```
/// use std::time::Duration;
/// use es_core::relay::RelayOptions;
///
/// let vars = [("ES_RELAY_BATCH_SIZE", "200"), ("ES_RELAY_MAX_POLL_INTERVAL", "2s"), ("PATH", "/bin")];
/// let options: RelayOptions = es_core::options_from_vars("ES_RELAY_", vars)?;
/// assert_eq!((options.batch_size, options.max_poll_interval), (200, Duration::from_secs(2)));
///
/// let typo: Result<RelayOptions, _> = es_core::options_from_vars("ES_RELAY_", [("ES_RELAY_BATCH", "1")]);
/// assert!(typo.unwrap_err().to_string().contains("unknown field `batch`"));
///
/// let bad: Result<RelayOptions, _> = es_core::options_from_vars("ES_RELAY_", [("ES_RELAY_MAX_POLL_INTERVAL", "soon")]);
/// assert!(bad.unwrap_err().to_string().contains("is not a duration"));
/// # Ok::<(), es_core::OptionsError>(())
/// ```
///
/// # Errors
/// [`OptionsError`] naming an unknown variable or a value that does not fit its field.
pub fn options_from_vars<T, I, K, V>(prefix: &str, vars: I) -> Result<T, OptionsError>
where
    T: DeserializeOwned,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut fields = Map::new();
    for (name, value) in vars {
        let Some(field) = name.as_ref().strip_prefix(prefix) else {
            continue;
        };
        let value = value.as_ref().trim();
        let parsed = match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(value.to_owned())),
        };
        fields.insert(field.to_lowercase(), parsed);
    }
    serde_json::from_value(Value::Object(fields)).map_err(|error| OptionsError {
        prefix: prefix.to_owned(),
        reason: error.to_string(),
    })
}

/// [`options_from_vars`] over the process's environment.
///
/// # Errors
/// As [`options_from_vars`].
pub fn options_from_env<T: DeserializeOwned>(prefix: &str) -> Result<T, OptionsError> {
    options_from_vars(prefix, std::env::vars())
}

/// Serde forms of a [`Duration`](std::time::Duration) in options: a number of milliseconds,
/// a string with a unit (`250ms`, `5s`, `2m`, `1h`), or serde's own `{ secs, nanos }`. Use with
/// `#[serde(with = "es_core::duration")]`.
pub mod duration {
    use std::time::Duration;

    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::{Deserialize, Serializer};

    /// Serializes as whole milliseconds.
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserializes any of the forms above.
    ///
    /// # Errors
    /// The deserializer's, or a string that is not a number with a known unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    /// The same forms for an optional duration (`null` or absent is `None`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes as whole milliseconds, or none.
        ///
        /// # Errors
        /// The serializer's.
        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Deserializes `null` as `None`, anything else as [`super::deserialize`] does.
        ///
        /// # Errors
        /// As [`super::deserialize`].
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] Duration);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
        }
    }

    struct DurationVisitor;

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("milliseconds, or a duration such as \"250ms\", \"5s\", \"2m\", \"1h\"")
        }

        fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(millis))
        }

        fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
            u64::try_from(millis)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).ok_or_else(|| {
                E::custom(format!(
                    "{text:?} is not a duration (use e.g. \"250ms\", \"5s\", \"2m\", \"1h\")"
                ))
            })
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Duration, A::Error> {
            Duration::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit())?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        match unit.trim() {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
            "h" => Some(Duration::from_secs(number.checked_mul(3600)?)),
            _ => None,
        }
    }
}
