//! The refresher carries A's bundle into B's federation aggregate over https_spiffe, picks up
//! A's rotations, and keeps the last good bundle through every kind of failure.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::federation::{
    EndpointProfile, FederationCommand, FederationView, Relationship,
};
use tessera_identity::{Bundle, SpiffeId, TrustDomain};
use tessera_server::daemon::{ShutdownSignal, ShutdownTrigger};
use tessera_server::federation::fetch::FetchLimits;
use tessera_server::federation::metrics::FederationMetrics;
use tessera_server::federation::refresher::{Refresher, RefresherSettings};
use tessera_server::federation::{FederationRuntime, RefreshError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::support::{clock, fetcher, Canned, Domain, Endpoint, WebFiles, CA_TTL, HINT, START};

/// Waits (bounded) until the view satisfies `ok`.
async fn until(
    view: &mut watch::Receiver<Arc<FederationView>>,
    what: &str,
    ok: impl Fn(&FederationView) -> bool,
) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if ok(&view.borrow_and_update()) {
                return;
            }
            view.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "timed out waiting for {what}: {:?}",
        view.borrow()
    );
}

pub(crate) struct Running {
    pub(crate) runtime: Arc<FederationRuntime>,
    pub(crate) registry: prometheus::Registry,
    pub(crate) trigger: ShutdownTrigger,
    pub(crate) task: JoinHandle<()>,
}

fn start_refresher(
    b: &Domain,
    clock: Arc<tessera_eventlog::ManualClock>,
    roots: rustls::RootCertStore,
) -> Running {
    let (tx, rx) = mpsc::channel(16);
    let runtime = FederationRuntime::new(tx);
    let registry = prometheus::Registry::new();
    let refresher = Refresher {
        federation: b.server.federation.clone(),
        fetcher: fetcher(clock.clone(), roots, FetchLimits::default()),
        runtime: runtime.clone(),
        metrics: Some(FederationMetrics::register(&registry).unwrap()),
        clock,
        random: Arc::new(SeededRandom::new(3)),
        settings: RefresherSettings::default(),
    };
    let (trigger, shutdown) = ShutdownSignal::new();
    let task = tokio::spawn(refresher.run(rx, shutdown.wait()));
    Running {
        runtime,
        registry,
        trigger,
        task,
    }
}

impl Running {
    pub(crate) fn count(&self, td: &str, outcome: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "federation_refresh_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                let l = m.get_label();
                l.iter()
                    .any(|p| p.name() == "trust_domain" && p.value() == td)
                    && l.iter()
                        .any(|p| p.name() == "outcome" && p.value() == outcome)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub(crate) async fn stop(self) {
        self.trigger.fire();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
        // Stopped: a refresh request is refused, not left hanging.
        let td = TrustDomain::new("a.test").unwrap();
        assert!(matches!(
            self.runtime.refresh_now(&td).await,
            Err(RefreshError::NotRunning)
        ));
    }
}

fn same_authorities(a: &Bundle, b: &Bundle) -> bool {
    // JWKS carries no expiry of JWT keys: compare ids and keys.
    let jwt = |b: &Bundle| {
        b.jwt_authorities()
            .iter()
            .map(|k| (k.key_id.clone(), k.public_key.clone()))
            .collect::<Vec<_>>()
    };
    a.x509_authorities() == b.x509_authorities() && jwt(a) == jwt(b)
}

#[tokio::test]
async fn refresher_follows_the_endpoint_and_keeps_the_last_good_bundle() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    let ep = Endpoint::spiffe(&a, clock.clone()).await;
    let files = WebFiles::new(&["127.0.0.1"]);
    let running = start_refresher(&b, clock.clone(), files.roots.clone());
    let mut view = b.server.federation.subscribe();

    // Bootstrapped with A's bundle (no hint); the first fetch stores the served one.
    let relationship = a.spiffe_relationship(&ep.url());
    b.server
        .federation
        .command(FederationCommand::CreateRelationship {
            relationship: relationship.clone(),
            bundle: Some(a.bundle()),
        })
        .await
        .unwrap();
    until(&mut view, "the first fetch", |v| {
        v.bundles.get(&a.td).and_then(|b| b.refresh_hint()) == Some(HINT.as_secs())
    })
    .await;
    let status = running.runtime.status(&a.td).unwrap();
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(status.last_success_at, Some(START as i64));
    assert_eq!(
        status.next_refresh_at,
        Some(START as i64 + HINT.as_secs() as i64)
    );
    assert_eq!(running.count("a.test", "ok"), 1);

    // A prepares its next CA: the bundle grows; a refresh now carries it to B.
    let before = a.bundle();
    clock.advance(CA_TTL / 2 + Duration::from_secs(1));
    a.server.authority.tick().await.unwrap();
    let rotated = a.bundle();
    assert!(rotated.x509_authorities().len() > before.x509_authorities().len());
    assert!(rotated.sequence_number() > before.sequence_number());
    running.runtime.refresh_now(&a.td).await.unwrap();
    let held = b.server.federation.view().bundles[&a.td].clone();
    assert!(same_authorities(&held, &rotated));
    assert_eq!(held.sequence_number(), rotated.sequence_number());
    // Nothing new: recorded as unchanged.
    running.runtime.refresh_now(&a.td).await.unwrap();
    assert_eq!(running.count("a.test", "unchanged"), 1);

    // Failures of every kind: the last good bundle stays, the status says why.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let garbage = Canned::start(&files, Canned::ok(b"{not json", true)).await;
    let foreign = {
        // B's CA served as A's bundle.
        let mut c = Bundle::new(a.td.clone());
        c.add_x509_authority(b.bundle().x509_authorities()[0].clone());
        Canned::start(&files, Canned::ok(c.to_jwks().unwrap().as_bytes(), true)).await
    };
    let big = Canned::start(&files, Canned::ok(&vec![b' '; 3 * 1024 * 1024], true)).await;
    let impostor = Relationship {
        profile: EndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::new("spiffe://a.test/impostor").unwrap(),
        },
        ..relationship.clone()
    };
    let web = |url: String| Relationship {
        bundle_endpoint_url: url,
        profile: EndpointProfile::HttpsWeb,
        ..relationship.clone()
    };
    let cases = [
        (
            a.spiffe_relationship(&format!("https://{closed}/")),
            "unreachable",
            "unreachable",
        ),
        (
            impostor,
            "wrong_endpoint_id",
            "expected spiffe://a.test/impostor",
        ),
        (web(garbage.url()), "bad_jwks", "no valid SPIFFE bundle"),
        (
            web(foreign.url()),
            "wrong_trust_domain",
            "names trust domain b.test, not a.test",
        ),
        (web(big.url()), "too_large", "max_bundle_bytes"),
    ];
    for (failures, (bad, kind, says)) in cases.into_iter().enumerate() {
        b.server
            .federation
            .command(FederationCommand::UpdateRelationship {
                relationship: bad,
                bundle: None,
            })
            .await
            .unwrap();
        let e = match running.runtime.refresh_now(&a.td).await {
            Err(e) => e,
            Ok(()) => panic!(
                "{kind}: refresh succeeded: {:?}",
                b.server.federation.view().relationships
            ),
        };
        assert!(matches!(e, RefreshError::Failed { .. }), "{kind}: {e}");
        assert!(e.to_string().contains(says), "{kind}: {e}");
        assert!(running.count("a.test", kind) >= 1, "{kind} counted");
        let kept = b.server.federation.view().bundles[&a.td].clone();
        assert_eq!(kept, held, "{kind}: the last good bundle stays");
        let status = running.runtime.status(&a.td).unwrap();
        assert!(status.consecutive_failures >= 1, "{kind}: {status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|r| r.contains(says)),
            "{kind}: {status:?}"
        );
        assert_eq!(
            status.last_success_at,
            Some(START as i64 + (CA_TTL / 2).as_secs() as i64 + 1)
        );
        let _ = failures;
    }

    // Back to the real endpoint: good again.
    b.server
        .federation
        .command(FederationCommand::UpdateRelationship {
            relationship: relationship.clone(),
            bundle: None,
        })
        .await
        .unwrap();
    running.runtime.refresh_now(&a.td).await.unwrap();
    assert_eq!(
        running.runtime.status(&a.td).unwrap().consecutive_failures,
        0
    );

    // Unknown and deleted relationships.
    let nobody = TrustDomain::new("nobody.test").unwrap();
    assert!(matches!(
        running.runtime.refresh_now(&nobody).await,
        Err(RefreshError::NotFound(td)) if td == nobody
    ));
    b.server
        .federation
        .command(FederationCommand::DeleteRelationship {
            trust_domain: a.td.clone(),
        })
        .await
        .unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match running.runtime.refresh_now(&a.td).await {
                Err(RefreshError::NotFound(_)) => return,
                _ => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "the deleted relationship is forgotten");
    assert_eq!(running.runtime.status(&a.td), None);
    assert_eq!(running.count("a.test", "ok"), 0, "its series are removed");

    running.stop().await;
    ep.stop().await;
    a.stop().await;
    b.stop().await;
}
