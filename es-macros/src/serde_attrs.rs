//! What the derives read from serde's own attributes: the persisted name, and the keys given.

use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, LitStr, Path, Token, token};

/// The `#[serde(...)]` attributes of a container or a variant.
pub(crate) struct SerdeAttrs {
    /// The name given by `rename = "..."`, or by `rename(serialize = "...", deserialize = "...")`
    /// when both directions agree.
    pub(crate) rename: Option<LitStr>,
    /// Every key given (`rename`, `tag`, `untagged`...), for callers to refuse the ones that
    /// would change what is stored.
    pub(crate) keys: Vec<Path>,
}

impl SerdeAttrs {
    /// Reads the `#[serde(...)]` attributes among `attrs`, skipping the keys it does not need.
    pub(crate) fn parse(attrs: &[Attribute]) -> syn::Result<Self> {
        let mut serde = Self {
            rename: None,
            keys: Vec::new(),
        };
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    serde.rename = Some(rename(&meta)?);
                } else {
                    skip(&meta)?;
                }
                serde.keys.push(meta.path);
                Ok(())
            })?;
        }
        Ok(serde)
    }
}

/// The name of `rename = "..."` or `rename(serialize = "...", deserialize = "...")`.
fn rename(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let name = if meta.input.peek(Token![=]) {
        meta.value()?.parse::<LitStr>()?
    } else {
        let (mut serialize, mut deserialize) = (None, None);
        meta.parse_nested_meta(|direction| {
            let slot = if direction.path.is_ident("serialize") {
                &mut serialize
            } else if direction.path.is_ident("deserialize") {
                &mut deserialize
            } else {
                return Err(direction.error("expected `serialize` or `deserialize`"));
            };
            *slot = Some(direction.value()?.parse::<LitStr>()?);
            Ok(())
        })?;
        match (serialize, deserialize) {
            (Some(serialize), Some(deserialize)) if serialize.value() == deserialize.value() => {
                serialize
            }
            _ => {
                return Err(meta.error(
                    "the persisted name must be the same when writing and reading (a value is \
                     read back under the name it was stored with): \
                     use `#[serde(rename = \"...\")]`",
                ));
            }
        }
    };
    if name.value().is_empty() {
        return Err(syn::Error::new(
            name.span(),
            "a persisted name cannot be empty",
        ));
    }
    Ok(name)
}

/// Consumes the value of a key the derives do not read: `key`, `key = value` or `key(...)`.
fn skip(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(token::Paren) {
        meta.parse_nested_meta(|inner| skip(&inner))?;
    }
    Ok(())
}
