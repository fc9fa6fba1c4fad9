//! `#[derive(DomainEvent)]`: the persisted names and schema versions of an event enum.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Error, Fields, LitStr, Path, Variant};

use crate::own_attrs;
use crate::serde_attrs::SerdeAttrs;

/// Where `#[event(...)]` is read.
const EVENT_PLACE: &str = "on a variant of a `#[derive(DomainEvent)]` enum";

/// The `impl ::es_core::DomainEvent` of `input`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(data) => return Err(not_an_enum(data.struct_token.span)),
        Data::Union(data) => return Err(not_an_enum(data.union_token.span)),
    };
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "#[derive(DomainEvent)] does not support generic parameters: implement \
             `es_core::DomainEvent` by hand",
        ));
    }
    own_attrs::refuse(&input.attrs, "event", EVENT_PLACE)?;
    let container = SerdeAttrs::parse(&input.attrs)?;
    if let Some(error) = container.keys.iter().find_map(refuse_container_key) {
        return Err(error);
    }

    let mut events: Vec<Event<'_>> = Vec::with_capacity(data.variants.len());
    let mut errors = Vec::new();
    for variant in &data.variants {
        match Event::read(variant).and_then(|event| event.unique_among(&events)) {
            Ok(event) => events.push(event),
            Err(error) => errors.push(error),
        }
    }
    if let Some(error) = errors.into_iter().reduce(|mut all, error| {
        all.combine(error);
        all
    }) {
        return Err(error);
    }

    let ident = &input.ident;
    let event_types = events.iter().map(Event::event_type);
    let arms = events.iter().map(Event::match_arm);
    Ok(quote! {
        #[automatically_derived]
        impl ::es_core::DomainEvent for #ident {
            const EVENT_TYPES: &'static [::es_core::EventType] = &[#(#event_types),*];

            fn event_type(&self) -> &'static str {
                match *self {
                    #(#arms)*
                }
            }
        }
    })
}

/// One variant: its persisted name and schema version.
struct Event<'a> {
    variant: &'a Variant,
    name: LitStr,
    version: u32,
}

impl<'a> Event<'a> {
    /// Reads the variant's `#[serde(rename = "...")]` and `#[event(version = N)]`.
    fn read(variant: &'a Variant) -> syn::Result<Self> {
        own_attrs::refuse_on_fields(&variant.fields, "event", EVENT_PLACE)?;
        let serde = SerdeAttrs::parse(&variant.attrs)?;
        if let Some(untagged) = serde.keys.iter().find(|key| key.is_ident("untagged")) {
            return Err(Error::new_spanned(
                untagged,
                "#[derive(DomainEvent)] does not support untagged variants: the event store \
                 expects serde's default, externally tagged form (`{\"Name\": data}`)",
            ));
        }
        let name = serde.rename.ok_or_else(|| {
            Error::new_spanned(
                &variant.ident,
                format!(
                    "variant `{}` has no `#[serde(rename = \"...\")]`: persisted event names \
                     are never derived from Rust identifiers (renaming the variant would orphan \
                     the events stored under its old name); add `#[serde(rename = \"...\")]` \
                     with the name to store",
                    variant.ident,
                ),
            )
        })?;
        let mut version = None;
        for attr in variant.attrs.iter().filter(|a| a.path().is_ident("event")) {
            attr.parse_nested_meta(|meta| {
                if !meta.path.is_ident("version") {
                    return Err(meta.error("unknown key: `#[event(...)]` takes `version = N`"));
                }
                if version.is_some() {
                    return Err(meta.error("`version` is given twice"));
                }
                version = Some(own_attrs::schema_version(&meta)?);
                Ok(())
            })?;
        }
        Ok(Self {
            variant,
            name,
            version: version.unwrap_or(1),
        })
    }

    /// Itself, when no event of `events` has its name.
    fn unique_among(self, events: &[Self]) -> syn::Result<Self> {
        match events.iter().find(|e| e.name.value() == self.name.value()) {
            Some(first) => Err(Error::new(
                self.name.span(),
                format!(
                    "the persisted name {:?} is already the name of variant `{}`: each event \
                     type needs its own name",
                    self.name.value(),
                    first.variant.ident,
                ),
            )),
            None => Ok(self),
        }
    }

    /// Its entry of `EVENT_TYPES`.
    fn event_type(&self) -> TokenStream {
        let name = &self.name;
        match self.version {
            1 => quote!(::es_core::EventType::new(#name)),
            version => quote!(::es_core::EventType::new(#name).version(#version)),
        }
    }

    /// Its arm of `event_type()`.
    fn match_arm(&self) -> TokenStream {
        let ident = &self.variant.ident;
        let name = &self.name;
        match self.variant.fields {
            Fields::Named(_) => quote!(Self::#ident { .. } => #name,),
            Fields::Unnamed(_) => quote!(Self::#ident(..) => #name,),
            Fields::Unit => quote!(Self::#ident => #name,),
        }
    }
}

/// The error for a derive on a struct or a union.
fn not_an_enum(span: proc_macro2::Span) -> Error {
    Error::new(
        span,
        "#[derive(DomainEvent)] needs an enum: one variant per persisted event type, in serde's \
         default, externally tagged form",
    )
}

/// The error for a container key of serde that would change what is stored.
fn refuse_container_key(key: &Path) -> Option<Error> {
    let reason = if ["tag", "content", "untagged"]
        .iter()
        .any(|refused| key.is_ident(refused))
    {
        "the event store expects serde's default, externally tagged form (`{\"Name\": data}`)"
    } else if key.is_ident("rename_all") {
        "persisted event names are never derived from Rust identifiers: give each variant its \
         own `#[serde(rename = \"...\")]`"
    } else {
        return None;
    };
    let key_name = quote!(#key);
    Some(Error::new_spanned(
        key,
        format!("#[derive(DomainEvent)] does not support `#[serde({key_name})]`: {reason}"),
    ))
}
