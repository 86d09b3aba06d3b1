//! Wiring tests of the authority actor with a real in-memory log and a manual clock: persist
//! before reply, rotation end to end, restart by replay, overload.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tessera_eventlog::{LocalLog, ManualClock, TypedLog};

use super::*;
use crate::random::SeededRandom;
use crate::server::authority::signer::{AgentSvidRequest, JwtSvidRequest, X509SvidRequest};
use crate::server::authority::test_support::{clock_at, csr, id, td, verify, verify_jwt, T0};
use crate::server::authority::AuthorityError;
use crate::server::keys::{KeyType, MemoryKeyManager};

/// CA and JWT key TTL of these tests: prepare at ~3000 s, activate at ~5000 s.
const TTL: u64 = 6000;

struct Harness {
    log: TypedLog<ServerEvent>,
    clock: ManualClock,
    keys: Arc<MemoryKeyManager>,
}

impl Harness {
    fn new() -> Self {
        let clock = clock_at(T0);
        let log = LocalLog::in_memory(Arc::new(clock.clone()));
        Self {
            log: TypedLog::new(Arc::new(log)),
            clock,
            keys: Arc::new(MemoryKeyManager::new()),
        }
    }

    fn settings(&self) -> AuthoritySettings {
        let mut s = AuthoritySettings::new(td());
        s.ca.ttl = Duration::from_secs(TTL);
        s.jwt_key_ttl = Duration::from_secs(TTL);
        // SVIDs outlive the rotation steps, to check them across the overlap.
        s.signer.x509_svid_ttl = Duration::from_secs(TTL);
        s.signer.jwt_svid_ttl = Duration::from_secs(TTL);
        s.tick_interval = None;
        s.call_timeout = Duration::from_secs(20);
        s
    }

    async fn start_with(
        &self,
        settings: AuthoritySettings,
        keys: Arc<MemoryKeyManager>,
    ) -> (AuthorityHandle, JoinHandle<()>) {
        let args = AuthorityArgs::new(
            self.log.clone(),
            Arc::new(self.clock.clone()),
            Arc::new(SeededRandom::new(7)),
            keys,
            settings,
            None,
        );
        AuthorityHandle::spawn(None, args).await.unwrap()
    }

    async fn start(&self) -> (AuthorityHandle, JoinHandle<()>) {
        self.start_with(self.settings(), self.keys.clone()).await
    }

    async fn logged(&self) -> Vec<ServerEvent> {
        let mut events = Vec::new();
        self.log.replay(0, |_, e| events.push(e)).await.unwrap();
        events
    }

    fn at(&self, secs: i64) {
        self.clock
            .set(std::time::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs()));
    }
}

async fn stop(handle: AuthorityHandle, join: JoinHandle<()>) {
    handle.actor().stop(None);
    join.await.unwrap();
}

async fn ask<R: Send + 'static>(
    actor: &ActorRef<AuthorityMsg>,
    msg: impl FnOnce(RpcReplyPort<R>) -> AuthorityMsg,
) -> R {
    let (tx, rx) = tokio::sync::oneshot::channel();
    actor.send_message(msg(RpcReplyPort::from(tx))).unwrap();
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .unwrap()
        .unwrap()
}

async fn svid(handle: &AuthorityHandle, path: &str) -> crate::server::authority::IssuedX509Svid {
    let request = X509SvidRequest {
        csr_der: csr(),
        spiffe_id: id(&format!("spiffe://example.org/{path}")),
        dns_names: vec![],
        ttl: None,
    };
    let mut results = ask(handle.actor(), |port| {
        AuthorityMsg::SignX509Batch(vec![request], port)
    })
    .await
    .unwrap();
    results.pop().unwrap().unwrap()
}

async fn jwt(handle: &AuthorityHandle) -> String {
    handle
        .mint_jwt_svid(JwtSvidRequest {
            spiffe_id: id("spiffe://example.org/web"),
            audience: vec!["db".into()],
            ttl: None,
        })
        .await
        .unwrap()
        .token
}

fn kinds(events: &[ServerEvent]) -> Vec<&'static str> {
    use tessera_eventlog::Event as _;
    events.iter().map(|e| e.kind()).collect()
}

fn ca_id(event: &ServerEvent) -> Option<&str> {
    match event {
        ServerEvent::CaPrepared(r) => Some(&r.authority_id),
        ServerEvent::CaActivated { authority_id } | ServerEvent::CaRetired { authority_id } => {
            Some(authority_id)
        }
        _ => None,
    }
}

#[tokio::test]
async fn first_tick_persists_a_ca_and_jwt_key_before_replying() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    assert!(handle.bundle().is_none());
    let report = handle.tick().await.unwrap();
    assert_eq!(
        kinds(&report.events),
        [
            "CaPrepared",
            "CaActivated",
            "JwtKeyPrepared",
            "JwtKeyActivated"
        ]
    );
    // Told only what is durable: the log holds exactly what the reply lists.
    assert_eq!(h.logged().await, report.events);

    let bundle = handle.bundle().unwrap();
    assert_eq!(bundle.x509_authorities().len(), 1);
    assert_eq!(bundle.jwt_authorities().len(), 1);
    assert_eq!(bundle.sequence_number(), 2);
    assert_eq!(handle.get_bundle().await.unwrap(), Some(bundle.clone()));

    let issued = svid(&handle, "web").await;
    verify(&issued.cert_chain, &bundle, T0 + 1).unwrap();
    let agent = ask(handle.actor(), |port| {
        AuthorityMsg::SignAgentSvid(
            AgentSvidRequest {
                csr_der: csr(),
                agent_id: id("spiffe://example.org/spire/agent/join_token/t"),
                ttl: None,
            },
            port,
        )
    })
    .await
    .unwrap();
    verify(&agent.cert_chain, &bundle, T0 + 1).unwrap();
    verify_jwt(&jwt(&handle).await, &bundle).unwrap();

    // Nothing more to do until half-life.
    assert_eq!(handle.tick().await.unwrap().events, vec![]);
    stop(handle, join).await;
}

#[tokio::test]
async fn an_rsa_2048_authority_issues_svids_and_jwts_that_verify() {
    let h = Harness::new();
    let mut settings = h.settings();
    settings.ca.key_type = KeyType::Rsa2048;
    settings.jwt_key_type = KeyType::Rsa2048;
    let (handle, join) = h.start_with(settings, h.keys.clone()).await;
    handle.tick().await.unwrap();
    let bundle = handle.bundle().unwrap();
    let root = &bundle.x509_authorities()[0];
    let (_, cert) = x509_parser::parse_x509_certificate(root.der()).unwrap();
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.11",
        "sha256WithRSAEncryption"
    );
    let issued = svid(&handle, "web").await;
    verify(&issued.cert_chain, &bundle, T0 + 1).unwrap();
    let (header, _) = verify_jwt(&jwt(&handle).await, &bundle).unwrap();
    assert_eq!(header["alg"], "RS256");
    stop(handle, join).await;
}

#[tokio::test]
async fn rotation_prepares_activates_and_retires_with_both_roots_trusted_in_the_overlap() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    let a = handle.status().await.unwrap().cas[0].id.clone();
    let svid_a = svid(&handle, "web").await;
    let jwt_a = jwt(&handle).await;

    // Half-life of A (notBefore T0 - 10, lifetime TTL + 10).
    h.at(T0 + 3000);
    let report = handle.tick().await.unwrap();
    assert_eq!(kinds(&report.events), ["CaPrepared", "JwtKeyPrepared"]);
    let b = ca_id(&report.events[0]).unwrap().to_owned();
    let bundle = handle.bundle().unwrap();
    assert_eq!(
        bundle.x509_authorities().len(),
        2,
        "B's root is published before it signs"
    );
    assert_eq!(bundle.jwt_authorities().len(), 2);
    assert_eq!(svid(&handle, "web").await.authority_id, a, "A still signs");

    // 5/6 of A's life.
    h.at(T0 + 5000);
    let report = handle.tick().await.unwrap();
    assert_eq!(kinds(&report.events), ["CaActivated", "JwtKeyActivated"]);
    let svid_b = svid(&handle, "web").await;
    assert_eq!(svid_b.authority_id, b);
    let jwt_b = jwt(&handle).await;
    let overlap = handle.bundle().unwrap();
    for chain in [&svid_a.cert_chain, &svid_b.cert_chain] {
        verify(chain, &overlap, T0 + 5000).unwrap();
    }
    for token in [&jwt_a, &jwt_b] {
        verify_jwt(token, &overlap).unwrap();
    }
    assert_ne!(
        verify_jwt(&jwt_a, &overlap).unwrap().0["kid"],
        verify_jwt(&jwt_b, &overlap).unwrap().0["kid"]
    );

    // A expires and leaves the bundle (B reaches its own half-life at the same time).
    h.at(T0 + TTL as i64 + 1);
    let report = handle.tick().await.unwrap();
    assert!(report.events.contains(&ServerEvent::CaRetired {
        authority_id: a.clone()
    }));
    let after = handle.bundle().unwrap();
    assert!(after
        .x509_authorities()
        .iter()
        .all(|x| x.der() != svid_a.cert_chain[0].as_slice()));
    assert!(verify(&svid_b.cert_chain, &after, T0 + TTL as i64 + 1).is_ok());
    assert!(
        verify_jwt(&jwt_a, &after).is_err(),
        "A's JWT key left the bundle"
    );

    // A's history in the log, in order.
    let logged = h.logged().await;
    let a_history: Vec<&str> = logged
        .iter()
        .filter(|e| ca_id(e) == Some(a.as_str()))
        .map(|e| tessera_eventlog::Event::kind(e))
        .collect();
    assert_eq!(a_history, ["CaPrepared", "CaActivated", "CaRetired"]);
    // A's key is gone from the key manager; B's is there.
    let status = handle.status().await.unwrap();
    assert!(status.cas.iter().all(|s| s.id != a));
    assert_eq!(
        h.keys.key_refs().len(),
        status.cas.len() + status.jwt_keys.len()
    );
    stop(handle, join).await;
}

#[tokio::test]
async fn restart_replays_to_the_same_state_and_resumes_mid_rotation() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    h.at(T0 + 3000);
    handle.tick().await.unwrap();
    let before = handle.status().await.unwrap();
    let bundle_before = handle.bundle();
    let signing_before = handle.signer().active_authority_id();
    stop(handle, join).await;

    let (handle, join) = h.start().await;
    assert_eq!(handle.status().await.unwrap(), before);
    assert_eq!(handle.bundle(), bundle_before);
    assert_eq!(handle.signer().active_authority_id(), signing_before);
    assert!(before.cas.iter().all(|s| s.key_loaded));
    // It signs with the reloaded key.
    verify(
        &svid(&handle, "web").await.cert_chain,
        &bundle_before.unwrap(),
        T0 + 3001,
    )
    .unwrap();

    // And carries on with the rotation it was in: B becomes active at 5/6.
    h.at(T0 + 5000);
    let report = handle.tick().await.unwrap();
    assert_eq!(kinds(&report.events), ["CaActivated", "JwtKeyActivated"]);
    stop(handle, join).await;
}

#[tokio::test]
async fn lost_keys_are_replaced_and_the_old_root_stays_trusted() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    let issued = svid(&handle, "web").await;
    stop(handle, join).await;

    // The keys did not survive (e.g. a memory key manager across a restart).
    let (handle, join) = h
        .start_with(h.settings(), Arc::new(MemoryKeyManager::new()))
        .await;
    let status = handle.status().await.unwrap();
    assert!(!status.cas[0].key_loaded);
    assert!(matches!(
        handle.sign_x509_batch(vec![]).await,
        Err(crate::server::authority::SignError::NoActiveCa { .. })
    ));
    h.at(T0 + 10);
    let report = handle.tick().await.unwrap();
    assert_eq!(
        kinds(&report.events),
        [
            "CaPrepared",
            "CaActivated",
            "JwtKeyPrepared",
            "JwtKeyActivated"
        ]
    );
    let bundle = handle.bundle().unwrap();
    assert_eq!(bundle.x509_authorities().len(), 2);
    verify(&issued.cert_chain, &bundle, T0 + 10).unwrap();
    verify(&svid(&handle, "db").await.cert_chain, &bundle, T0 + 10).unwrap();
    stop(handle, join).await;
}

#[tokio::test]
async fn a_full_signing_queue_is_refused_through_the_actor_too() {
    let h = Harness::new();
    let mut settings = h.settings();
    settings.signer.max_queued = 2;
    let (handle, join) = h.start_with(settings, h.keys.clone()).await;
    handle.tick().await.unwrap();
    let _held = handle.signer().admit(2).unwrap();
    let refused = ask(handle.actor(), |port| {
        AuthorityMsg::MintJwt(
            JwtSvidRequest {
                spiffe_id: id("spiffe://example.org/web"),
                audience: vec!["db".into()],
                ttl: None,
            },
            port,
        )
    })
    .await;
    assert_eq!(
        refused.unwrap_err(),
        crate::server::authority::SignError::Overloaded {
            requested: 1,
            limit: 2
        }
    );
    assert_eq!(handle.status().await.unwrap().signing_queued, 2);
    stop(handle, join).await;
}

#[tokio::test]
async fn bad_settings_fail_the_spawn() {
    let h = Harness::new();
    let mut settings = h.settings();
    settings.jwt_key_ttl = Duration::from_secs(1);
    let args = AuthorityArgs::new(
        h.log.clone(),
        Arc::new(h.clock.clone()),
        Arc::new(SeededRandom::new(1)),
        h.keys.clone(),
        settings,
        None,
    );
    let err = AuthorityHandle::spawn(None, args).await.unwrap_err();
    assert!(err.to_string().contains("jwt_key_ttl"), "{err}");
}

#[tokio::test]
async fn with_an_interval_it_rotates_on_its_own_from_the_start() {
    let h = Harness::new();
    let mut settings = h.settings();
    settings.tick_interval = Some(Duration::from_secs(3600));
    let (handle, join) = h.start_with(settings, h.keys.clone()).await;
    let mut bundles = handle.subscribe_bundle();
    tokio::time::timeout(Duration::from_secs(20), bundles.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    // The bundle is published once the CA is prepared; activation is the next append.
    let mut logged = h.logged().await;
    for _ in 0..200 {
        if logged.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        logged = h.logged().await;
    }
    assert_eq!(kinds(&logged)[..2], ["CaPrepared", "CaActivated"]);
    stop(handle, join).await;
}

// === Manual steps (LocalAuthority) ===

async fn local(handle: &AuthorityHandle, kind: AuthorityKind) -> Vec<LocalAuthority> {
    handle.local_state(kind).await.unwrap()
}

#[tokio::test]
async fn manual_steps_persist_before_replying_and_survive_a_restart() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    let a = handle.signer().active_authority_id().unwrap();

    let b = handle.prepare(AuthorityKind::X509).await.unwrap().unwrap();
    assert_eq!(b.status, SlotStatus::Prepared);
    // Recorded before the reply.
    assert!(
        matches!(h.logged().await.last(), Some(ServerEvent::CaPrepared(r)) if r.authority_id == b.id)
    );
    assert_eq!(
        handle.signer().active_authority_id(),
        Some(a.clone()),
        "not yet"
    );

    let step = |s, id: &str| handle.local_step(AuthorityKind::X509, s, id.to_owned());
    let activated = step(LocalStep::Activate, &b.id).await.unwrap().unwrap();
    assert_eq!(activated.status, SlotStatus::Active);
    assert_eq!(handle.signer().active_authority_id(), Some(b.id.clone()));
    assert_eq!(
        h.logged().await.last(),
        Some(&ServerEvent::CaActivated {
            authority_id: b.id.clone()
        })
    );
    let tainted = step(LocalStep::Taint, &a).await.unwrap().unwrap();
    assert!(tainted.tainted);
    let refused = step(LocalStep::Taint, &b.id).await.unwrap().unwrap_err();
    assert!(matches!(
        refused,
        LocalAuthorityError::Rejected(AuthorityError::TaintNotOld { .. })
    ));
    let bundle = handle.bundle().unwrap();
    assert_eq!(bundle.tainted_x509_authorities().count(), 1);
    stop(handle, join).await;

    // A restart folds the taint back, mark included.
    let (handle, join) = h.start().await;
    let state = local(&handle, AuthorityKind::X509).await;
    assert!(state.iter().any(|s| s.id == a && s.tainted), "{state:?}");
    assert_eq!(handle.bundle(), Some(bundle));
    let keys_before = h.keys.key_refs().len();
    let revoked = handle
        .local_step(AuthorityKind::X509, LocalStep::Revoke, a.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.id, a);
    assert!(local(&handle, AuthorityKind::X509)
        .await
        .iter()
        .all(|s| s.id != a));
    assert_eq!(
        h.keys.key_refs().len(),
        keys_before - 1,
        "its key is deleted"
    );
    assert_eq!(handle.bundle().unwrap().x509_authorities().len(), 1);
    stop(handle, join).await;
}

#[tokio::test]
async fn a_manual_prepare_is_refused_while_one_is_prepared_and_rotation_activates_it() {
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    let next = handle.prepare(AuthorityKind::Jwt).await.unwrap().unwrap();
    let again = handle
        .prepare(AuthorityKind::Jwt)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            again,
            LocalAuthorityError::Rejected(AuthorityError::AlreadyPrepared { .. })
        ),
        "{again:?}"
    );
    // Half-life: rotation does not build another; at 5/6 it activates the manual one.
    h.at(T0 + 3000);
    assert_eq!(kinds(&handle.tick().await.unwrap().events), ["CaPrepared"]);
    h.at(T0 + 5000);
    let report = handle.tick().await.unwrap();
    assert!(report.events.contains(&ServerEvent::JwtKeyActivated {
        kid: next.id.clone()
    }));
    assert_eq!(handle.signer().active_kid(), Some(next.id));
    stop(handle, join).await;
}

/// Records the name and `authority_id` field of every span opened (a minimal subscriber, so
/// the test needs no subscriber crate).
#[derive(Default, Clone)]
struct SpanLog(Arc<std::sync::Mutex<Vec<(String, String)>>>);

struct AuthorityIdField<'a>(&'a mut String);

impl tracing::field::Visit for AuthorityIdField<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "authority_id" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl tracing::Subscriber for SpanLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut id = String::new();
        span.record(&mut AuthorityIdField(&mut id));
        let mut log = self.0.lock().unwrap();
        log.push((span.metadata().name().to_owned(), id));
        tracing::span::Id::from_u64(log.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn preparation_and_activation_run_in_spans_naming_the_authority() {
    let spans = SpanLog::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let h = Harness::new();
    let (handle, join) = h.start().await;
    handle.tick().await.unwrap();
    let ca = handle.signer().active_authority_id().unwrap();
    let kid = handle.signer().active_kid().unwrap();
    let next = handle.prepare(AuthorityKind::X509).await.unwrap().unwrap();
    handle
        .local_step(AuthorityKind::X509, LocalStep::Activate, next.id.clone())
        .await
        .unwrap()
        .unwrap();
    stop(handle, join).await;

    let seen = spans.0.lock().unwrap().clone();
    let has = |name: &str, id: &str| seen.iter().any(|(n, i)| n == name && i == id);
    for (name, id) in [
        ("authority.prepare", &ca),
        ("authority.activate", &ca),
        ("authority.prepare", &kid),
        ("authority.activate", &kid),
        ("authority.prepare", &next.id),
        ("authority.activate", &next.id),
    ] {
        assert!(has(name, id), "no {name} span for {id}: {seen:?}");
    }
}
