//! Reading stored timestamps fast: the RFC 3339 UTC form chrono writes
//! (`2026-11-30T16:51:21.763115Z`) is parsed by hand; any other valid RFC 3339 form falls back
//! to chrono's parser. Every event read decodes one, so this is on the hot path of scans.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::Deserializer;
use serde::de::{Error, Visitor};

/// Deserializes an RFC 3339 timestamp into UTC.
///
/// # Errors
/// When the value is not an RFC 3339 timestamp.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Rfc3339)
}

struct Rfc3339;

impl Visitor<'_> for Rfc3339 {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: Error>(self, value: &str) -> Result<DateTime<Utc>, E> {
        if let Some(parsed) = parse_utc(value.as_bytes()) {
            return Ok(parsed);
        }
        value
            .parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, or `None` for anything else.
fn parse_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    let (month, day) = (digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let rest = &b[19..b.len() - 1];
    let nanos = match rest {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            let value = digits(20..20 + fraction.len())?;
            value * 10u32.pow(u32::try_from(9 - fraction.len()).ok()?)
        }
        _ => return None,
    };
    NaiveDate::from_ymd_opt(year, month, day)?
        .and_hms_nano_opt(hour, minute, second, nanos)
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Timelike};

    use super::*;

    fn read(text: &str) -> Result<DateTime<Utc>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Wrapper(#[serde(deserialize_with = "deserialize")] DateTime<Utc>);
        serde_json::from_str::<Wrapper>(&format!("\"{text}\"")).map(|w| w.0)
    }

    #[test]
    fn reads_what_chrono_writes() -> Result<(), serde_json::Error> {
        for nanos in [0, 1, 763_115_000, 999_999_999, 120_000_000] {
            let written = Utc
                .with_ymd_and_hms(2026, 11, 30, 16, 51, 21)
                .single()
                .and_then(|t| t.with_nanosecond(nanos));
            let Some(written) = written else { continue };
            let json = serde_json::to_string(&written)?;
            assert_eq!(read(json.trim_matches('"'))?, written, "{json}");
        }
        Ok(())
    }

    #[test]
    fn falls_back_to_any_rfc3339_form_and_refuses_the_rest() -> Result<(), serde_json::Error> {
        let offset = read("2026-11-30T18:51:21.5+02:00")?;
        assert_eq!(offset, read("2026-11-30T16:51:21.5Z")?);
        assert_eq!(read("2026-11-30T16:51:21Z")?.nanosecond(), 0);
        assert_eq!(read("2026-11-30t16:51:21z")?, read("2026-11-30T16:51:21Z")?);
        for bad in [
            "",
            "2026-11-30",
            "2026-13-30T16:51:21Z",
            "2026-11-30T16:51:21.Z",
            "x026-11-30T16:51:21Z",
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
