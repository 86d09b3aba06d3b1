//! SPIFFE IDs, trust domains, selectors and entry ids.

use tessera_identity::{EntryId, Selector, SpiffeId, TrustDomain};
use tessera_proto::spire::api::types;

use super::error::ConvertError;

/// `SPIFFEID { trust_domain, path }` → a SPIFFE ID; `field` names it in errors.
pub fn spiffe_id(
    field: &'static str,
    id: Option<&types::Spiffeid>,
) -> Result<SpiffeId, ConvertError> {
    let id = id.ok_or(ConvertError::Missing { field })?;
    if id.trust_domain.is_empty() {
        return Err(ConvertError::Missing { field });
    }
    let td =
        TrustDomain::new(&id.trust_domain).map_err(|source| ConvertError::Id { field, source })?;
    SpiffeId::from_path(&td, &id.path).map_err(|source| ConvertError::Id { field, source })
}

/// A SPIFFE ID as `SPIFFEID`.
pub fn spiffe_id_to_proto(id: &SpiffeId) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: id.trust_domain().as_str().to_owned(),
        path: id.path().to_owned(),
    }
}

/// A trust domain given by name ("example.org") or ID ("spiffe://example.org").
pub fn trust_domain(field: &'static str, s: &str) -> Result<TrustDomain, ConvertError> {
    TrustDomain::from_name_or_id(s).map_err(|source| ConvertError::Id { field, source })
}

/// `Selector { type, value }` → a selector.
pub fn selector_from_proto(
    field: &'static str,
    s: &types::Selector,
) -> Result<Selector, ConvertError> {
    Selector::new(&s.r#type, &s.value).map_err(|source| ConvertError::Selector { field, source })
}

/// A selector as `Selector`.
pub fn selector_to_proto(s: &Selector) -> types::Selector {
    types::Selector {
        r#type: s.selector_type().to_owned(),
        value: s.value().to_owned(),
    }
}

/// An entry id.
pub fn entry_id(field: &'static str, s: &str) -> Result<EntryId, ConvertError> {
    if s.is_empty() {
        return Err(ConvertError::Missing { field });
    }
    EntryId::new(s).map_err(|source| ConvertError::EntryId { field, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_round_trip_and_bad_ones_name_the_field() {
        let id = SpiffeId::new("spiffe://example.org/a/b").unwrap();
        assert_eq!(
            spiffe_id("spiffe_id", Some(&spiffe_id_to_proto(&id))),
            Ok(id)
        );
        assert_eq!(
            spiffe_id("parent_id", None),
            Err(ConvertError::Missing { field: "parent_id" })
        );
        let bad = types::Spiffeid {
            trust_domain: "Ex.org".into(),
            path: "/a".into(),
        };
        let err = spiffe_id("spiffe_id", Some(&bad)).unwrap_err().to_string();
        assert!(
            err.starts_with("spiffe_id: ") && err.contains("lowercase"),
            "{err}"
        );
        let bad_path = types::Spiffeid {
            trust_domain: "example.org".into(),
            path: "no-slash".into(),
        };
        assert!(spiffe_id("spiffe_id", Some(&bad_path)).is_err());
    }

    #[test]
    fn selectors_and_ids() {
        let s = types::Selector {
            r#type: "unix".into(),
            value: "uid:0".into(),
        };
        let parsed = selector_from_proto("selectors", &s).unwrap();
        assert_eq!(selector_to_proto(&parsed), s);
        assert!(selector_from_proto("selectors", &types::Selector::default()).is_err());
        assert!(entry_id("id", "").is_err());
        assert!(entry_id("id", "a b").is_err());
        assert_eq!(
            trust_domain("federates_with", "spiffe://b.org")
                .unwrap()
                .as_str(),
            "b.org"
        );
    }
}
