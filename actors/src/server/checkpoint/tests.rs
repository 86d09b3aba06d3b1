//! Checkpoints: the signed bytes, verification (good, tampered, wrong key), the stored and
//! JSON forms, the audit over a log, and the checkpointer's wiring with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use tessera_eventlog::{AppendCondition, LocalLog, ManualClock, TypedLog};
use tessera_identity::TrustDomain;

use super::scan::{audit, find_latest};
use super::*;
use crate::server::authority::signer::{Signer, SignerSettings};
use crate::server::authority::test_support::{clock_at, jwt_key_at, signer_with, td, T0};
use crate::server::events::{JwtKeyRecord, ServerEvent, TokenHash};
use crate::server::keys::{KeyType, MemoryKeyManager};

const HASH: [u8; 32] = [0xab; 32];

fn key_and_signer(key_type: KeyType) -> (ManualClock, JwtKeyRecord, Signer) {
    let clock = clock_at(T0);
    let keys = MemoryKeyManager::default();
    let jwt = jwt_key_at(&keys, key_type, T0, 86_400);
    let signer = signer_with(&clock, SignerSettings::default(), None, Some(&jwt));
    (clock, jwt.record, signer)
}

async fn signed(signer: &Signer, key: &JwtKeyRecord, seq: u64, hash: &[u8]) -> CheckpointRecord {
    let message = signed_bytes(&td(), None, seq, hash, T0, &key.kid).unwrap();
    let (record, signature) = signer.sign_checkpoint(&key.kid, message).await.unwrap();
    assert_eq!(record, *key);
    CheckpointRecord {
        server_id: None,
        seq,
        hash: hash.to_vec(),
        signed_at: T0,
        kid: key.kid.clone(),
        public_key_der: key.public_key_der.clone(),
        signature,
    }
}

#[test]
fn signed_bytes_are_the_documented_layout() {
    let bytes = signed_bytes(&td(), Some("server-a"), 42, &HASH, 1_700_000_000, "kid-1").unwrap();
    let expected = format!(
        "tessera-log-checkpoint-v1\nexample.org\nserver-a\n42\n{}\n1700000000\nkid-1",
        "ab".repeat(32)
    );
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    let alone = signed_bytes(&td(), None, 1, &HASH, -5, "k").unwrap();
    assert!(String::from_utf8(alone)
        .unwrap()
        .starts_with("tessera-log-checkpoint-v1\nexample.org\n\n1\n"));
}

#[test]
fn signed_bytes_refuse_what_would_make_them_ambiguous() {
    let e = signed_bytes(&td(), None, 1, &[1; 31], 0, "k").unwrap_err();
    assert!(e.to_string().contains("hash is 31 bytes"), "{e}");
    let e = signed_bytes(&td(), Some("a\nb"), 1, &HASH, 0, "k").unwrap_err();
    assert!(
        e.to_string().contains("server_id has control characters"),
        "{e}"
    );
    let e = signed_bytes(&td(), None, 1, &HASH, 0, "").unwrap_err();
    assert!(e.to_string().contains("kid is empty"), "{e}");
    let e = signed_bytes(&td(), None, 1, &HASH, 0, &"k".repeat(MAX_NAME_LEN + 1)).unwrap_err();
    assert!(e.to_string().contains("over 256"), "{e}");
}

#[tokio::test]
async fn a_signed_checkpoint_verifies_and_any_change_breaks_it() {
    for key_type in [KeyType::EcP256, KeyType::EcP384] {
        let (_clock, key, signer) = key_and_signer(key_type);
        let good = signed(&signer, &key, 7, &HASH).await;
        assert_eq!(good.verify(&td()), Ok(()), "{key_type}");

        let mut seq = good.clone();
        seq.seq = 8;
        let mut hash = good.clone();
        hash.hash[0] ^= 1;
        let mut sig = good.clone();
        let last = sig.signature.len() - 1;
        sig.signature[last] ^= 1;
        let mut at = good.clone();
        at.signed_at += 1;
        let mut server = good.clone();
        server.server_id = Some("other".into());
        for (what, bad) in [
            ("seq", seq),
            ("hash", hash),
            ("signature", sig),
            ("signed_at", at),
            ("server", server),
        ] {
            match bad.verify(&td()) {
                Err(CheckpointError::BadSignature { seq, kid, .. }) => {
                    assert_eq!((seq, kid), (bad.seq, key.kid.clone()), "{what}");
                }
                other => panic!("{key_type} tampered {what}: {other:?}"),
            }
        }
        let other_td = TrustDomain::new("other.org").unwrap();
        let e = good.verify(&other_td).unwrap_err();
        assert!(e.to_string().contains("trust domain other.org"), "{e}");
    }
}

#[tokio::test]
async fn another_key_does_not_verify_and_junk_keys_are_named() {
    let (_c, key, signer) = key_and_signer(KeyType::EcP256);
    let (_c2, other, _) = key_and_signer(KeyType::EcP256);
    let mut wrong = signed(&signer, &key, 3, &HASH).await;
    wrong.public_key_der = other.public_key_der.clone();
    assert!(matches!(
        wrong.verify(&td()),
        Err(CheckpointError::BadSignature { seq: 3, .. })
    ));
    wrong.public_key_der = vec![0x30, 0x00];
    let e = wrong.verify(&td()).unwrap_err();
    assert!(
        matches!(e, CheckpointError::BadPublicKey { seq: 3, .. }),
        "{e}"
    );
}

#[tokio::test]
async fn an_rsa_key_signs_checkpoints_that_verify() {
    let clock = clock_at(T0);
    let pair = Arc::new(crate::keys::test_keys::rsa_2048());
    let record = JwtKeyRecord {
        kid: "rsa".into(),
        public_key_der: pair.spki_der(),
        not_before: T0,
        not_after: T0 + 3_600,
        key_ref: "rsa".into(),
    };
    let signer = Signer::new(
        td(),
        SignerSettings::default(),
        Arc::new(clock.clone()),
        Arc::new(crate::random::SeededRandom::new(1)),
    );
    signer.install_jwt_key(Some(crate::server::authority::signer::SigningJwtKey::new(
        record.clone(),
        pair,
    )));
    let good = signed(&signer, &record, 9, &HASH).await;
    assert_eq!(good.verify(&td()), Ok(()));
    let mut bad = good;
    bad.seq = 10;
    assert!(bad.verify(&td()).is_err());
}

#[tokio::test]
async fn the_signer_refuses_without_the_named_key() {
    let (clock, key, signer) = key_and_signer(KeyType::EcP256);
    let e = signer.sign_checkpoint("other", vec![1]).await.unwrap_err();
    assert!(e.to_string().contains("rotated"), "{e}");
    clock.advance(Duration::from_secs(86_401));
    let e = signer.sign_checkpoint(&key.kid, vec![1]).await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    signer.install_jwt_key(None);
    assert!(matches!(
        signer.sign_checkpoint(&key.kid, vec![1]).await,
        Err(crate::server::authority::signer::SignError::NoActiveJwtKey { .. })
    ));
}

#[tokio::test]
async fn the_event_round_trips_in_the_log_and_reads_well_in_json() {
    let (_c, key, signer) = key_and_signer(KeyType::EcP256);
    let record = signed(&signer, &key, 5, &HASH).await;
    let event = ServerEvent::CheckpointSigned(record.clone());
    let stored = tessera_eventlog::typed::encode(&event).unwrap();
    assert_eq!(stored.kind, "CheckpointSigned");
    let sealed = tessera_eventlog::Record::seal(stored, 6, 0, tessera_eventlog::Digest32::GENESIS);
    assert_eq!(
        tessera_eventlog::typed::decode::<ServerEvent>(&sealed).unwrap(),
        event
    );

    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["hash"], "ab".repeat(32));
    assert!(
        json["public_key_der"].as_str().unwrap().starts_with("MF"),
        "{json}"
    );
    assert!(json["signature"].is_string(), "{json}");
    assert_eq!(
        serde_json::from_value::<CheckpointRecord>(json).unwrap(),
        record
    );
    let bad = serde_json::json!({"server_id": null, "seq": 1, "hash": "zz", "signed_at": 0,
        "kid": "k", "public_key_der": "", "signature": ""});
    let e = serde_json::from_value::<CheckpointRecord>(bad).unwrap_err();
    assert!(e.to_string().contains("hash is not hex"), "{e}");
}

/// A log with the key prepared, then `n` other records.
async fn log_with(key: &JwtKeyRecord, n: u64) -> TypedLog<ServerEvent> {
    let raw = Arc::new(LocalLog::in_memory(Arc::new(clock_at(T0))));
    let log = TypedLog::<ServerEvent>::new(raw);
    log.append(
        &[ServerEvent::JwtKeyPrepared(key.clone())],
        AppendCondition::Any,
    )
    .await
    .unwrap();
    append_records(&log, n).await;
    log
}

async fn append_records(log: &TypedLog<ServerEvent>, n: u64) {
    for i in 0..n {
        let e = ServerEvent::JoinTokenExpired {
            token_hash: TokenHash(format!("{i:064x}")),
        };
        log.append(&[e], AppendCondition::Any).await.unwrap();
    }
}

fn settings(every: u64, interval_secs: u64) -> CheckpointSettings {
    CheckpointSettings {
        every_records: every,
        interval: Duration::from_secs(interval_secs),
        tick: None,
        lookback: 1_000,
    }
}

async fn tick(actor: &ractor::ActorRef<CheckpointerMsg>) -> TickOutcome {
    let asked = actor
        .call(
            |reply| CheckpointerMsg::Tick(Some(reply)),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    match asked {
        ractor::rpc::CallResult::Success(outcome) => outcome,
        other => panic!("tick: {other:?}"),
    }
}

#[tokio::test]
async fn the_checkpointer_signs_the_head_every_n_records_and_never_when_idle() {
    let (clock, key, signer) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 3).await;
    let args = CheckpointerArgs {
        log: log.clone(),
        signer,
        clock: Arc::new(clock.clone()),
        trust_domain: td(),
        server_id: None,
        settings: settings(5, 0),
    };
    let (actor, handle) = Actor::spawn(None, Checkpointer, args).await.unwrap();

    // 4 records (the key, 3 tokens) of 5: not yet.
    assert_eq!(tick(&actor).await, TickOutcome::NotDue);
    append_records(&log, 1).await;
    let head = log.raw().head();
    assert_eq!(
        tick(&actor).await,
        TickOutcome::Appended {
            record_seq: 6,
            covers: 5
        }
    );
    let found = find_latest(log.raw().as_ref(), 6, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.record_seq, 6);
    assert_eq!(
        (found.checkpoint.seq, &found.checkpoint.hash[..]),
        (5, &head.hash.0[..])
    );
    assert_eq!(found.checkpoint.kid, key.kid);
    assert_eq!(found.checkpoint.verify(&td()), Ok(()));

    // Idle, however long: no checkpoint of the checkpoint.
    clock.advance(Duration::from_secs(86_000));
    assert_eq!(tick(&actor).await, TickOutcome::NotDue);
    append_records(&log, 4).await;
    assert_eq!(tick(&actor).await, TickOutcome::NotDue);
    append_records(&log, 1).await;
    assert!(matches!(
        tick(&actor).await,
        TickOutcome::Appended {
            record_seq: 12,
            covers: 11
        }
    ));

    let report = audit(log.raw().as_ref(), &td(), 1, 12).await.unwrap();
    assert_eq!(report.checked, 2);
    assert_eq!(report.first_bad, None);
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn the_interval_checkpoints_new_records_and_a_restart_counts_from_the_last_one() {
    let (clock, key, signer) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 1).await;
    let args = |settings| CheckpointerArgs {
        log: log.clone(),
        signer: signer.clone(),
        clock: Arc::new(clock.clone()),
        trust_domain: td(),
        server_id: Some("server-a".into()),
        settings,
    };
    let (actor, handle) = Actor::spawn(None, Checkpointer, args(settings(0, 60)))
        .await
        .unwrap();
    assert_eq!(tick(&actor).await, TickOutcome::NotDue);
    clock.advance(Duration::from_secs(60));
    assert!(matches!(
        tick(&actor).await,
        TickOutcome::Appended { covers: 2, .. }
    ));
    actor.stop(None);
    handle.await.unwrap();

    // A restart finds that checkpoint: one more record is not due before the interval.
    append_records(&log, 1).await;
    let (actor, handle) = Actor::spawn(None, Checkpointer, args(settings(0, 60)))
        .await
        .unwrap();
    assert_eq!(tick(&actor).await, TickOutcome::NotDue);
    clock.advance(Duration::from_secs(60));
    let TickOutcome::Appended { record_seq, .. } = tick(&actor).await else {
        panic!("due after the interval");
    };
    let found = find_latest(log.raw().as_ref(), record_seq, Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.checkpoint.server_id.as_deref(), Some("server-a"));
    assert_eq!(found.checkpoint.verify(&td()), Ok(()));
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn without_a_jwt_key_a_due_checkpoint_is_reported_and_nothing_is_appended() {
    let (clock, key, signer) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 2).await;
    signer.install_jwt_key(None);
    let args = CheckpointerArgs {
        log: log.clone(),
        signer: signer.clone(),
        clock: Arc::new(clock),
        trust_domain: td(),
        server_id: None,
        settings: settings(2, 0),
    };
    let (actor, handle) = Actor::spawn(None, Checkpointer, args).await.unwrap();
    assert!(matches!(tick(&actor).await, TickOutcome::NoKey(_)));
    assert_eq!(log.raw().head().seq, 3, "nothing appended without a key");
    actor.stop(None);
    handle.await.unwrap();
}

#[tokio::test]
async fn the_audit_names_a_checkpoint_whose_record_was_changed_or_whose_key_is_not_the_logs() {
    let (_c, key, signer) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 2).await;
    // A checkpoint of seq 2 that signed a hash the log does not have there.
    let wrong_hash = signed(&signer, &key, 2, &HASH).await;
    log.append(
        &[ServerEvent::CheckpointSigned(wrong_hash)],
        AppendCondition::Any,
    )
    .await
    .unwrap();
    let report = audit(log.raw().as_ref(), &td(), 1, 4).await.unwrap();
    let (seq, reason) = report.first_bad.unwrap();
    assert_eq!(seq, 4);
    assert!(reason.contains("rewritten at or before seq 2"), "{reason}");

    // Signed with a key the log never prepared.
    let (_c, stranger, stranger_signer) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 2).await;
    let hash = log.raw().head().hash.0;
    let forged = signed(&stranger_signer, &stranger, 3, &hash).await;
    log.append(
        &[ServerEvent::CheckpointSigned(forged)],
        AppendCondition::Any,
    )
    .await
    .unwrap();
    let (seq, reason) = audit(log.raw().as_ref(), &td(), 1, 4)
        .await
        .unwrap()
        .first_bad
        .unwrap();
    assert_eq!(seq, 4);
    assert!(reason.contains("never prepared"), "{reason}");
    // A range starting later still knows every key from seq 1: no unknown key slips through.
    let (seq, reason) = audit(log.raw().as_ref(), &td(), 2, 4)
        .await
        .unwrap()
        .first_bad
        .unwrap();
    assert_eq!(seq, 4);
    assert!(reason.contains("never prepared"), "{reason}");
}

#[tokio::test]
async fn a_checkpoint_signed_after_its_key_was_tainted_or_retired_fails_the_audit() {
    let (_c, key, signer) = key_and_signer(KeyType::EcP256);
    for ended in [
        ServerEvent::JwtAuthorityTainted {
            server_id: None,
            kid: key.kid.clone(),
        },
        ServerEvent::JwtKeyRetired {
            kid: key.kid.clone(),
        },
    ] {
        let log = log_with(&key, 2).await;
        let hash = log.raw().head().hash.0;
        let before = signed(&signer, &key, log.raw().head().seq, &hash).await;
        log.append(
            &[ServerEvent::CheckpointSigned(before)],
            AppendCondition::Any,
        )
        .await
        .unwrap();
        log.append(&[ended], AppendCondition::Any).await.unwrap();
        let head = log.raw().head();
        let after = signed(&signer, &key, head.seq, &head.hash.0).await;
        log.append(
            &[ServerEvent::CheckpointSigned(after)],
            AppendCondition::Any,
        )
        .await
        .unwrap();
        let to = log.raw().head().seq;
        let report = audit(log.raw().as_ref(), &td(), 1, to).await.unwrap();
        assert_eq!(report.checked, 1, "the checkpoint before is good");
        let (seq, reason) = report.first_bad.unwrap();
        assert_eq!(seq, to);
        assert!(reason.contains("no longer trusted"), "{reason}");
    }
}

#[tokio::test]
async fn two_servers_on_one_log_share_the_count_and_do_not_both_checkpoint() {
    let (clock, key, signer_a) = key_and_signer(KeyType::EcP256);
    let (_c, key_b, signer_b) = key_and_signer(KeyType::EcP256);
    let log = log_with(&key, 0).await;
    log.append(
        &[ServerEvent::ServerJwtKeyPrepared {
            server_id: "b".into(),
            record: key_b.clone(),
        }],
        AppendCondition::Any,
    )
    .await
    .unwrap();
    let spawn = |server: &str, signer: &Signer| {
        Actor::spawn(
            None,
            Checkpointer,
            CheckpointerArgs {
                log: log.clone(),
                signer: signer.clone(),
                clock: Arc::new(clock.clone()),
                trust_domain: td(),
                server_id: Some(server.into()),
                settings: settings(4, 0),
            },
        )
    };
    let (a, a_handle) = spawn("a", &signer_a).await.unwrap();
    let (b, b_handle) = spawn("b", &signer_b).await.unwrap();
    assert_eq!(tick(&b).await, TickOutcome::NotDue);
    append_records(&log, 2).await;
    assert!(matches!(
        tick(&a).await,
        TickOutcome::Appended { covers: 4, .. }
    ));
    // B sees A's checkpoint: its count starts again, so no second checkpoint of seq 4.
    assert_eq!(tick(&b).await, TickOutcome::NotDue);
    append_records(&log, 4).await;
    assert!(matches!(
        tick(&b).await,
        TickOutcome::Appended { covers: 9, .. }
    ));
    assert_eq!(tick(&a).await, TickOutcome::NotDue);
    let latest = find_latest(log.raw().as_ref(), 10, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.checkpoint.server_id.as_deref(), Some("b"));
    assert_eq!(latest.checkpoint.kid, key_b.kid);
    let report = audit(log.raw().as_ref(), &td(), 1, 10).await.unwrap();
    assert_eq!((report.checked, report.first_bad), (2, None));
    for (actor, handle) in [(a, a_handle), (b, b_handle)] {
        actor.stop(None);
        handle.await.unwrap();
    }
}

/// A log on which another writer slips one record in just before the first conditional
/// append, as a busy server's other actors do while the checkpointer signs.
#[derive(Debug)]
struct Busy {
    inner: Arc<dyn tessera_eventlog::EventLog>,
    slipped: std::sync::atomic::AtomicBool,
}

impl tessera_eventlog::EventLog for Busy {
    fn append(
        &self,
        batch: Vec<tessera_eventlog::NewRecord>,
        condition: AppendCondition,
    ) -> futures::future::BoxFuture<
        '_,
        Result<tessera_eventlog::AppendReceipt, tessera_eventlog::LogError>,
    > {
        Box::pin(async move {
            let conditional = matches!(condition, AppendCondition::ExpectHead(_));
            if conditional && !self.slipped.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let other = tessera_eventlog::typed::encode(&ServerEvent::JoinTokenExpired {
                    token_hash: TokenHash("f".repeat(64)),
                })
                .unwrap();
                self.inner.append(vec![other], AppendCondition::Any).await?;
            }
            self.inner.append(batch, condition).await
        })
    }
    fn read(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Vec<tessera_eventlog::Record>, tessera_eventlog::LogError>,
    > {
        self.inner.read(from_seq, limit)
    }
    fn subscribe(&self, from_seq: u64) -> tessera_eventlog::Subscription {
        self.inner.subscribe(from_seq)
    }
    fn head(&self) -> tessera_eventlog::Head {
        self.inner.head()
    }
    fn verify(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<tessera_eventlog::VerifyReport, tessera_eventlog::LogError>,
    > {
        self.inner.verify()
    }
    fn save_snapshot(
        &self,
        seq: u64,
        data: Vec<u8>,
    ) -> futures::future::BoxFuture<'_, Result<(), tessera_eventlog::LogError>> {
        self.inner.save_snapshot(seq, data)
    }
    fn latest_snapshot(
        &self,
    ) -> futures::future::BoxFuture<
        '_,
        Result<Option<tessera_eventlog::Snapshot>, tessera_eventlog::LogError>,
    > {
        self.inner.latest_snapshot()
    }
    fn location(&self) -> std::path::PathBuf {
        self.inner.location()
    }
}

#[tokio::test]
async fn a_checkpoint_whose_head_moved_while_it_was_signed_still_goes_in() {
    let (clock, key, signer) = key_and_signer(KeyType::EcP256);
    let plain = log_with(&key, 3).await;
    let log = TypedLog::<ServerEvent>::new(Arc::new(Busy {
        inner: plain.raw().clone(),
        slipped: std::sync::atomic::AtomicBool::new(false),
    }));
    let args = CheckpointerArgs {
        log: log.clone(),
        signer,
        clock: Arc::new(clock),
        trust_domain: td(),
        server_id: None,
        settings: settings(2, 0),
    };
    let (actor, handle) = Actor::spawn(None, Checkpointer, args).await.unwrap();
    // Head 4 (the key + 3 records) is signed; a record slips in at 5 before the append.
    assert!(matches!(
        tick(&actor).await,
        TickOutcome::Appended {
            record_seq: 6,
            covers: 4
        }
    ));
    let report = audit(log.raw().as_ref(), &td(), 1, 6).await.unwrap();
    assert_eq!((report.checked, report.first_bad), (1, None));
    actor.stop(None);
    handle.await.unwrap();
}
