//! Given/when/then tests of the federation aggregate's decisions and fold.

use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use tessera_identity::{Bundle, SpiffeId, TrustDomain, X509Authority};
use tokio::sync::watch;

use super::*;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::events::ServerEvent;

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("test trust domain")
}

fn ctx() -> Context {
    Context {
        now: 1_000,
        random: [0; 16],
    }
}

/// A bundle of `name` with one freshly made self-signed CA (`seq` as its sequence number).
fn bundle(name: &str, seq: u64) -> Bundle {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec![])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    let mut b = Bundle::new(td(name));
    b.add_x509_authority(X509Authority::from_der(cert.der().to_vec()).expect("der"));
    b.set_sequence_number(seq);
    b
}

fn spiffe(td_name: &str) -> Relationship {
    Relationship {
        trust_domain: td(td_name),
        bundle_endpoint_url: format!("https://{td_name}:8443"),
        profile: EndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::new(&format!("spiffe://{td_name}/spire/server"))
                .expect("id"),
        },
    }
}

/// Given `events` folded into an aggregate of trust domain `platform.example`.
fn given(events: &[ServerEvent]) -> Federation {
    let mut f = Federation::default();
    f.configure(
        FederationSettings {
            own: Some(td("platform.example")),
            max_relationships: 2,
            max_bundles: 2,
        },
        None,
    );
    for e in events {
        f.apply(e);
    }
    f
}

fn events(f: &Federation, c: FederationCommand) -> Result<Vec<ServerEvent>, FederationError> {
    f.decide(c, &ctx()).map(|d| d.events)
}

#[test]
fn create_with_a_bootstrap_bundle_records_the_relationship_then_the_bundle() {
    let f = given(&[]);
    let b = bundle("partner.example", 1);
    let out = events(
        &f,
        FederationCommand::CreateRelationship {
            relationship: spiffe("partner.example"),
            bundle: Some(b.clone()),
        },
    )
    .unwrap();
    assert_eq!(
        out,
        vec![
            ServerEvent::FederationRelationshipCreated(spiffe("partner.example")),
            ServerEvent::FederatedBundleSet(b),
        ]
    );
}

#[test]
fn create_twice_update_unknown_and_own_trust_domain_are_refused() {
    let f = given(&[ServerEvent::FederationRelationshipCreated(spiffe(
        "partner.example",
    ))]);
    let again = FederationCommand::CreateRelationship {
        relationship: spiffe("partner.example"),
        bundle: None,
    };
    assert!(matches!(
        events(&f, again),
        Err(FederationError::RelationshipExists { .. })
    ));
    let unknown = FederationCommand::UpdateRelationship {
        relationship: spiffe("other.example"),
        bundle: None,
    };
    assert!(matches!(
        events(&f, unknown),
        Err(FederationError::RelationshipNotFound { .. })
    ));
    let own = FederationCommand::CreateRelationship {
        relationship: spiffe("platform.example"),
        bundle: None,
    };
    let err = events(&f, own).unwrap_err();
    assert!(matches!(err, FederationError::OwnTrustDomain { .. }));
    assert!(
        err.to_string().contains("does not federate with itself"),
        "{err}"
    );
    let own_bundle = FederationCommand::PutBundle {
        bundle: bundle("platform.example", 1),
        mode: PutMode::Set,
    };
    assert!(matches!(
        events(&f, own_bundle),
        Err(FederationError::OwnTrustDomain { .. })
    ));
}

#[test]
fn bad_urls_are_refused_with_the_reason() {
    let f = given(&[]);
    for (url, reason) in [
        ("http://partner.example", "https://"),
        ("https://", "no host"),
        ("https://user@partner.example/", "user information"),
        ("https://partner.example/a b", "whitespace"),
    ] {
        let mut r = spiffe("partner.example");
        r.bundle_endpoint_url = url.into();
        let err = events(
            &f,
            FederationCommand::CreateRelationship {
                relationship: r,
                bundle: None,
            },
        )
        .unwrap_err();
        assert!(matches!(err, FederationError::BadUrl { .. }), "{url}");
        assert!(err.to_string().contains(reason), "{url}: {err}");
    }
    let mut long = spiffe("partner.example");
    long.bundle_endpoint_url = format!("https://h/{}", "a".repeat(MAX_URL_LEN));
    assert!(long.check().is_err());
}

#[test]
fn a_bootstrap_bundle_of_another_trust_domain_is_refused() {
    let f = given(&[]);
    let err = events(
        &f,
        FederationCommand::CreateRelationship {
            relationship: spiffe("partner.example"),
            bundle: Some(bundle("intruder.example", 1)),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, FederationError::BundleMismatch { .. }),
        "{err}"
    );
}

#[test]
fn a_refresh_with_the_same_authorities_records_nothing_and_new_ones_replace_them() {
    let b1 = bundle("partner.example", 1);
    let f = given(&[
        ServerEvent::FederationRelationshipCreated(spiffe("partner.example")),
        ServerEvent::FederatedBundleSet(b1.clone()),
    ]);
    let same = f
        .decide(
            FederationCommand::Refreshed {
                bundle: b1.clone(),
                from: spiffe("partner.example"),
            },
            &ctx(),
        )
        .unwrap();
    assert!(same.events.is_empty());
    assert_eq!(same.reply, FederationReply::Unchanged);
    // A new sequence number alone records nothing: an endpoint cannot grow the log with it.
    let mut bumped = b1;
    bumped.set_sequence_number(99);
    bumped.set_refresh_hint(Some(1));
    let refreshed = |bundle| FederationCommand::Refreshed {
        bundle,
        from: spiffe("partner.example"),
    };
    assert!(events(&f, refreshed(bumped)).unwrap().is_empty());
    // The same authorities in another order are the same bundle.
    let mut two = bundle("partner.example", 1);
    let other = bundle("other.example", 1).x509_authorities()[0].clone();
    two.add_x509_authority(other.clone());
    let f2 = given(&[
        ServerEvent::FederationRelationshipCreated(spiffe("partner.example")),
        ServerEvent::FederatedBundleSet(two.clone()),
    ]);
    let mut reordered = Bundle::new(td("partner.example"));
    reordered.add_x509_authority(other);
    reordered.add_x509_authority(two.x509_authorities()[0].clone());
    assert!(events(&f2, refreshed(reordered)).unwrap().is_empty());
    let b2 = bundle("partner.example", 2);
    assert_eq!(
        events(&f, refreshed(b2.clone())).unwrap(),
        vec![ServerEvent::FederatedBundleSet(b2)]
    );
    // Fetched for a relationship since updated (another endpoint): not stored.
    let mut old = spiffe("partner.example");
    old.bundle_endpoint_url = "https://old.partner.example".into();
    let stale = FederationCommand::Refreshed {
        bundle: bundle("partner.example", 3),
        from: old,
    };
    assert!(matches!(
        events(&f, stale),
        Err(FederationError::RelationshipChanged { .. })
    ));
}

#[test]
fn a_refresh_after_the_relationship_was_deleted_is_refused_and_the_bundle_stays() {
    let b1 = bundle("partner.example", 1);
    let f = given(&[
        ServerEvent::FederationRelationshipCreated(spiffe("partner.example")),
        ServerEvent::FederatedBundleSet(b1.clone()),
        ServerEvent::FederationRelationshipDeleted {
            trust_domain: td("partner.example"),
        },
    ]);
    assert_eq!(f.bundle(&td("partner.example")), Some(&b1));
    assert!(matches!(
        events(
            &f,
            FederationCommand::Refreshed {
                bundle: bundle("partner.example", 2),
                from: spiffe("partner.example"),
            }
        ),
        Err(FederationError::RelationshipNotFound { .. })
    ));
}

#[test]
fn put_modes_follow_create_update_set() {
    let f = given(&[ServerEvent::FederatedBundleSet(bundle("a.example", 1))]);
    let put = |name: &str, mode| FederationCommand::PutBundle {
        bundle: bundle(name, 3),
        mode,
    };
    assert!(matches!(
        events(&f, put("a.example", PutMode::Create)),
        Err(FederationError::BundleExists { .. })
    ));
    assert!(matches!(
        events(&f, put("b.example", PutMode::Update)),
        Err(FederationError::BundleNotFound { .. })
    ));
    assert_eq!(
        events(&f, put("a.example", PutMode::Update)).unwrap().len(),
        1
    );
    assert_eq!(events(&f, put("b.example", PutMode::Set)).unwrap().len(), 1);
    let empty = FederationCommand::PutBundle {
        bundle: Bundle::new(td("c.example")),
        mode: PutMode::Set,
    };
    assert!(matches!(
        events(&f, empty),
        Err(FederationError::EmptyBundle { .. })
    ));
}

#[test]
fn limits_bound_relationships_and_bundles() {
    let f = given(&[
        ServerEvent::FederationRelationshipCreated(spiffe("a.example")),
        ServerEvent::FederationRelationshipCreated(spiffe("b.example")),
        ServerEvent::FederatedBundleSet(bundle("a.example", 1)),
        ServerEvent::FederatedBundleSet(bundle("b.example", 1)),
    ]);
    assert!(matches!(
        events(
            &f,
            FederationCommand::CreateRelationship {
                relationship: spiffe("c.example"),
                bundle: None
            }
        ),
        Err(FederationError::TooManyRelationships { limit: 2 })
    ));
    assert!(matches!(
        events(
            &f,
            FederationCommand::PutBundle {
                bundle: bundle("c.example", 1),
                mode: PutMode::Set
            }
        ),
        Err(FederationError::TooManyBundles { limit: 2 })
    ));
    // Replacing a held bundle is not a new one.
    assert!(events(
        &f,
        FederationCommand::PutBundle {
            bundle: bundle("a.example", 2),
            mode: PutMode::Set
        }
    )
    .is_ok());
}

#[test]
fn deletes_need_something_to_delete() {
    let f = given(&[]);
    assert!(matches!(
        events(
            &f,
            FederationCommand::DeleteRelationship {
                trust_domain: td("a.example")
            }
        ),
        Err(FederationError::RelationshipNotFound { .. })
    ));
    assert!(matches!(
        events(
            &f,
            FederationCommand::DeleteBundle {
                trust_domain: td("a.example")
            }
        ),
        Err(FederationError::BundleNotFound { .. })
    ));
}

#[test]
fn the_view_is_published_on_configure_and_after_each_federation_event_only() {
    let (tx, mut rx) = watch::channel(Arc::new(FederationView::default()));
    let mut f = Federation::default();
    f.configure(FederationSettings::default(), Some(tx));
    assert!(rx.has_changed().unwrap());
    rx.borrow_and_update();
    f.apply(&ServerEvent::EntryDeleted {
        id: tessera_identity::EntryId::new("x").expect("id"),
    });
    assert!(!rx.has_changed().unwrap());
    let b = bundle("partner.example", 1);
    f.apply(&ServerEvent::FederatedBundleSet(b.clone()));
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update()
            .bundles
            .get(&td("partner.example"))
            .map(|b| b.as_ref()),
        Some(&b)
    );
    f.apply(&ServerEvent::FederatedBundleDeleted {
        trust_domain: td("partner.example"),
    });
    assert!(rx.borrow_and_update().bundles.is_empty());
}

#[test]
fn events_survive_the_log_encoding() {
    let b = bundle("partner.example", 7);
    for e in [
        ServerEvent::FederationRelationshipCreated(spiffe("partner.example")),
        ServerEvent::FederationRelationshipUpdated(Relationship {
            profile: EndpointProfile::HttpsWeb,
            ..spiffe("partner.example")
        }),
        ServerEvent::FederatedBundleSet(b),
        ServerEvent::FederatedBundleDeleted {
            trust_domain: td("partner.example"),
        },
    ] {
        let bytes = tessera_eventlog::typed::encode_state(&e).unwrap();
        let back: ServerEvent = tessera_eventlog::typed::decode_state(0, &bytes).unwrap();
        assert_eq!(back, e);
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<ServerEvent>(&json).unwrap(), e);
    }
}
