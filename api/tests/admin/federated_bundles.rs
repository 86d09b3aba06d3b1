//! The federated half of the Bundle service over the admin API: create, update with masks,
//! set, list, count, the three delete modes against entries that federate with a bundle,
//! and the limits of federation (fixtures in `federation.rs`).

use tessera_actors::server::federation::FederationSettings;
use tessera_identity::TrustDomain;
use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::{
    batch_delete_federated_bundle_request::Mode, BatchCreateFederatedBundleRequest,
    BatchDeleteFederatedBundleRequest, BatchSetFederatedBundleRequest,
    BatchUpdateFederatedBundleRequest, CountBundlesRequest, GetFederatedBundleRequest,
    ListFederatedBundlesRequest,
};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{BatchCreateEntryRequest, GetEntryRequest};
use tessera_proto::spire::api::server::trustdomain::v1::trust_domain_client::TrustDomainClient;
use tessera_proto::spire::api::server::trustdomain::v1::BatchCreateFederationRelationshipRequest;
use tessera_proto::spire::api::types;
use tessera_server::config::ApiLimits;
use tessera_server::federation::FederationRuntime;
use tonic::Code;

use crate::federation::{bundle, codes, web, Local};
use crate::support::{entry, Fixture, TD};

#[tokio::test]
async fn federated_bundles_create_update_set_list_count() {
    let f = Fixture::start().await;
    let mut b = BundleClient::new(f.channel.clone());
    let partner = bundle("partner.org");
    let mut empty = bundle("empty.org");
    empty.x509_authorities.clear();
    let mut garbled = bundle("garbled.org");
    garbled.x509_authorities[0].asn1 = b"not a certificate".to_vec();
    let results = b
        .batch_create_federated_bundle(BatchCreateFederatedBundleRequest {
            bundle: vec![
                partner.clone(),
                bundle(TD),
                empty,
                garbled,
                bundle("partner.org"),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(results.iter().map(|r| r.status.clone())),
        vec![
            Code::Ok,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::AlreadyExists
        ]
    );
    assert_eq!(results[0].bundle.as_ref(), Some(&partner));
    let msg = |i: usize| results[i].status.as_ref().unwrap().message.clone();
    assert!(msg(1).contains("own trust domain"), "{}", msg(1));
    assert!(msg(2).contains("no X.509 or JWT authority"), "{}", msg(2));
    assert!(msg(3).starts_with("x509_authorities"), "{}", msg(3));

    let got = b
        .get_federated_bundle(GetFederatedBundleRequest {
            trust_domain: "partner.org".into(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, partner);
    for (asked, code) in [
        (TD, Code::InvalidArgument),
        ("nobody.org", Code::NotFound),
        ("", Code::InvalidArgument),
    ] {
        let e = b
            .get_federated_bundle(GetFederatedBundleRequest {
                trust_domain: asked.into(),
                output_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{asked}: {e:?}");
    }

    // Update with a mask: only the refresh hint changes; unknown ones are NotFound.
    let mut hint_only = bundle("partner.org");
    hint_only.refresh_hint = 60;
    let updated = b
        .batch_update_federated_bundle(BatchUpdateFederatedBundleRequest {
            bundle: vec![hint_only, bundle("nobody.org")],
            input_mask: Some(types::BundleMask {
                refresh_hint: true,
                ..Default::default()
            }),
            output_mask: Some(types::BundleMask {
                refresh_hint: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(updated.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::NotFound]
    );
    let out = updated[0].bundle.as_ref().unwrap();
    assert_eq!(out.refresh_hint, 60);
    assert!(
        out.x509_authorities.is_empty(),
        "the output mask leaves them out"
    );
    let stored = &f.server.federation.view().bundles[&TrustDomain::new("partner.org").unwrap()];
    assert_eq!(stored.refresh_hint(), Some(60));
    assert_eq!(
        stored.x509_authorities()[0].der(),
        partner.x509_authorities[0].asn1.as_slice(),
        "not in the input mask: kept"
    );

    // Set: creates or replaces.
    let replaced = bundle("partner.org");
    let set = b
        .batch_set_federated_bundle(BatchSetFederatedBundleRequest {
            bundle: vec![replaced.clone(), bundle("third.org"), bundle(TD)],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(set.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::Ok, Code::InvalidArgument]
    );
    assert_eq!(set[0].bundle.as_ref(), Some(&replaced));

    // List in pages; count has the own bundle too.
    let first = b
        .list_federated_bundles(ListFederatedBundlesRequest {
            output_mask: None,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.bundles.len(), 1);
    assert_eq!(first.bundles[0].trust_domain, "partner.org");
    assert_eq!(first.next_page_token, "partner.org");
    let second = b
        .list_federated_bundles(ListFederatedBundlesRequest {
            output_mask: None,
            page_size: 5,
            page_token: first.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    let tds: Vec<&str> = second
        .bundles
        .iter()
        .map(|b| b.trust_domain.as_str())
        .collect();
    assert_eq!(tds, ["third.org"]);
    assert!(second.next_page_token.is_empty());
    let count = b
        .count_bundles(CountBundlesRequest {})
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 3, "own + partner.org + third.org");
    f.stop().await;
}

#[tokio::test]
async fn delete_modes_restrict_dissociate_delete() {
    let f = Fixture::start().await;
    let mut b = BundleClient::new(f.channel.clone());
    let mut entries = EntryClient::new(f.channel.clone());
    b.batch_create_federated_bundle(BatchCreateFederatedBundleRequest {
        bundle: vec![bundle("a.org"), bundle("b.org"), bundle("c.org")],
        output_mask: None,
    })
    .await
    .unwrap();
    let mut both = entry("/both", &["unix:uid:1"]);
    both.federates_with = vec!["a.org".into(), "b.org".into()];
    let mut only_b = entry("/only-b", &["unix:uid:2"]);
    only_b.federates_with = vec!["b.org".into()];
    let created = entries
        .batch_create_entry(BatchCreateEntryRequest {
            entries: vec![both, only_b],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<String> = created
        .iter()
        .map(|r| r.entry.as_ref().unwrap().id.clone())
        .collect();
    let delete = |tds: &[&str], mode: Mode| BatchDeleteFederatedBundleRequest {
        trust_domains: tds.iter().map(|s| s.to_string()).collect(),
        mode: mode as i32,
    };

    // RESTRICT (the default): refused while an entry federates with it; c.org has none.
    let results = b
        .batch_delete_federated_bundle(delete(
            &["a.org", "c.org", "nobody.org", TD],
            Mode::Restrict,
        ))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(results.iter().map(|r| r.status.clone())),
        vec![
            Code::FailedPrecondition,
            Code::Ok,
            Code::NotFound,
            Code::InvalidArgument
        ]
    );
    let refusal = &results[0].status.as_ref().unwrap().message;
    assert!(
        refusal.contains("1 registration entries federate with a.org")
            && refusal.contains("DISSOCIATE"),
        "{refusal}"
    );
    let view = f.server.federation.view();
    assert!(view
        .bundles
        .contains_key(&TrustDomain::new("a.org").unwrap()));
    assert!(!view
        .bundles
        .contains_key(&TrustDomain::new("c.org").unwrap()));

    // DISSOCIATE: a.org leaves the entry's federates_with, the entry stays.
    let results = b
        .batch_delete_federated_bundle(delete(&["a.org"], Mode::Dissociate))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(codes([results[0].status.clone()]), vec![Code::Ok]);
    let kept = entries
        .get_entry(GetEntryRequest {
            id: ids[0].clone(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.federates_with, ["b.org"]);
    assert!(!f
        .server
        .federation
        .view()
        .bundles
        .contains_key(&TrustDomain::new("a.org").unwrap()));

    // DELETE: both entries federating with b.org go, then the bundle.
    let results = b
        .batch_delete_federated_bundle(delete(&["b.org"], Mode::Delete))
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(codes([results[0].status.clone()]), vec![Code::Ok]);
    for id in &ids {
        let e = entries
            .get_entry(GetEntryRequest {
                id: id.clone(),
                output_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
    }
    assert!(f.server.federation.view().bundles.is_empty());

    // A mode this server does not know: the whole request is refused.
    let e = b
        .batch_delete_federated_bundle(BatchDeleteFederatedBundleRequest {
            trust_domains: vec!["x.org".into()],
            mode: 7,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("mode"), "{e:?}");
    f.stop().await;
}

#[tokio::test]
async fn limits_answer_resource_exhausted() {
    let limits = ApiLimits {
        max_batch_size: 3,
        ..ApiLimits::default()
    };
    let settings = FederationSettings {
        own: None,
        max_relationships: 1,
        max_bundles: 2,
    };
    let l = Local::start(settings, limits, FederationRuntime::detached()).await;
    let mut td = TrustDomainClient::new(l.channel.clone());
    let mut b = BundleClient::new(l.channel.clone());
    let results = td
        .batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
            federation_relationships: vec![web("one.org"), web("two.org")],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(results.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::ResourceExhausted]
    );
    let msg = &results[1].status.as_ref().unwrap().message;
    assert!(msg.contains("limits.federation.max_relationships"), "{msg}");
    let results = b
        .batch_set_federated_bundle(BatchSetFederatedBundleRequest {
            bundle: vec![bundle("one.org"), bundle("two.org"), bundle("three.org")],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(results.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::Ok, Code::ResourceExhausted]
    );
    // Over the batch limit: the whole call is refused, naming the config key.
    let e = b
        .batch_delete_federated_bundle(BatchDeleteFederatedBundleRequest {
            trust_domains: vec!["a.org".into(); 4],
            mode: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limits.max_batch_size"), "{e:?}");
    let e = td
        .batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
            federation_relationships: vec![web("x.org"); 4],
            output_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    l.stop().await;
}
