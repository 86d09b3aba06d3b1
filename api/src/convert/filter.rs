//! List/count filters of the Entry service → [`EntryFilter`].

use std::collections::BTreeSet;

use tessera_actors::server::registry::{EntryFilter, MatchBehavior};
use tessera_identity::SelectorSet;
use tessera_proto::spire::api::server::entry::v1::list_entries_request;
use tessera_proto::spire::api::types;

use super::error::ConvertError;
use super::ids::{selector_from_proto, spiffe_id, trust_domain};

/// SPIRE's `MatchBehavior` numbers (the same in `SelectorMatch` and `FederatesWithMatch`).
pub fn match_behavior(field: &'static str, v: i32) -> Result<MatchBehavior, ConvertError> {
    Ok(match v {
        0 => MatchBehavior::Exact,
        1 => MatchBehavior::Subset,
        2 => MatchBehavior::Superset,
        3 => MatchBehavior::Any,
        value => return Err(ConvertError::UnknownEnum { field, value }),
    })
}

/// Whether `have` matches `want` under `how` (SPIRE's semantics).
pub fn set_matches<T: Ord>(have: &[T], want: &[T], how: MatchBehavior) -> bool {
    let have: BTreeSet<&T> = have.iter().collect();
    let want: BTreeSet<&T> = want.iter().collect();
    match how {
        MatchBehavior::Exact => have == want,
        MatchBehavior::Subset => have.is_subset(&want),
        MatchBehavior::Superset => have.is_superset(&want),
        MatchBehavior::Any => !have.is_disjoint(&want),
    }
}

/// Selectors of a `SelectorMatch`.
pub fn selector_match(
    field: &'static str,
    m: &types::SelectorMatch,
) -> Result<(SelectorSet, MatchBehavior), ConvertError> {
    let set = m
        .selectors
        .iter()
        .map(|s| selector_from_proto(field, s))
        .collect::<Result<SelectorSet, _>>()?;
    Ok((set, match_behavior(field, m.r#match)?))
}

/// The entry filter (`ListEntries` and `CountEntries` have the same fields; `CountEntries`'
/// is converted into `ListEntries`' by the service).
pub fn entry_filter(f: Option<&list_entries_request::Filter>) -> Result<EntryFilter, ConvertError> {
    let Some(f) = f else {
        return Ok(EntryFilter::default());
    };
    Ok(EntryFilter {
        by_spiffe_id: f
            .by_spiffe_id
            .as_ref()
            .map(|id| spiffe_id("filter.by_spiffe_id", Some(id)))
            .transpose()?,
        by_parent_id: f
            .by_parent_id
            .as_ref()
            .map(|id| spiffe_id("filter.by_parent_id", Some(id)))
            .transpose()?,
        by_selectors: f
            .by_selectors
            .as_ref()
            .map(|m| selector_match("filter.by_selectors", m))
            .transpose()?,
        by_federates_with: f
            .by_federates_with
            .as_ref()
            .map(|m| {
                let tds = m
                    .trust_domains
                    .iter()
                    .map(|td| trust_domain("filter.by_federates_with", td))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, ConvertError>((tds, match_behavior("filter.by_federates_with", m.r#match)?))
            })
            .transpose()?,
        by_hint: f.by_hint.clone(),
        by_downstream: f.by_downstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_matching_follows_spire() {
        let e = [1, 2];
        assert!(set_matches(&e, &[2, 1], MatchBehavior::Exact));
        assert!(!set_matches(&e, &[1], MatchBehavior::Exact));
        assert!(set_matches(&e, &[1, 2, 3], MatchBehavior::Subset));
        assert!(set_matches(&e, &[1], MatchBehavior::Superset));
        assert!(set_matches(&e, &[2, 9], MatchBehavior::Any));
        assert!(!set_matches(&e, &[9], MatchBehavior::Any));
    }

    #[test]
    fn filters_convert_and_reject_unknown_match() {
        assert_eq!(entry_filter(None).unwrap(), EntryFilter::default());
        let f = list_entries_request::Filter {
            by_selectors: Some(types::SelectorMatch {
                selectors: vec![types::Selector {
                    r#type: "unix".into(),
                    value: "uid:0".into(),
                }],
                r#match: 2,
            }),
            by_hint: Some("h".into()),
            ..Default::default()
        };
        let got = entry_filter(Some(&f)).unwrap();
        assert_eq!(got.by_selectors.unwrap().1, MatchBehavior::Superset);
        assert_eq!(got.by_hint.as_deref(), Some("h"));
        let bad = list_entries_request::Filter {
            by_selectors: Some(types::SelectorMatch {
                selectors: vec![],
                r#match: 9,
            }),
            ..Default::default()
        };
        assert!(matches!(
            entry_filter(Some(&bad)),
            Err(ConvertError::UnknownEnum { value: 9, .. })
        ));
    }
}
