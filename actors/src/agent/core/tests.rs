//! The core's wiring of forced rotation, with a fake server: a tainted CA's SVIDs are
//! re-signed by the new CA in bounded rounds and published, once each (no loop); a tainted
//! JWT key's cached JWT-SVID is not served again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tessera_eventlog::ManualClock;
use tessera_identity::{
    Bundle, EntryId, JwtAuthority, PublicKey, RegistrationEntry, SelectorSet, SpiffeId,
};
use tokio::sync::mpsc;

use crate::agent::cache::Cache;
use crate::agent::core::AgentArgs;
use crate::agent::rotation::RotationSettings;
use crate::agent::runtime::{AgentRuntime, Backoff};
use crate::agent::server_client::{ClientError, MintedJwt, ServerClient, SignedX509, SyncMessage};
use crate::agent::taint::test_pki::{bundle, TestCa};
use crate::agent::taint::{jwt_key_id, BundleIndex, Verdict};
use crate::agent::view::{IdentitySnapshot, WorkloadSource};
use crate::random::SeededRandom;

const NOW: u64 = 1_800_000_000;
const ENTRIES: u32 = 10;
const BATCH: usize = 3;

struct FakeServer {
    signer: Mutex<Arc<TestCa>>,
    sync: Mutex<Option<mpsc::UnboundedReceiver<SyncMessage>>>,
    /// Size of every signing call.
    rounds: Mutex<Vec<usize>>,
    kid: Mutex<String>,
    mints: AtomicUsize,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeServer")
    }
}

impl ServerClient for FakeServer {
    fn sync(
        &self,
        _cursor: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<SyncMessage, ClientError>>, ClientError>>
    {
        let rx = self.sync.lock().unwrap().take();
        async move {
            let rx = rx.ok_or_else(|| ClientError::Unavailable("one stream only".into()))?;
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|m| (Ok(m), rx))
            });
            Ok(stream.boxed())
        }
        .boxed()
    }

    fn sign_x509(
        &self,
        requests: Vec<(EntryId, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<Result<SignedX509, String>>, ClientError>> {
        self.rounds.lock().unwrap().push(requests.len());
        let ca = self.signer.lock().unwrap().clone();
        let out = requests
            .iter()
            .map(|(_, csr)| {
                Ok(SignedX509 {
                    cert_chain: vec![ca.sign_csr(csr)],
                    not_after: i64::try_from(NOW).unwrap() + 3_600,
                })
            })
            .collect();
        async move { Ok(out) }.boxed()
    }

    fn mint_jwt(
        &self,
        _entry: EntryId,
        _audience: Vec<String>,
    ) -> BoxFuture<'_, Result<MintedJwt, ClientError>> {
        self.mints.fetch_add(1, Ordering::SeqCst);
        let kid = self.kid.lock().unwrap().clone();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64(&format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#)),
            b64("{}")
        );
        let now = i64::try_from(NOW).unwrap();
        async move {
            Ok(MintedJwt {
                token,
                expires_at: now + 300,
                issued_at: now,
            })
        }
        .boxed()
    }
}

fn entry(n: u32) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new(&format!("e{n:02}")).unwrap(),
        spiffe_id: SpiffeId::new(&format!("spiffe://example.org/w{n}")).unwrap(),
        parent_id: SpiffeId::new("spiffe://example.org/spire/agent/join_token/t").unwrap(),
        selectors: SelectorSet::parse_all(["unix:uid:1000"]).unwrap(),
        x509_svid_ttl: None,
        jwt_svid_ttl: None,
        federates_with: vec![],
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: None,
        created_at: 0,
        revision: 0,
    }
}

/// `cas` in a bundle with JWT keys `k-old` and `k-new`; `tainted` CAs and `k-old` if
/// `jwt_tainted` marked.
fn full_bundle(cas: &[&TestCa], tainted: &[&TestCa], jwt_tainted: bool) -> Bundle {
    let mut b = bundle(cas, tainted);
    let key = rcgen::KeyPair::generate().unwrap();
    let public_key =
        PublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key)).unwrap();
    for kid in ["k-old", "k-new"] {
        b.add_jwt_authority(JwtAuthority {
            key_id: kid.into(),
            public_key: public_key.clone(),
            expires_at: None,
        })
        .unwrap();
    }
    if jwt_tainted {
        assert!(b.taint_jwt_authority("k-old"));
    }
    b
}

/// Waits (at most 10 s) for a published snapshot where every entry's SVID satisfies `ok`.
async fn until_all(
    rt: &AgentRuntime,
    what: &str,
    ok: impl Fn(&[Vec<u8>]) -> bool,
) -> Arc<IdentitySnapshot> {
    let mut rx = rt.identities();
    let wait = async {
        loop {
            let snapshot = rx.borrow_and_update().clone();
            let done = snapshot.identities.len() == ENTRIES as usize
                && snapshot
                    .identities
                    .iter()
                    .all(|i| i.svid.as_ref().is_some_and(|s| ok(&s.cert_chain)));
            if done {
                return snapshot;
            }
            rx.changed().await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taint_re_signs_every_svid_of_the_tainted_ca_in_bounded_rounds_and_drops_its_jwts() {
    let (old, new) = (Arc::new(TestCa::root("old")), Arc::new(TestCa::root("new")));
    let (tx, rx) = mpsc::unbounded_channel();
    let server = Arc::new(FakeServer {
        signer: Mutex::new(old.clone()),
        sync: Mutex::new(Some(rx)),
        rounds: Mutex::new(Vec::new()),
        kid: Mutex::new("k-old".into()),
        mints: AtomicUsize::new(0),
    });
    let (rt, _sync) = AgentRuntime::start(
        AgentArgs {
            trust_domain: tessera_identity::TrustDomain::new("example.org").unwrap(),
            cache: Cache::default(),
            client: server.clone(),
            clock: Arc::new(ManualClock::at_unix_secs(NOW)),
            rotation: RotationSettings {
                batch: BATCH,
                ..RotationSettings::default()
            },
            persist: None,
        },
        Arc::new(SeededRandom::new(1)),
        Backoff::default(),
    )
    .await
    .unwrap();

    let before = full_bundle(&[&old], &[], false);
    tx.send(SyncMessage::Snapshot {
        seq: 1,
        entries: (0..ENTRIES).map(entry).collect(),
        bundles: vec![before.clone()],
    })
    .unwrap();
    let index = BundleIndex::new(&before);
    let first = until_all(&rt, "the first SVIDs", |c| {
        index.judge(c) == Verdict::Trusted
    })
    .await;
    let jwt = rt
        .fetch_jwt(&first.identities[0], &["aud".into()])
        .await
        .unwrap();
    let again = rt
        .fetch_jwt(&first.identities[0], &["aud".into()])
        .await
        .unwrap();
    assert_eq!(jwt.token, again.token, "cached");
    assert_eq!(server.mints.load(Ordering::SeqCst), 1);
    let initial_rounds = server.rounds.lock().unwrap().len();

    // prepare + activate (new CA signs), then the taint of the old CA and JWT key.
    *server.signer.lock().unwrap() = new.clone();
    *server.kid.lock().unwrap() = "k-new".into();
    let tainted = full_bundle(&[&old, &new], &[&old], true);
    tx.send(SyncMessage::BundleUpdated {
        seq: 2,
        bundle: tainted.clone(),
    })
    .unwrap();
    let after = BundleIndex::new(&tainted);
    let only_new_bundle = bundle(&[&new], &[]);
    let only_new = BundleIndex::new(&only_new_bundle);
    let resigned = until_all(&rt, "the re-signed SVIDs", |c| {
        after.judge(c) == Verdict::Trusted && only_new.judge(c) == Verdict::Trusted
    })
    .await;
    assert_eq!(
        resigned.bundle.as_ref(),
        Some(&tainted),
        "the marked bundle is published"
    );

    let rounds = server.rounds.lock().unwrap().clone();
    let taint_rounds = &rounds[initial_rounds..];
    assert!(
        taint_rounds.iter().all(|n| *n <= BATCH),
        "every round within the batch: {taint_rounds:?}"
    );
    assert_eq!(
        taint_rounds.iter().sum::<usize>(),
        ENTRIES as usize,
        "each SVID re-signed once: {taint_rounds:?}"
    );

    // The JWT-SVID of the tainted key is not served again: a fresh one is minted.
    let fresh = rt
        .fetch_jwt(&resigned.identities[0], &["aud".into()])
        .await
        .unwrap();
    assert_eq!(server.mints.load(Ordering::SeqCst), 2);
    assert_eq!(jwt_key_id(&fresh.token).as_deref(), Some("k-new"));

    // Revoke: the bundle without the old CA reaches the snapshot; nothing is re-signed.
    let revoked = full_bundle(&[&new], &[], false);
    tx.send(SyncMessage::BundleUpdated {
        seq: 3,
        bundle: revoked.clone(),
    })
    .unwrap();
    let mut rx = rt.identities();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.bundle.as_ref() == Some(&revoked)),
    )
    .await
    .expect("the revoked bundle within 10 s")
    .unwrap();
    assert_eq!(
        server.rounds.lock().unwrap().len(),
        rounds.len(),
        "SVIDs of the new CA are not re-signed"
    );
    rt.stop();
}
