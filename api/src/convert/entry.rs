//! Registration entries: `spire.api.types.Entry` ⇄ [`RegistrationEntry`], with SPIRE's
//! `EntryMask` for both directions (input mask of `BatchUpdateEntry`, output masks).

use tessera_actors::server::registry::NewEntry;
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet};
use tessera_proto::spire::api::types;

use super::error::ConvertError;
use super::ids::{
    entry_id, selector_from_proto, selector_to_proto, spiffe_id, spiffe_id_to_proto, trust_domain,
};

/// Every field.
pub const FULL_MASK: types::EntryMask = types::EntryMask {
    spiffe_id: true,
    parent_id: true,
    selectors: true,
    x509_svid_ttl: true,
    federates_with: true,
    admin: true,
    downstream: true,
    expires_at: true,
    dns_names: true,
    revision_number: true,
    store_svid: true,
    jwt_svid_ttl: true,
    hint: true,
    created_at: true,
    additional_attributes: true,
};

/// A `BatchCreateEntry` item → a new entry (the registry sets id, time and revision unless an
/// id is given).
pub fn new_entry_from_proto(e: &types::Entry) -> Result<NewEntry, ConvertError> {
    let id = if e.id.is_empty() {
        None
    } else {
        Some(entry_id("id", &e.id)?)
    };
    let mut entry = RegistrationEntry {
        // Replaced by the registry; a placeholder that is a valid id.
        id: EntryId::from_random_bytes([0; 16]),
        spiffe_id: spiffe_id("spiffe_id", e.spiffe_id.as_ref())?,
        parent_id: spiffe_id("parent_id", e.parent_id.as_ref())?,
        selectors: SelectorSet::new(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision: 0,
    };
    apply_entry_fields(&mut entry, e, &FULL_MASK)?;
    Ok(NewEntry { id, entry })
}

/// Copies the fields of `input` that `mask` selects onto `target` (SPIRE's update semantics).
/// `id`, `revision_number` and `created_at` are the server's and never copied.
pub fn apply_entry_fields(
    target: &mut RegistrationEntry,
    input: &types::Entry,
    mask: &types::EntryMask,
) -> Result<(), ConvertError> {
    if mask.spiffe_id {
        target.spiffe_id = spiffe_id("spiffe_id", input.spiffe_id.as_ref())?;
    }
    if mask.parent_id {
        target.parent_id = spiffe_id("parent_id", input.parent_id.as_ref())?;
    }
    if mask.selectors {
        target.selectors = input
            .selectors
            .iter()
            .map(|s| selector_from_proto("selectors", s))
            .collect::<Result<SelectorSet, _>>()?;
    }
    if mask.x509_svid_ttl {
        target.x509_svid_ttl = ttl("x509_svid_ttl", input.x509_svid_ttl)?;
    }
    if mask.jwt_svid_ttl {
        target.jwt_svid_ttl = ttl("jwt_svid_ttl", input.jwt_svid_ttl)?;
    }
    if mask.federates_with {
        target.federates_with = input
            .federates_with
            .iter()
            .map(|td| trust_domain("federates_with", td))
            .collect::<Result<_, _>>()?;
    }
    if mask.dns_names {
        target.dns_names = input.dns_names.clone();
    }
    if mask.admin {
        target.admin = input.admin;
    }
    if mask.downstream {
        target.downstream = input.downstream;
    }
    if mask.hint {
        target.hint = input.hint.clone();
    }
    if mask.expires_at {
        target.expires_at = match input.expires_at {
            0 => None,
            t if t < 0 => {
                return Err(ConvertError::OutOfRange {
                    field: "expires_at",
                    value: t,
                    rule: "Unix seconds, or 0 for never",
                })
            }
            t => Some(t),
        };
    }
    if mask.store_svid && input.store_svid {
        return Err(ConvertError::Unsupported {
            field: "store_svid",
            reason: "Tessera has no SVIDStore plugins; leave it false",
        });
    }
    if mask.additional_attributes {
        if let Some(a) = &input.additional_attributes {
            if a.disable_x509_svid_prefetch || a.jwt_svid_include_jti {
                return Err(ConvertError::Unsupported {
                    field: "additional_attributes",
                    reason: "disable_x509_svid_prefetch and jwt_svid_include_jti are not implemented; leave them false",
                });
            }
        }
    }
    Ok(())
}

fn ttl(field: &'static str, v: i32) -> Result<Option<u32>, ConvertError> {
    match u32::try_from(v) {
        Ok(0) => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(ConvertError::OutOfRange {
            field,
            value: i64::from(v),
            rule: "seconds, or 0 for the server's default",
        }),
    }
}

/// An entry for the wire, with only the fields `mask` selects (all when `None`); `id` always.
pub fn entry_to_proto(e: &RegistrationEntry, mask: Option<&types::EntryMask>) -> types::Entry {
    let m = mask.unwrap_or(&FULL_MASK);
    let ttl = |t: Option<u32>| t.map_or(0, |t| i32::try_from(t).unwrap_or(i32::MAX));
    types::Entry {
        id: e.id.as_str().to_owned(),
        spiffe_id: m.spiffe_id.then(|| spiffe_id_to_proto(&e.spiffe_id)),
        parent_id: m.parent_id.then(|| spiffe_id_to_proto(&e.parent_id)),
        selectors: if m.selectors {
            e.selectors.iter().map(selector_to_proto).collect()
        } else {
            vec![]
        },
        x509_svid_ttl: if m.x509_svid_ttl {
            ttl(e.x509_svid_ttl)
        } else {
            0
        },
        federates_with: if m.federates_with {
            e.federates_with
                .iter()
                .map(|td| td.as_str().to_owned())
                .collect()
        } else {
            vec![]
        },
        admin: m.admin && e.admin,
        downstream: m.downstream && e.downstream,
        expires_at: if m.expires_at {
            e.expires_at.unwrap_or(0)
        } else {
            0
        },
        dns_names: if m.dns_names {
            e.dns_names.clone()
        } else {
            vec![]
        },
        revision_number: if m.revision_number {
            i64::try_from(e.revision).unwrap_or(i64::MAX)
        } else {
            0
        },
        store_svid: false,
        jwt_svid_ttl: if m.jwt_svid_ttl {
            ttl(e.jwt_svid_ttl)
        } else {
            0
        },
        hint: if m.hint {
            e.hint.clone()
        } else {
            String::new()
        },
        created_at: if m.created_at { e.created_at } else { 0 },
        additional_attributes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> types::Entry {
        types::Entry {
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/web".into(),
            }),
            parent_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/spire/agent/x".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:0".into(),
            }],
            x509_svid_ttl: 120,
            federates_with: vec!["spiffe://other.org".into()],
            dns_names: vec!["web.local".into()],
            admin: true,
            hint: "h".into(),
            expires_at: 2_000_000_000,
            ..types::Entry::default()
        }
    }

    #[test]
    fn create_round_trips_through_the_domain() {
        let new = new_entry_from_proto(&wire()).unwrap();
        assert_eq!(new.id, None);
        assert_eq!(new.entry.x509_svid_ttl, Some(120));
        assert_eq!(new.entry.jwt_svid_ttl, None);
        assert_eq!(new.entry.federates_with[0].as_str(), "other.org");
        let back = entry_to_proto(&new.entry, None);
        assert_eq!(back.spiffe_id, wire().spiffe_id);
        assert_eq!(back.selectors, wire().selectors);
        assert_eq!(back.federates_with, vec!["other.org".to_string()]);
        assert_eq!(back.expires_at, 2_000_000_000);
        assert!(back.admin);
    }

    #[test]
    fn given_ids_are_checked() {
        let mut e = wire();
        e.id = "my-id".into();
        assert_eq!(
            new_entry_from_proto(&e).unwrap().id.unwrap().as_str(),
            "my-id"
        );
        e.id = "bad id".into();
        assert!(matches!(
            new_entry_from_proto(&e),
            Err(ConvertError::EntryId { field: "id", .. })
        ));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut e = wire();
        e.x509_svid_ttl = -1;
        assert_eq!(
            new_entry_from_proto(&e)
                .unwrap_err()
                .to_string()
                .split(':')
                .next(),
            Some("x509_svid_ttl")
        );
        let mut e = wire();
        e.parent_id = None;
        assert_eq!(
            new_entry_from_proto(&e),
            Err(ConvertError::Missing { field: "parent_id" })
        );
        let mut e = wire();
        e.store_svid = true;
        assert!(matches!(
            new_entry_from_proto(&e),
            Err(ConvertError::Unsupported {
                field: "store_svid",
                ..
            })
        ));
    }

    #[test]
    fn masks_limit_what_is_copied_and_shown() {
        let mut target = new_entry_from_proto(&wire()).unwrap().entry;
        let input = types::Entry {
            hint: "new".into(),
            ..types::Entry::default()
        };
        let mask = types::EntryMask {
            hint: true,
            ..types::EntryMask::default()
        };
        apply_entry_fields(&mut target, &input, &mask).unwrap();
        assert_eq!(target.hint, "new");
        assert_eq!(target.x509_svid_ttl, Some(120));
        let shown = entry_to_proto(&target, Some(&mask));
        assert_eq!(shown.hint, "new");
        assert_eq!(shown.spiffe_id, None);
        assert_eq!(shown.x509_svid_ttl, 0);
        assert!(!shown.id.is_empty());
    }
}
