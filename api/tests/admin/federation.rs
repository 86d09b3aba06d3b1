//! Federation over the admin API: the TrustDomain service (relationships, masks, paging,
//! refresh and its status metadata) and the federated half of the Bundle service (create,
//! update with masks, set, list, count, and the three delete modes against entries that
//! federate with a bundle), batch partial failures and limits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tessera_actors::random::SeededRandom;
use tessera_actors::server::federation::FederationSettings;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{Clock, LocalLog, ManualClock};
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
use tessera_proto::spire::api::server::trustdomain::v1::{
    BatchCreateFederationRelationshipRequest, BatchDeleteFederationRelationshipRequest,
    BatchUpdateFederationRelationshipRequest, GetFederationRelationshipRequest,
    ListFederationRelationshipsRequest, RefreshBundleRequest,
};
use tessera_proto::spire::api::types;
use tessera_proto::spire::api::types::federation_relationship::BundleEndpointProfile;
use tessera_server::admin::{self, AdminContext, REFRESH_STATUS_METADATA};
use tessera_server::config::ApiLimits;
use tessera_server::daemon::{ShutdownSignal, ShutdownTrigger};
use tessera_server::federation::{FederationRuntime, RefreshError, RefreshRequest, RefreshStatus};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::{entry, Fixture, TD};

/// A self-signed CA certificate, DER.
fn ca_der() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().to_vec()
}

fn bundle(td: &str) -> types::Bundle {
    types::Bundle {
        trust_domain: td.into(),
        x509_authorities: vec![types::X509Certificate {
            asn1: ca_der(),
            tainted: false,
        }],
        refresh_hint: 300,
        sequence_number: 1,
        ..types::Bundle::default()
    }
}

fn web(td: &str) -> types::FederationRelationship {
    types::FederationRelationship {
        trust_domain: td.into(),
        bundle_endpoint_url: format!("https://{td}/bundle"),
        bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {})),
        trust_domain_bundle: None,
    }
}

fn spiffe(td: &str) -> types::FederationRelationship {
    types::FederationRelationship {
        bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsSpiffe(
            types::HttpsspiffeProfile {
                endpoint_spiffe_id: format!("spiffe://{td}/spire/server"),
            },
        )),
        trust_domain_bundle: Some(bundle(td)),
        ..web(td)
    }
}

fn codes(statuses: impl IntoIterator<Item = Option<types::Status>>) -> Vec<Code> {
    statuses
        .into_iter()
        .map(|s| Code::from(s.unwrap().code))
        .collect()
}

/// An admin API over a server with chosen federation bounds and refresher.
struct Local {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    server: Server,
    channel: Channel,
    runtime: Arc<FederationRuntime>,
    trigger: ShutdownTrigger,
    task: JoinHandle<Result<(), admin::ServeError>>,
}

impl Local {
    async fn start(
        federation: FederationSettings,
        limits: ApiLimits,
        runtime: Arc<FederationRuntime>,
    ) -> Local {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("private/api.sock");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::at_unix_secs(1_700_000_000));
        let log = Arc::new(LocalLog::in_memory(clock.clone()));
        let mut settings = ServerSettings::new(TrustDomain::new(TD).unwrap());
        settings.federation = federation;
        let server = Server::start(settings, log, clock, Arc::new(SeededRandom::new(1)))
            .await
            .unwrap();
        let (listener, guard) = tessera_server::uds::bind(&socket).await.unwrap();
        let ctx = AdminContext::with_federation(server.clone(), limits, runtime.clone());
        let (health, health_service) = tonic_health::server::health_reporter();
        let (trigger, shutdown) = ShutdownSignal::new();
        let task = tokio::spawn(async move {
            let _guard = guard;
            admin::serve(listener, ctx, health, health_service, shutdown.wait()).await
        });
        let channel = tessera_server::cli::common::connect("test", &socket)
            .await
            .unwrap();
        Local {
            _dir: dir,
            socket,
            server,
            channel,
            runtime,
            trigger,
            task,
        }
    }

    async fn stop(self) {
        self.trigger.fire();
        drop(self.channel);
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(matches!(outcome, Ok(Ok(Ok(())))), "{outcome:?}");
        assert!(!self.socket.exists());
        self.server.stop().await;
    }
}

#[tokio::test]
async fn relationships_batch_item_by_item_with_masks_and_paging() {
    let f = Fixture::start().await;
    let mut td = TrustDomainClient::new(f.channel.clone());
    let mut bad_url = web("bad.org");
    bad_url.bundle_endpoint_url = "http://bad.org/bundle".into();
    let mut mismatched = spiffe("mismatch.org");
    mismatched.trust_domain_bundle = Some(bundle("someone-else.org"));
    let results = td
        .batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
            federation_relationships: vec![
                spiffe("partner.org"),
                web(TD),
                bad_url,
                web("partner.org"),
                mismatched,
                web("other.org"),
            ],
            output_mask: Some(types::FederationRelationshipMask {
                bundle_endpoint_url: true,
                bundle_endpoint_profile: false,
                trust_domain_bundle: true,
            }),
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
            Code::AlreadyExists,
            Code::InvalidArgument,
            Code::Ok
        ]
    );
    let msg = |i: usize| results[i].status.as_ref().unwrap().message.clone();
    assert!(msg(1).contains("own trust domain"), "{}", msg(1));
    assert!(
        msg(2).starts_with("bundle_endpoint_url \"http://bad.org/bundle\": "),
        "{}",
        msg(2)
    );
    assert!(msg(3).contains("already exists"), "{}", msg(3));
    assert!(msg(4).contains("someone-else.org"), "{}", msg(4));
    // The output mask: the profile left out, the bootstrap bundle in.
    let created = results[0].federation_relationship.as_ref().unwrap();
    assert_eq!(created.bundle_endpoint_url, "https://partner.org/bundle");
    assert!(created.bundle_endpoint_profile.is_none());
    assert_eq!(
        created.trust_domain_bundle.as_ref().unwrap().trust_domain,
        "partner.org"
    );
    assert!(results[1].federation_relationship.is_none());

    // Get: everything by default, with the federated bundle held; a mask trims it.
    let got = td
        .get_federation_relationship(GetFederationRelationshipRequest {
            trust_domain: "partner.org".into(),
            output_mask: None,
        })
        .await
        .unwrap();
    assert!(
        got.metadata().get(REFRESH_STATUS_METADATA).is_none(),
        "no refresh tried yet"
    );
    let got = got.into_inner();
    assert_eq!(got, spiffe_with_bundle_of(&got));
    assert!(matches!(
        got.bundle_endpoint_profile,
        Some(BundleEndpointProfile::HttpsSpiffe(ref p)) if p.endpoint_spiffe_id == "spiffe://partner.org/spire/server"
    ));
    let trimmed = td
        .get_federation_relationship(GetFederationRelationshipRequest {
            trust_domain: "spiffe://partner.org".into(),
            output_mask: Some(types::FederationRelationshipMask::default()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        trimmed,
        types::FederationRelationship {
            trust_domain: "partner.org".into(),
            ..Default::default()
        }
    );
    for (asked, code) in [
        ("nobody.org", Code::NotFound),
        ("", Code::InvalidArgument),
        ("Bad.Org", Code::InvalidArgument),
    ] {
        let e = td
            .get_federation_relationship(GetFederationRelationshipRequest {
                trust_domain: asked.into(),
                output_mask: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{asked}: {e:?}");
    }

    // Paging: one a page, in trust domain order.
    let mut seen = vec![];
    let mut token = String::new();
    for _ in 0..5 {
        let page = td
            .list_federation_relationships(ListFederationRelationshipsRequest {
                output_mask: None,
                page_size: 1,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.federation_relationships.len() <= 1);
        seen.extend(
            page.federation_relationships
                .iter()
                .map(|r| r.trust_domain.clone()),
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, ["other.org", "partner.org"]);
    let e = td
        .list_federation_relationships(ListFederationRelationshipsRequest {
            output_mask: None,
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Update: the input mask picks the fields; an unknown trust domain is NotFound per item.
    let mut change = web("partner.org");
    change.bundle_endpoint_url = "https://partner.org:8443/v2".into();
    let updated = td
        .batch_update_federation_relationship(BatchUpdateFederationRelationshipRequest {
            federation_relationships: vec![change.clone(), web("nobody.org")],
            input_mask: Some(types::FederationRelationshipMask {
                bundle_endpoint_url: true,
                ..Default::default()
            }),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(updated.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::NotFound]
    );
    let now = updated[0].federation_relationship.as_ref().unwrap();
    assert_eq!(now.bundle_endpoint_url, "https://partner.org:8443/v2");
    assert!(
        matches!(
            now.bundle_endpoint_profile,
            Some(BundleEndpointProfile::HttpsSpiffe(_))
        ),
        "the profile is not in the input mask: kept"
    );
    // No mask: every field, so the profile switches to https_web, and a new bundle is stored.
    let mut whole = web("partner.org");
    let replacement = bundle("partner.org");
    whole.trust_domain_bundle = Some(replacement.clone());
    let updated = td
        .batch_update_federation_relationship(BatchUpdateFederationRelationshipRequest {
            federation_relationships: vec![whole],
            input_mask: None,
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(codes([updated[0].status.clone()]), vec![Code::Ok]);
    let view = f.server.federation.view();
    let partner = TrustDomain::new("partner.org").unwrap();
    assert_eq!(
        view.relationships[&partner].profile.name(),
        "https_web",
        "stored through the aggregate"
    );
    assert_eq!(
        view.bundles[&partner].x509_authorities()[0].der(),
        replacement.x509_authorities[0].asn1.as_slice()
    );

    // Delete: per item; the federated bundle outlives its relationship, as in SPIRE.
    let deleted = td
        .batch_delete_federation_relationship(BatchDeleteFederationRelationshipRequest {
            trust_domains: vec!["partner.org".into(), "nobody.org".into(), String::new()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(
        codes(deleted.iter().map(|r| r.status.clone())),
        vec![Code::Ok, Code::NotFound, Code::InvalidArgument]
    );
    assert_eq!(deleted[0].trust_domain, "partner.org");
    let view = f.server.federation.view();
    assert!(!view.relationships.contains_key(&partner));
    assert!(view.bundles.contains_key(&partner));

    // No refresher in this fixture: RefreshBundle says so; without a relationship, NotFound.
    let e = td
        .refresh_bundle(RefreshBundleRequest {
            trust_domain: "other.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("not running"), "{e:?}");
    let e = td
        .refresh_bundle(RefreshBundleRequest {
            trust_domain: "partner.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    f.stop().await;
}

/// The relationship as created by `spiffe(...)`, with the bundle the server returned (the
/// server answers with the bytes it was given).
fn spiffe_with_bundle_of(got: &types::FederationRelationship) -> types::FederationRelationship {
    types::FederationRelationship {
        trust_domain_bundle: got.trust_domain_bundle.clone(),
        ..spiffe(&got.trust_domain)
    }
}

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

#[tokio::test]
async fn refresh_goes_to_the_refresher_and_status_rides_in_metadata() {
    let (tx, mut rx) = mpsc::channel::<RefreshRequest>(4);
    let runtime = FederationRuntime::new(tx);
    let l = Local::start(
        FederationSettings::default(),
        ApiLimits::default(),
        runtime.clone(),
    )
    .await;
    // A stand-in refresher: ok.org refreshes, anything else fails.
    let refresher = tokio::spawn(async move {
        let mut asked = vec![];
        while let Some((td, reply)) = rx.recv().await {
            asked.push(td.as_str().to_owned());
            let outcome = if td.as_str() == "ok.org" {
                Ok(())
            } else {
                Err(RefreshError::Failed {
                    trust_domain: td,
                    reason: "connection refused".into(),
                })
            };
            let _ = reply.send(outcome);
        }
        asked
    });
    let mut td = TrustDomainClient::new(l.channel.clone());
    td.batch_create_federation_relationship(BatchCreateFederationRelationshipRequest {
        federation_relationships: vec![web("ok.org"), web("down.org")],
        output_mask: None,
    })
    .await
    .unwrap();
    td.refresh_bundle(RefreshBundleRequest {
        trust_domain: "ok.org".into(),
    })
    .await
    .unwrap();
    let e = td
        .refresh_bundle(RefreshBundleRequest {
            trust_domain: "down.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("connection refused"), "{e:?}");
    let e = td
        .refresh_bundle(RefreshBundleRequest {
            trust_domain: "unknown.org".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "not passed to the refresher");

    let down = TrustDomain::new("down.org").unwrap();
    l.runtime.set_status(
        &down,
        RefreshStatus {
            last_attempt_at: Some(1_700_000_100),
            last_success_at: Some(1_700_000_000),
            last_error: Some("connection refused \u{2014} again".into()),
            consecutive_failures: 2,
            next_refresh_at: Some(1_700_000_400),
        },
    );
    let got = td
        .get_federation_relationship(GetFederationRelationshipRequest {
            trust_domain: "down.org".into(),
            output_mask: None,
        })
        .await
        .unwrap();
    let header = got
        .metadata()
        .get(REFRESH_STATUS_METADATA)
        .expect("refresh status metadata")
        .to_str()
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(header).unwrap();
    assert_eq!(status["last_attempt_at"], 1_700_000_100);
    assert_eq!(status["last_success_at"], 1_700_000_000);
    assert_eq!(status["next_refresh_at"], 1_700_000_400);
    assert_eq!(status["consecutive_failures"], 2);
    assert_eq!(status["last_error"], "connection refused \u{2014} again");

    // Deleting the relationship forgets its status.
    td.batch_delete_federation_relationship(BatchDeleteFederationRelationshipRequest {
        trust_domains: vec!["down.org".into()],
    })
    .await
    .unwrap();
    assert_eq!(l.runtime.status(&down), None);
    l.stop().await;
    drop(runtime);
    let asked = tokio::time::timeout(Duration::from_secs(10), refresher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(asked, ["ok.org", "down.org"]);
}
