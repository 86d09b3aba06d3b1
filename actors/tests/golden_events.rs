//! The server's stored event format, pinned: a log holding every `ServerEvent` variant,
//! written once, must decode to exactly these values in every later build. A reordered or
//! changed variant, or a changed identity type inside one, fails here; the fix is a new
//! variant or schema version with an upcaster, never an edit of the file.
//!
//! Written once with `cargo test -p tessera-actors --test golden_events -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::PathBuf;

use tessera_actors::server::events::{
    AttestedAgent, CaRecord, JwtKeyRecord, ServerEvent, TokenHash,
};
use tessera_eventlog::export::{read_export, write_export};
use tessera_eventlog::typed::{decode, encode};
use tessera_eventlog::{verify_records, Digest32, Record};
use tessera_identity::{EntryId, RegistrationEntry, SelectorSet, SpiffeId, TrustDomain};

fn path() -> PathBuf {
    golden("server-events-v1.tlog")
}

/// The variants added for several servers (schema 1 still: new variants, none changed).
fn servers_path() -> PathBuf {
    golden("server-events-v1-servers.tlog")
}

/// The variant added for entry expiry (issue 11; schema 1 still: a new variant at the end).
fn expiry_path() -> PathBuf {
    golden("server-events-v1-expiry.tlog")
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

fn entry(revision: u64) -> RegistrationEntry {
    RegistrationEntry {
        id: EntryId::new("6f1d9a4e-3b2c-4d5e-8f70-112233445566").unwrap(),
        spiffe_id: id("spiffe://example.org/billing/payments"),
        parent_id: id("spiffe://example.org/spire/agent/x509pop/0a1b2c"),
        selectors: SelectorSet::parse_all(["unix:uid:1000", "unix:path:/usr/bin/pay"]).unwrap(),
        x509_svid_ttl: Some(3_600),
        jwt_svid_ttl: None,
        federates_with: vec![TrustDomain::new("partner.example").unwrap()],
        dns_names: vec!["payments.example.org".into()],
        admin: false,
        downstream: true,
        hint: "payments".into(),
        expires_at: Some(1_900_000_000),
        created_at: 1_700_000_000,
        revision,
    }
}

fn events() -> Vec<ServerEvent> {
    let agent = id("spiffe://example.org/spire/agent/x509pop/0a1b2c");
    let token =
        TokenHash("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into());
    vec![
        ServerEvent::EntryCreated(entry(0)),
        ServerEvent::EntryUpdated(entry(1)),
        ServerEvent::EntryDeleted { id: entry(1).id },
        ServerEvent::JoinTokenCreated {
            token_hash: token.clone(),
            expires_at: 1_700_000_600,
            alias: Some(id("spiffe://example.org/node/a")),
        },
        ServerEvent::JoinTokenConsumed {
            token_hash: token.clone(),
            agent_id: id("spiffe://example.org/spire/agent/join_token/t"),
        },
        ServerEvent::JoinTokenExpired { token_hash: token },
        ServerEvent::AgentAttested(AttestedAgent {
            id: agent.clone(),
            attestation_type: "x509pop".into(),
            selectors: SelectorSet::parse_all(["x509pop:subject:cn:node-1"]).unwrap(),
            svid_serial: "0badc0de".into(),
            svid_expires_at: 1_700_003_600,
            attested_at: 1_700_000_000,
            can_reattest: true,
        }),
        ServerEvent::AgentSvidRenewed {
            agent_id: agent.clone(),
            svid_serial: "0badc0df".into(),
            svid_expires_at: 1_700_005_400,
        },
        ServerEvent::AgentEvicted {
            agent_id: agent.clone(),
        },
        ServerEvent::AgentBanned { agent_id: agent },
        ServerEvent::CaPrepared(CaRecord {
            authority_id: "a1b2".into(),
            cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            upstream_chain: vec![vec![0x30, 0x00]],
            trust_anchors: vec![vec![0x30, 0x01, 0x00]],
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
            key_ref: "x509-ca-a1b2".into(),
        }),
        ServerEvent::CaActivated {
            authority_id: "a1b2".into(),
        },
        ServerEvent::CaRetired {
            authority_id: "a1b2".into(),
        },
        ServerEvent::JwtKeyPrepared(JwtKeyRecord {
            kid: "k1".into(),
            public_key_der: vec![0x30, 0x02, 0x05, 0x00],
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
            key_ref: "jwt-k1".into(),
        }),
        ServerEvent::JwtKeyActivated { kid: "k1".into() },
        ServerEvent::JwtKeyRetired { kid: "k1".into() },
    ]
}

fn servers_events() -> Vec<ServerEvent> {
    let ca = CaRecord {
        authority_id: "c3d4".into(),
        cert_der: vec![0x30, 0x03, 0x02, 0x01, 0x02],
        upstream_chain: vec![],
        trust_anchors: vec![vec![0x30, 0x01, 0x01]],
        not_before: 1_700_000_000,
        not_after: 1_700_086_400,
        key_ref: "x509-ca-c3d4".into(),
    };
    let key = JwtKeyRecord {
        kid: "k2".into(),
        public_key_der: vec![0x30, 0x02, 0x05, 0x01],
        not_before: 1_700_000_000,
        not_after: 1_700_086_400,
        key_ref: "jwt-k2".into(),
    };
    let server = || "server-b".to_string();
    vec![
        ServerEvent::ServerCaPrepared {
            server_id: server(),
            record: ca,
        },
        ServerEvent::ServerCaActivated {
            server_id: server(),
            authority_id: "c3d4".into(),
        },
        ServerEvent::ServerCaRetired {
            server_id: "server-a".into(),
            authority_id: "c3d4".into(),
        },
        ServerEvent::ServerJwtKeyPrepared {
            server_id: server(),
            record: key,
        },
        ServerEvent::ServerJwtKeyActivated {
            server_id: server(),
            kid: "k2".into(),
        },
        ServerEvent::ServerJwtKeyRetired {
            server_id: server(),
            kid: "k2".into(),
        },
    ]
}

fn expiry_events() -> Vec<ServerEvent> {
    vec![ServerEvent::EntryExpired {
        id: entry(0).id,
        expires_at: 1_900_000_000,
    }]
}

fn check_golden(path: PathBuf, events: Vec<ServerEvent>) {
    let bytes = std::fs::read(path).expect("golden file is in the repo");
    let records = read_export(&mut bytes.as_slice()).unwrap();
    assert!(verify_records(&records).is_ok());
    let decoded: Vec<ServerEvent> = records.iter().map(|r| decode(r).unwrap()).collect();
    assert_eq!(decoded, events);
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    let expected: Vec<&str> = events.iter().map(tessera_eventlog::Event::kind).collect();
    assert_eq!(kinds, expected);
}

#[test]
fn golden_server_events_v1_decode_forever() {
    check_golden(path(), events());
}

#[test]
fn golden_server_events_of_several_servers_decode_forever() {
    check_golden(servers_path(), servers_events());
}

#[test]
fn golden_server_events_of_entry_expiry_decode_forever() {
    check_golden(expiry_path(), expiry_events());
}

#[test]
#[ignore = "writes the golden file of the expiry variant; run by hand once"]
fn make_golden_expiry_events() {
    write_golden(expiry_path(), expiry_events());
}

#[test]
#[ignore = "writes the golden file; run by hand only for a new schema version"]
fn make_golden_server_events() {
    write_golden(path(), events());
}

#[test]
#[ignore = "writes the golden file of the several-servers variants; run by hand once"]
fn make_golden_servers_events() {
    write_golden(servers_path(), servers_events());
}

fn write_golden(path: PathBuf, events: Vec<ServerEvent>) {
    assert!(!path.exists(), "golden files are never regenerated");
    let mut prev = Digest32::GENESIS;
    let mut records: Vec<Record> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let r = Record::seal(
            encode(e).unwrap(),
            i as u64 + 1,
            1_700_000_000_000_000_000 + i as i64,
            prev,
        );
        prev = r.hash;
        records.push(r);
    }
    let mut out = Vec::new();
    write_export(&mut out, &records).unwrap();
    std::fs::write(path, out).unwrap();
}
