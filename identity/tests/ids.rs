//! Property tests of the textual value types: valid values print back exactly as parsed,
//! and no input makes a parser panic.

use proptest::prelude::*;
use tessera_identity::{EntryId, Selector, SelectorSet, SpiffeId, TrustDomain, MAX_SPIFFE_ID_LEN};

fn trust_domain_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{1,40}",
        // Realistic DNS-like names too.
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,4}",
    ]
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,16}".prop_filter("dot segments are invalid", |s| s != "." && s != "..")
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..8)
        .prop_map(|segs| segs.iter().map(|s| format!("/{s}")).collect())
}

fn valid_id() -> impl Strategy<Value = String> {
    (trust_domain_name(), path()).prop_map(|(td, path)| format!("spiffe://{td}{path}"))
}

/// Strings that look like SPIFFE IDs but may break any rule.
fn id_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(spiffe|SPIFFE|http)?(://)?[a-zA-Z0-9./%?#@:_ -]{0,60}",
        (valid_id(), "[/.%?#@: A-Z]{0,3}", 0usize..40).prop_map(|(id, junk, at)| {
            let at = at.min(id.len());
            format!("{}{junk}{}", &id[..at], &id[at..])
        }),
    ]
}

fn selector_type() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,20}"
}

fn selector_value() -> impl Strategy<Value = String> {
    // Any printable text, ':' included.
    "[^\\p{Cc}]{1,40}"
}

proptest! {
    #[test]
    fn valid_ids_round_trip(s in valid_id()) {
        let id = SpiffeId::new(&s).unwrap();
        prop_assert_eq!(id.to_string(), s.clone());
        prop_assert_eq!(SpiffeId::new(&id.to_string()).unwrap(), id.clone());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id.clone());
        let theirs: spiffe::SpiffeId = id.clone().into();
        prop_assert_eq!(SpiffeId::try_from(theirs).unwrap(), id.clone());
        prop_assert_eq!(
            SpiffeId::from_path(id.trust_domain(), id.path()).unwrap(),
            id
        );
    }

    #[test]
    fn id_parsing_never_panics_and_accepts_only_canonical_ids(s in id_like()) {
        if let Ok(id) = SpiffeId::new(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert!(s.len() <= MAX_SPIFFE_ID_LEN);
            prop_assert!(s.starts_with("spiffe://"));
            let rest = &s["spiffe://".len()..];
            prop_assert!(!rest.contains(['?', '#', '%', '@', ':', '\\', ' ']), "{rest:?}");
            prop_assert!(TrustDomain::new(id.trust_domain().as_str()).is_ok());
        }
    }

    #[test]
    fn trust_domains_round_trip(name in trust_domain_name()) {
        let td = TrustDomain::new(&name).unwrap();
        prop_assert_eq!(td.to_string(), name.clone());
        prop_assert_eq!(td.id().to_string(), format!("spiffe://{name}"));
        prop_assert_eq!(TrustDomain::from_name_or_id(&td.id().to_string()).unwrap(), td);
    }

    #[test]
    fn trust_domain_parsing_never_panics(s in id_like()) {
        if let Ok(td) = TrustDomain::new(&s) {
            prop_assert_eq!(td.as_str(), s.as_str());
        }
        let _ = TrustDomain::from_name_or_id(&s);
    }

    #[test]
    fn selectors_round_trip(t in selector_type(), v in selector_value()) {
        let sel = Selector::new(&t, &v).unwrap();
        let text = sel.to_string();
        prop_assert_eq!(&text, &format!("{t}:{v}"));
        let back = Selector::parse(&text).unwrap();
        prop_assert_eq!(back.selector_type(), t.as_str());
        prop_assert_eq!(back.value(), v.as_str());
        prop_assert_eq!(serde_json::from_str::<Selector>(&serde_json::to_string(&sel).unwrap()).unwrap(), sel);
    }

    #[test]
    fn selector_parsing_never_panics(s in any::<String>()) {
        if let Ok(sel) = Selector::parse(&s) {
            prop_assert_eq!(sel.to_string(), s);
        }
    }

    #[test]
    fn subset_matches_a_naive_model(
        a in prop::collection::vec((0u8..4, 0u8..4), 0..6),
        b in prop::collection::vec((0u8..4, 0u8..4), 0..6),
    ) {
        let to_set = |v: &[(u8, u8)]| -> SelectorSet {
            v.iter().map(|(t, val)| Selector::new(&format!("t{t}"), &format!("v{val}")).unwrap()).collect()
        };
        let (sa, sb) = (to_set(&a), to_set(&b));
        let naive = sa.iter().all(|s| sb.contains(s));
        prop_assert_eq!(sa.is_subset_of(&sb), naive);
        prop_assert!(sa.is_subset_of(&sa));
        let union: SelectorSet = sa.iter().chain(sb.iter()).cloned().collect();
        prop_assert!(sa.is_subset_of(&union) && sb.is_subset_of(&union));
        prop_assert!(sa.as_slice().windows(2).all(|w| w[0] < w[1]), "sorted and deduplicated");
    }

    #[test]
    fn entry_ids_never_panic_and_round_trip(s in any::<String>(), bytes in any::<[u8; 16]>()) {
        if let Ok(id) = EntryId::new(&s) {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
        let generated = EntryId::from_random_bytes(bytes);
        prop_assert_eq!(EntryId::new(generated.as_str()).unwrap(), generated);
    }
}
