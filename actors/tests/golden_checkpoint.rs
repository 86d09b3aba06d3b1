//! The stored `CheckpointSigned` record, pinned (issue 14; schema 1 still: a new variant at
//! the end): a log holding one signed checkpoint, written once, must decode to the same
//! fields in every later build, and its signature must still verify, which also pins the
//! layout of the signed bytes (`tessera-log-checkpoint-v1`). A changed variant or layout
//! fails here; the fix is a new variant or tag, never an edit of the file.
//!
//! Written once with `cargo test -p tessera-actors --test golden_checkpoint -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::PathBuf;

use tessera_actors::keys::{KeyType, SigningKeyPair};
use tessera_actors::server::checkpoint::{signed_bytes, CheckpointRecord};
use tessera_actors::server::events::ServerEvent;
use tessera_eventlog::export::{read_export, write_export};
use tessera_eventlog::typed::{decode, encode};
use tessera_eventlog::{verify_records, Digest32, Record};
use tessera_identity::TrustDomain;

const SEQ: u64 = 41;
const HASH: [u8; 32] = [0x5a; 32];
const SIGNED_AT: i64 = 1_700_000_000;
const KID: &str = "golden-kid";
const SERVER: &str = "server-a";

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/server-events-v1-checkpoint.tlog")
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

#[test]
fn golden_checkpoint_decodes_and_verifies_forever() {
    let bytes = std::fs::read(path()).expect("golden file is in the repo");
    let records = read_export(&mut bytes.as_slice()).unwrap();
    assert!(verify_records(&records).is_ok());
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].kind, "CheckpointSigned");
    let ServerEvent::CheckpointSigned(c) = decode::<ServerEvent>(&records[0]).unwrap() else {
        panic!("not a checkpoint");
    };
    assert_eq!(c.server_id.as_deref(), Some(SERVER));
    assert_eq!(
        (c.seq, &c.hash[..], c.signed_at),
        (SEQ, &HASH[..], SIGNED_AT)
    );
    assert_eq!(c.kid, KID);
    assert_eq!(c.verify(&td()), Ok(()), "the signed-bytes layout changed");
    let mut moved = c.clone();
    moved.seq += 1;
    assert!(moved.verify(&td()).is_err());
    // The stored form still encodes the same way.
    let again = encode(&ServerEvent::CheckpointSigned(c)).unwrap();
    assert_eq!(again.payload, records[0].payload);
}

#[test]
#[ignore = "writes the golden file of the checkpoint variant; run by hand once"]
fn make_golden_checkpoint() {
    let path = path();
    assert!(!path.exists(), "golden files are never regenerated");
    let key = SigningKeyPair::generate(KeyType::EcP256).unwrap();
    let message = signed_bytes(&td(), Some(SERVER), SEQ, &HASH, SIGNED_AT, KID).unwrap();
    let record = CheckpointRecord {
        server_id: Some(SERVER.into()),
        seq: SEQ,
        hash: HASH.to_vec(),
        signed_at: SIGNED_AT,
        kid: KID.into(),
        public_key_der: key.spki_der(),
        signature: key.sign_jws(&message).unwrap(),
    };
    assert_eq!(record.verify(&td()), Ok(()));
    let event = ServerEvent::CheckpointSigned(record);
    let r = Record::seal(
        encode(&event).unwrap(),
        1,
        1_700_000_000_000_000_000,
        Digest32::GENESIS,
    );
    let mut out = Vec::new();
    write_export(&mut out, &[r]).unwrap();
    std::fs::write(path, out).unwrap();
}
