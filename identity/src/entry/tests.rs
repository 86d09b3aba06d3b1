//! Tests of [`RegistrationEntry::validate`](super::RegistrationEntry::validate) and friends.

use super::*;
use crate::Selector;

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn entry() -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new("entry-1").unwrap(),
        spiffe_id: id("spiffe://example.org/web"),
        parent_id: id("spiffe://example.org/spire/agent/join_token/abc"),
        selectors: [Selector::parse("unix:uid:1000").unwrap()]
            .into_iter()
            .collect(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 1_700_000_000,
        revision: 0,
    }
}

fn check(e: &RegistrationEntry) -> Result<(), EntryError> {
    e.validate(&td(), &EntryLimits::default())
}

#[test]
fn a_plain_entry_is_valid() {
    assert_eq!(check(&entry()), Ok(()));
    let full = RegistrationEntry {
        x509_svid_ttl: Some(3600),
        jwt_svid_ttl: Some(300),
        federates_with: vec![TrustDomain::new("other.org").unwrap()],
        dns_names: vec!["web.example.org".into(), "*.web.example.org".into()],
        admin: true,
        downstream: true,
        hint: "external".into(),
        expires_at: Some(1_800_000_000),
        ..entry()
    };
    assert_eq!(check(&full), Ok(()));
}

#[test]
fn ids_must_be_in_the_server_trust_domain() {
    let e = RegistrationEntry {
        spiffe_id: id("spiffe://other.org/web"),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::SpiffeIdNotInTrustDomain { .. })
    ));
    let e = RegistrationEntry {
        parent_id: id("spiffe://other.org/agent"),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::ParentIdNotInTrustDomain { .. })
    ));
    let msg = check(&RegistrationEntry {
        spiffe_id: id("spiffe://other.org/web"),
        ..entry()
    })
    .unwrap_err()
    .to_string();
    assert!(msg.contains("spiffe://example.org/..."), "{msg}");
}

#[test]
fn ids_need_a_path() {
    let e = RegistrationEntry {
        spiffe_id: id("spiffe://example.org"),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::SpiffeIdHasNoPath { .. })
    ));
    let e = RegistrationEntry {
        parent_id: id("spiffe://example.org"),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::ParentIdHasNoPath { .. })
    ));
}

#[test]
fn the_spire_namespace_is_reserved() {
    for reserved in [
        "spiffe://example.org/spire",
        "spiffe://example.org/spire/agent/x",
        "spiffe://example.org/spire/server",
    ] {
        let e = RegistrationEntry {
            spiffe_id: id(reserved),
            ..entry()
        };
        assert!(
            matches!(check(&e), Err(EntryError::SpiffeIdReserved { .. })),
            "{reserved}"
        );
    }
    // Only the whole first segment is reserved.
    for ok in [
        "spiffe://example.org/spire-web",
        "spiffe://example.org/web/spire",
        "spiffe://example.org/Spire",
    ] {
        let e = RegistrationEntry {
            spiffe_id: id(ok),
            ..entry()
        };
        assert_eq!(check(&e), Ok(()), "{ok}");
    }
}

#[test]
fn node_aliases_are_parented_to_the_server() {
    let alias = RegistrationEntry {
        spiffe_id: id("spiffe://example.org/cluster/prod"),
        parent_id: id("spiffe://example.org/spire/server"),
        ..entry()
    };
    assert_eq!(check(&alias), Ok(()));
    assert!(alias.is_node_alias());
    assert!(!entry().is_node_alias());
}

#[test]
fn selectors_are_required_and_bounded() {
    let e = RegistrationEntry {
        selectors: SelectorSet::new(),
        ..entry()
    };
    assert_eq!(check(&e), Err(EntryError::NoSelectors));
    let many: SelectorSet = (0..65)
        .map(|i| Selector::new("unix", &format!("uid:{i}")).unwrap())
        .collect();
    let e = RegistrationEntry {
        selectors: many,
        ..entry()
    };
    assert_eq!(
        check(&e),
        Err(EntryError::TooManySelectors { count: 65, max: 64 })
    );
}

#[test]
fn ttls_are_bounded() {
    let limits = EntryLimits::default();
    let e = RegistrationEntry {
        x509_svid_ttl: Some(0),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::X509SvidTtlOutOfRange { ttl: 0, .. })
    ));
    let e = RegistrationEntry {
        x509_svid_ttl: Some(limits.max_x509_svid_ttl_secs + 1),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::X509SvidTtlOutOfRange { .. })
    ));
    let e = RegistrationEntry {
        x509_svid_ttl: Some(limits.max_x509_svid_ttl_secs),
        ..entry()
    };
    assert_eq!(check(&e), Ok(()));
    let e = RegistrationEntry {
        jwt_svid_ttl: Some(limits.max_jwt_svid_ttl_secs + 1),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::JwtSvidTtlOutOfRange { .. })
    ));
    let e = RegistrationEntry {
        jwt_svid_ttl: Some(limits.min_svid_ttl_secs),
        ..entry()
    };
    assert_eq!(check(&e), Ok(()));
}

#[test]
fn federates_with_is_bounded_and_unique() {
    let other = TrustDomain::new("other.org").unwrap();
    let e = RegistrationEntry {
        federates_with: vec![other.clone(), other.clone()],
        ..entry()
    };
    assert_eq!(
        check(&e),
        Err(EntryError::DuplicateFederatesWith {
            trust_domain: other
        })
    );
    let many = (0..33)
        .map(|i| TrustDomain::new(&format!("td{i}.org")).unwrap())
        .collect();
    let e = RegistrationEntry {
        federates_with: many,
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::TooManyFederatesWith { count: 33, .. })
    ));
}

#[test]
fn dns_names_are_checked() {
    let e = RegistrationEntry {
        dns_names: vec!["bad_name.example".into()],
        ..entry()
    };
    assert!(matches!(check(&e), Err(EntryError::InvalidDnsName { .. })));
    let e = RegistrationEntry {
        dns_names: vec!["a.example".into(), "A.example".into()],
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::DuplicateDnsName { .. })
    ));
    let e = RegistrationEntry {
        dns_names: (0..33).map(|i| format!("h{i}.example")).collect(),
        ..entry()
    };
    assert!(matches!(
        check(&e),
        Err(EntryError::TooManyDnsNames { count: 33, .. })
    ));
}

#[test]
fn hint_is_bounded() {
    let e = RegistrationEntry {
        hint: "h".repeat(1025),
        ..entry()
    };
    assert_eq!(
        check(&e),
        Err(EntryError::HintTooLong {
            len: 1025,
            max: 1024
        })
    );
    let e = RegistrationEntry {
        hint: "h".repeat(1024),
        ..entry()
    };
    assert_eq!(check(&e), Ok(()));
}

#[test]
fn expiry() {
    let e = RegistrationEntry {
        expires_at: Some(100),
        ..entry()
    };
    assert!(!e.is_expired_at(99));
    assert!(e.is_expired_at(100));
    assert!(!entry().is_expired_at(i64::MAX));
}

#[test]
fn serde_round_trip() {
    let e = RegistrationEntry {
        federates_with: vec![TrustDomain::new("other.org").unwrap()],
        dns_names: vec!["web.example.org".into()],
        x509_svid_ttl: Some(3600),
        ..entry()
    };
    let json = serde_json::to_string(&e).unwrap();
    assert!(
        json.contains("\"spiffe_id\":\"spiffe://example.org/web\""),
        "{json}"
    );
    assert!(json.contains("\"selectors\":[\"unix:uid:1000\"]"), "{json}");
    assert_eq!(serde_json::from_str::<RegistrationEntry>(&json).unwrap(), e);
    let tampered = json.replace("spiffe://example.org/web", "spiffe://example.org/web/");
    assert!(serde_json::from_str::<RegistrationEntry>(&tampered).is_err());
}

#[test]
fn bincode_round_trip() {
    // The event log stores payloads with bincode's standard config.
    let e = RegistrationEntry {
        federates_with: vec![TrustDomain::new("other.org").unwrap()],
        dns_names: vec!["web.example.org".into()],
        jwt_svid_ttl: Some(300),
        expires_at: Some(-1),
        ..entry()
    };
    let bytes = bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap();
    let (back, _): (RegistrationEntry, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
    assert_eq!(back, e);
}
