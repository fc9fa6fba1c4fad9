//! `#[derive(MessageType)]`: the persisted name, schema version and key of a message type.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Data, DeriveInput, Error, Fields, Ident, LitStr};

use crate::own_attrs;
use crate::serde_attrs::SerdeAttrs;

/// Where `#[message(...)]` is read.
const MESSAGE_PLACE: &str = "on the type that derives `MessageType`";

/// The `impl ::es_core::MessageType` of `input`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    match &input.data {
        Data::Struct(data) => own_attrs::refuse_on_fields(&data.fields, "message", MESSAGE_PLACE)?,
        Data::Enum(data) => data.variants.iter().try_for_each(|variant| {
            own_attrs::refuse(&variant.attrs, "message", MESSAGE_PLACE)?;
            own_attrs::refuse_on_fields(&variant.fields, "message", MESSAGE_PLACE)
        })?,
        Data::Union(data) => {
            return Err(Error::new(
                data.union_token.span,
                "#[derive(MessageType)] needs a struct or an enum",
            ));
        }
    }
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "#[derive(MessageType)] does not support generic parameters: implement \
             `es_core::MessageType` by hand",
        ));
    }
    let ident = &input.ident;
    let name = SerdeAttrs::parse(&input.attrs)?.rename.ok_or_else(|| {
        Error::new_spanned(
            ident,
            format!(
                "`{ident}` has no `#[serde(rename = \"...\")]`: persisted message names are \
                 never derived from Rust identifiers (renaming the type would change the name \
                 its messages travel and are stored under); add `#[serde(rename = \"...\")]` \
                 with the name to persist",
            ),
        )
    })?;
    let options = Options::read(input)?;

    let version = options.version.unwrap_or(1);
    let partition_key = options.key.map(|(literal, field)| {
        let to_string = quote_spanned!(literal.span()=> ::std::string::ToString::to_string);
        quote! {
            fn partition_key(&self) -> ::std::string::String {
                #to_string(&self.#field)
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl ::es_core::MessageType for #ident {
            const MESSAGE_TYPE: &'static str = #name;
            const SCHEMA_VERSION: u32 = #version;
            #partition_key
        }
    })
}

/// What `#[message(...)]` says.
struct Options<'a> {
    /// `version = N`.
    version: Option<u32>,
    /// `key = "field"`: the literal, and the field it names.
    key: Option<(LitStr, &'a Ident)>,
}

impl<'a> Options<'a> {
    /// Reads the `#[message(...)]` attributes of `input`.
    fn read(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut options = Self {
            version: None,
            key: None,
        };
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("version") {
                    if options.version.is_some() {
                        return Err(meta.error("`version` is given twice"));
                    }
                    options.version = Some(own_attrs::schema_version(&meta)?);
                } else if meta.path.is_ident("key") {
                    if options.key.is_some() {
                        return Err(meta.error("`key` is given twice"));
                    }
                    let literal: LitStr = meta.value()?.parse()?;
                    let field = key_field(input, &literal)?;
                    options.key = Some((literal, field));
                } else {
                    return Err(meta.error(
                        "unknown key: `#[message(...)]` takes `version = N` and `key = \"field\"`",
                    ));
                }
                Ok(())
            })?;
        }
        Ok(options)
    }
}

/// The named field of `input` that `literal` names.
fn key_field<'a>(input: &'a DeriveInput, literal: &LitStr) -> syn::Result<&'a Ident> {
    let Data::Struct(data) = &input.data else {
        return Err(Error::new(
            literal.span(),
            "`key` needs a struct with named fields; implement `partition_key` by hand for an enum",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(Error::new(
            literal.span(),
            "`key` needs a struct with named fields",
        ));
    };
    let wanted = literal.value();
    fields
        .named
        .iter()
        .filter_map(|field| field.ident.as_ref())
        .find(|field| field.unraw() == wanted)
        .ok_or_else(|| {
            Error::new(
                literal.span(),
                format!(
                    "`{}` has no field `{wanted}` (the key names a Rust field, not its serde name)",
                    input.ident,
                ),
            )
        })
}
