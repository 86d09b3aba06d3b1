//! The stored forced-rotation records, pinned (issue 14; schema 1 still: new variants at the
//! end): `X509AuthorityTainted`, `X509AuthorityRevoked`, `JwtAuthorityTainted` and
//! `JwtAuthorityRevoked`, written once, must decode to the same events in every later build
//! and re-encode to the same bytes. A changed variant fails here; the fix is a new variant,
//! never an edit of the file.
//!
//! Written once with `cargo test -p tessera-actors --test golden_taint -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::PathBuf;

use tessera_actors::server::events::ServerEvent;
use tessera_eventlog::export::{read_export, write_export};
use tessera_eventlog::typed::{decode, encode};
use tessera_eventlog::{verify_records, Digest32, Record};

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/server-events-v1-taint.tlog")
}

fn events() -> Vec<ServerEvent> {
    vec![
        ServerEvent::X509AuthorityTainted {
            server_id: Some("server-a".into()),
            authority_id: "3f2a9c".into(),
        },
        ServerEvent::X509AuthorityRevoked {
            server_id: None,
            authority_id: "3f2a9c".into(),
        },
        ServerEvent::JwtAuthorityTainted {
            server_id: None,
            kid: "kid-old".into(),
        },
        ServerEvent::JwtAuthorityRevoked {
            server_id: Some("server-b".into()),
            kid: "kid-old".into(),
        },
    ]
}

#[test]
fn golden_taint_events_decode_and_encode_the_same_forever() {
    let bytes = std::fs::read(path()).expect("golden file is in the repo");
    let records = read_export(&mut bytes.as_slice()).unwrap();
    assert!(verify_records(&records).is_ok());
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "X509AuthorityTainted",
            "X509AuthorityRevoked",
            "JwtAuthorityTainted",
            "JwtAuthorityRevoked"
        ]
    );
    for (record, expected) in records.iter().zip(events()) {
        assert_eq!(decode::<ServerEvent>(record).unwrap(), expected);
        assert_eq!(encode(&expected).unwrap().payload, record.payload);
    }
}

#[test]
#[ignore = "writes the golden file of the taint variants; run by hand once"]
fn make_golden_taint() {
    let path = path();
    assert!(!path.exists(), "golden files are never regenerated");
    let mut prev = Digest32::GENESIS;
    let mut records = Vec::new();
    for (i, event) in events().iter().enumerate() {
        let seq = u64::try_from(i).unwrap() + 1;
        let r = Record::seal(
            encode(event).unwrap(),
            seq,
            1_700_000_000_000_000_000 + i64::try_from(i).unwrap(),
            prev,
        );
        prev = r.hash;
        records.push(r);
    }
    let mut out = Vec::new();
    write_export(&mut out, &records).unwrap();
    std::fs::write(path, out).unwrap();
}
