//! JSON sent as already-serialized bytes, so each payload is serialized once (and measured).

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

/// Serialized JSON, sent as `jsonb` (or `json`) without re-encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawJson(pub(crate) Vec<u8>);

impl RawJson {
    pub(crate) fn encode<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(Self)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl ToSql for RawJson {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(1);
        }
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    accepts!(JSON, JSONB);
    to_sql_checked!();
}

/// A `jsonb` (or `json`) column deserialized straight into `T`, without an intermediate
/// `serde_json::Value`.
#[derive(Debug)]
pub(crate) struct JsonAs<T>(pub(crate) T);

impl<'a, T: DeserializeOwned> FromSql<'a> for JsonAs<T> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let body = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, body)) => body,
                _ => return Err("unsupported jsonb encoding version".into()),
            }
        } else {
            raw
        };
        Ok(Self(serde_json::from_slice(body)?))
    }

    accepts!(JSON, JSONB);
}
