//! `xid8` read in its binary form, so queries need not convert it to text and back per row.

use tokio_postgres::types::{FromSql, Type};

/// A full transaction id (`xid8`), as PostgreSQL sends it: eight bytes, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Xid8(pub(crate) u64);

impl<'a> FromSql<'a> for Xid8 {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("an xid8 is 8 bytes, got {}", raw.len()))?;
        Ok(Self(u64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        // Not among tokio-postgres's built-in types; matched by name (its OID is 5069).
        ty.name() == "xid8" && ty.schema() == "pg_catalog"
    }
}
