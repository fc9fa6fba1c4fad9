//! Pieces shared by the derives' own attributes, `#[event(...)]` and `#[message(...)]`.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Error, Fields, LitInt};

/// The value of `version = N`: a schema version, starting at 1.
pub(crate) fn schema_version(meta: &ParseNestedMeta<'_>) -> syn::Result<u32> {
    let literal: LitInt = meta.value()?.parse()?;
    match literal.base10_parse::<u32>()? {
        0 => Err(Error::new(
            literal.span(),
            "schema versions start at 1 (the default)",
        )),
        version => Ok(version),
    }
}

/// Refuses `#[<name>(...)]` among `attrs`: it is read only where `place` says.
pub(crate) fn refuse(attrs: &[Attribute], name: &str, place: &str) -> syn::Result<()> {
    match attrs.iter().find(|attr| attr.path().is_ident(name)) {
        Some(attr) => Err(Error::new_spanned(
            attr,
            format!("`#[{name}(...)]` is read only {place}"),
        )),
        None => Ok(()),
    }
}

/// Refuses `#[<name>(...)]` on any of `fields`.
pub(crate) fn refuse_on_fields(fields: &Fields, name: &str, place: &str) -> syn::Result<()> {
    fields
        .iter()
        .try_for_each(|field| refuse(&field.attrs, name, place))
}
