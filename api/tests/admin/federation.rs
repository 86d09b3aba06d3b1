//! Federation over the admin API: the TrustDomain service (relationships, masks, paging,
//! refresh and its status metadata), batch partial failures; the fixtures the federated
//! bundle tests (`federated_bundles.rs`) share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tessera_actors::random::SeededRandom;
use tessera_actors::server::federation::FederationSettings;
use tessera_actors::server::supervisor::{Server, ServerSettings};
use tessera_eventlog::{Clock, LocalLog, ManualClock};
use tessera_identity::TrustDomain;
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

use crate::support::{Fixture, TD};

/// A self-signed CA certificate, DER.
pub(crate) fn ca_der() -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().der().to_vec()
}

pub(crate) fn bundle(td: &str) -> types::Bundle {
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

pub(crate) fn web(td: &str) -> types::FederationRelationship {
    types::FederationRelationship {
        trust_domain: td.into(),
        bundle_endpoint_url: format!("https://{td}/bundle"),
        bundle_endpoint_profile: Some(BundleEndpointProfile::HttpsWeb(types::HttpsWebProfile {})),
        trust_domain_bundle: None,
    }
}

pub(crate) fn spiffe(td: &str) -> types::FederationRelationship {
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

pub(crate) fn codes(statuses: impl IntoIterator<Item = Option<types::Status>>) -> Vec<Code> {
    statuses
        .into_iter()
        .map(|s| Code::from(s.unwrap().code))
        .collect()
}

/// An admin API over a server with chosen federation bounds and refresher.
pub(crate) struct Local {
    _dir: tempfile::TempDir,
    pub(crate) socket: PathBuf,
    pub(crate) server: Server,
    pub(crate) channel: Channel,
    pub(crate) runtime: Arc<FederationRuntime>,
    pub(crate) trigger: ShutdownTrigger,
    pub(crate) task: JoinHandle<Result<(), admin::ServeError>>,
}

impl Local {
    pub(crate) async fn start(
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

    pub(crate) async fn stop(self) {
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
