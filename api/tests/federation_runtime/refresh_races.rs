//! The refresher under races it cannot see coming: a relationship updated, or deleted and
//! created again, while its fetch runs, and a fetch task that panics. Fetches are scripted:
//! each one waits for the test's answer, so every interleaving here is chosen, not hoped for.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tessera_actors::random::SeededRandom;
use tessera_actors::server::federation::{EndpointProfile, FederationCommand, Relationship};
use tessera_identity::{Bundle, TrustDomain};
use tessera_server::daemon::ShutdownSignal;
use tessera_server::federation::fetch::{BundleSource, FetchError};
use tessera_server::federation::metrics::FederationMetrics;
use tessera_server::federation::refresher::{Refresher, RefresherSettings};
use tessera_server::federation::{FederationRuntime, RefreshError};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::refresh::Running;
use crate::support::{clock, Domain};

/// How the test ends one scripted fetch.
enum Answer {
    Bundle(Bundle),
    Fail(&'static str),
    Panic,
}

/// One fetch, waiting for its answer.
struct Call {
    relationship: Relationship,
    answer: oneshot::Sender<Answer>,
}

impl Call {
    fn answer(self, answer: Answer) {
        assert!(
            self.answer.send(answer).is_ok(),
            "the fetch for {} was dropped before its answer",
            self.relationship.bundle_endpoint_url
        );
    }
}

/// A bundle source that hands every fetch to the test.
#[derive(Debug, Clone)]
struct Scripted {
    calls: mpsc::UnboundedSender<Call>,
}

impl BundleSource for Scripted {
    async fn fetch_bundle(
        &self,
        relationship: &Relationship,
        _held: &BTreeMap<TrustDomain, Arc<Bundle>>,
    ) -> Result<Bundle, FetchError> {
        let (answer, answered) = oneshot::channel();
        let _ = self.calls.send(Call {
            relationship: relationship.clone(),
            answer,
        });
        match answered.await {
            Ok(Answer::Bundle(bundle)) => Ok(bundle),
            Ok(Answer::Fail(reason)) => Err(FetchError::Unreachable {
                url: relationship.bundle_endpoint_url.clone(),
                reason: reason.to_owned(),
            }),
            Ok(Answer::Panic) => panic!("scripted fetch panic"),
            Err(_) => Err(FetchError::Unreachable {
                url: relationship.bundle_endpoint_url.clone(),
                reason: "the test dropped this fetch".to_owned(),
            }),
        }
    }
}

struct Calls(mpsc::UnboundedReceiver<Call>);

impl Calls {
    /// The next fetch the refresher starts (bounded wait).
    async fn next(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(10), self.0.recv())
            .await
            .expect("the refresher started no fetch within 10 s")
            .expect("the refresher is gone")
    }
}

fn start(b: &Domain, settings: RefresherSettings) -> (Running, Calls) {
    let (calls, rx) = mpsc::unbounded_channel();
    let (tx, requests) = mpsc::channel(16);
    let runtime = FederationRuntime::new(tx);
    let registry = prometheus::Registry::new();
    let refresher = Refresher {
        federation: b.server.federation.clone(),
        fetcher: Scripted { calls },
        runtime: runtime.clone(),
        metrics: Some(FederationMetrics::register(&registry).unwrap()),
        clock: clock(),
        random: Arc::new(SeededRandom::new(5)),
        settings,
    };
    let (trigger, shutdown) = ShutdownSignal::new();
    let task = tokio::spawn(refresher.run(requests, shutdown.wait()));
    let running = Running {
        runtime,
        registry,
        trigger,
        task,
    };
    (running, Calls(rx))
}

fn web(td: &TrustDomain, url: &str) -> Relationship {
    Relationship {
        trust_domain: td.clone(),
        bundle_endpoint_url: url.to_owned(),
        profile: EndpointProfile::HttpsWeb,
    }
}

async fn create(b: &Domain, relationship: &Relationship) {
    b.server
        .federation
        .command(FederationCommand::CreateRelationship {
            relationship: relationship.clone(),
            bundle: None,
        })
        .await
        .unwrap();
}

fn refresh_now(running: &Running, td: &TrustDomain) -> JoinHandle<Result<(), RefreshError>> {
    let (runtime, td) = (running.runtime.clone(), td.clone());
    tokio::spawn(async move { runtime.refresh_now(&td).await })
}

async fn answered(waiter: JoinHandle<Result<(), RefreshError>>) -> Result<(), RefreshError> {
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("refresh_now was not answered within 10 s")
        .unwrap()
}

/// The relationship is fetched once, then a `refresh_now` is launched: its waiter rides on
/// the returned fetch (it cannot be answered before that fetch ends).
async fn good_then_requested(
    b: &Domain,
    running: &Running,
    calls: &mut Calls,
    relationship: &Relationship,
    first: Bundle,
) -> (Call, JoinHandle<Result<(), RefreshError>>) {
    create(b, relationship).await;
    let call = calls.next().await;
    assert_eq!(call.relationship, *relationship);
    call.answer(Answer::Bundle(first));
    let waiter = refresh_now(running, &relationship.trust_domain);
    let call = calls.next().await;
    assert_eq!(call.relationship, *relationship);
    (call, waiter)
}

#[tokio::test]
async fn a_bundle_refused_because_the_relationship_changed_is_not_a_failure() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    let (running, mut calls) = start(&b, RefresherSettings::default());
    let old = web(&a.td, "https://old.example/bundle");
    let new = web(&a.td, "https://new.example/bundle");

    let (from_old, waiter) = good_then_requested(&b, &running, &mut calls, &old, a.bundle()).await;
    // Updated while the old endpoint's fetch runs; then the old endpoint answers with other
    // authorities. The refresher does not look at the view: the aggregate refuses the bundle.
    b.server
        .federation
        .command(FederationCommand::UpdateRelationship {
            relationship: new.clone(),
            bundle: None,
        })
        .await
        .unwrap();
    from_old.answer(Answer::Bundle(b.bundle_as(&a.td)));

    // Not a failure: the new relationship is fetched at once, the waiter rides along.
    let from_new = calls.next().await;
    assert_eq!(from_new.relationship, new);
    assert!(!waiter.is_finished(), "answered before the new fetch ended");
    let status = running.runtime.status(&a.td).unwrap();
    assert_eq!(status.consecutive_failures, 0, "{status:?}");
    assert_eq!(status.last_error, None);
    assert_eq!(running.count("a.test", "refused"), 0);
    let held = b.server.federation.view().bundles[&a.td].clone();
    assert_eq!(
        held.x509_authorities(),
        a.bundle().x509_authorities(),
        "the old endpoint's bundle is not stored"
    );

    from_new.answer(Answer::Bundle(a.bundle()));
    answered(waiter).await.unwrap();
    assert_eq!(running.count("a.test", "ok"), 1);
    assert_eq!(running.count("a.test", "unchanged"), 1);
    assert_eq!(
        running.runtime.status(&a.td).unwrap().consecutive_failures,
        0
    );

    running.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_panicked_fetch_fails_its_waiters_and_is_retried_after_a_backoff() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    let settings = RefresherSettings {
        backoff_start: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        ..RefresherSettings::default()
    };
    let (running, mut calls) = start(&b, settings);
    let relationship = web(&a.td, "https://a.example/bundle");

    let (call, waiter) =
        good_then_requested(&b, &running, &mut calls, &relationship, a.bundle()).await;
    call.answer(Answer::Panic);
    let e = answered(waiter).await.unwrap_err();
    assert!(
        matches!(&e, RefreshError::Failed { trust_domain, reason }
            if *trust_domain == a.td && reason.contains("panicked")),
        "{e}"
    );
    let status = running.runtime.status(&a.td).unwrap();
    assert_eq!(status.consecutive_failures, 1, "{status:?}");
    assert!(status
        .last_error
        .as_deref()
        .is_some_and(|r| r.contains("panicked")));
    assert!(status.next_refresh_at.is_some());
    assert_eq!(running.count("a.test", "panicked"), 1);

    // Still tracked: retried by itself after the backoff, with no request.
    let retry = calls.next().await;
    assert_eq!(retry.relationship, relationship);
    retry.answer(Answer::Bundle(a.bundle()));
    // And served on request again.
    let waiter = refresh_now(&running, &a.td);
    calls.next().await.answer(Answer::Bundle(a.bundle()));
    answered(waiter).await.unwrap();
    let status = running.runtime.status(&a.td).unwrap();
    assert_eq!(status.consecutive_failures, 0, "{status:?}");
    assert_eq!(status.last_error, None);

    running.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_end_of_a_fetch_for_a_deleted_relationship_is_ignored() {
    let clock = clock();
    let a = Domain::start("a.test", clock.clone()).await;
    let b = Domain::start("b.test", clock.clone()).await;
    // One fetch at a time: the re-created relationship's fetch starts only after the stale
    // one has ended and been handled, so what that handling did is visible.
    let settings = RefresherSettings {
        max_concurrent_fetches: 1,
        ..RefresherSettings::default()
    };
    let (running, mut calls) = start(&b, settings);
    let old = web(&a.td, "https://old.example/bundle");
    let new = web(&a.td, "https://new.example/bundle");

    create(&b, &old).await;
    let stale = calls.next().await;
    assert_eq!(stale.relationship, old);
    b.server
        .federation
        .command(FederationCommand::DeleteRelationship {
            trust_domain: a.td.clone(),
        })
        .await
        .unwrap();
    // Answered only once the refresher has folded the deletion.
    assert!(matches!(
        answered(refresh_now(&running, &a.td)).await,
        Err(RefreshError::NotFound(td)) if td == a.td
    ));
    create(&b, &new).await;
    stale.answer(Answer::Fail("the old endpoint is down"));

    let fresh = calls.next().await;
    assert_eq!(fresh.relationship, new);
    assert_eq!(
        running.runtime.status(&a.td),
        None,
        "the stale failure was recorded against the new relationship"
    );
    assert_eq!(running.count("a.test", "unreachable"), 0);

    fresh.answer(Answer::Bundle(a.bundle()));
    let waiter = refresh_now(&running, &a.td);
    let call = calls.next().await;
    assert_eq!(call.relationship, new);
    call.answer(Answer::Bundle(a.bundle()));
    answered(waiter).await.unwrap();
    let status = running.runtime.status(&a.td).unwrap();
    assert_eq!((status.consecutive_failures, status.last_error), (0, None));
    assert_eq!(running.count("a.test", "unreachable"), 0);

    running.stop().await;
    a.stop().await;
    b.stop().await;
}
