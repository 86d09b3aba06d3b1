//! Wire-level checks: bytes laid out by hand from the SPIFFE standard's field numbers decode
//! into the generated types and are exactly what they encode to, and Tessera's own messages
//! survive an encode/decode round trip.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::collections::HashMap;

use prost::Message;
use prost_types::{value::Kind, Struct, Timestamp, Value};
use tessera_proto::{
    spire::api::types::{self as spire_types, Entry, Selector, Spiffeid},
    tessera::{agent::v1 as agent, eventlog::v1 as eventlog},
    workload::{
        JwtsvidRequest, ValidateJwtsvidResponse, X509BundlesResponse, X509svid, X509svidResponse,
    },
};

// === Hand encoding (protobuf wire format, written out independently of prost) ===

/// Wire type of varint fields.
const VARINT: u64 = 0;
/// Wire type of length-delimited fields (strings, bytes, messages, map entries).
const LEN: u64 = 2;

fn varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn key(field: u64, wire_type: u64, out: &mut Vec<u8>) {
    varint((field << 3) | wire_type, out);
}

/// A length-delimited field: key, length, payload.
fn len_field(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    key(field, LEN, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

const SPIFFE_ID: &str = "spiffe://example.org/web";
const LEAF_DER: &[u8] = &[0x30, 0x82, 0x01, 0x0a, 0xde, 0xad];
const KEY_DER: &[u8] = &[0x30, 0x81, 0x87, 0x02, 0x01, 0x00];
const BUNDLE_DER: &[u8] = &[0x30, 0x82, 0x02, 0x00, 0xbe, 0xef];
const CRL_DER: &[u8] = &[0x30, 0x82, 0x03, 0x00, 0xc0];
const FOREIGN_TD: &str = "spiffe://partner.example";
const FOREIGN_DER: &[u8] = &[0x30, 0x82, 0x04, 0x00, 0xfe];

/// An X509SVIDResponse laid out per the standard: svids=1, crl=2, federated_bundles=3;
/// X509SVID spiffe_id=1, x509_svid=2, x509_svid_key=3, bundle=4, hint=5; map entries
/// key=1, value=2.
fn standard_x509_svid_response() -> Vec<u8> {
    let svid = concat(&[
        len_field(1, SPIFFE_ID.as_bytes()),
        len_field(2, LEAF_DER),
        len_field(3, KEY_DER),
        len_field(4, BUNDLE_DER),
        len_field(5, b"internal"),
    ]);
    let federated_entry = concat(&[
        len_field(1, FOREIGN_TD.as_bytes()),
        len_field(2, FOREIGN_DER),
    ]);
    concat(&[
        len_field(1, &svid),
        len_field(2, CRL_DER),
        len_field(3, &federated_entry),
    ])
}

#[test]
fn standard_x509_svid_response_bytes_decode() {
    let decoded = X509svidResponse::decode(standard_x509_svid_response().as_slice())
        .expect("standard bytes decode");

    assert_eq!(
        decoded.svids,
        vec![X509svid {
            spiffe_id: SPIFFE_ID.to_owned(),
            x509_svid: LEAF_DER.to_vec(),
            x509_svid_key: KEY_DER.to_vec(),
            bundle: BUNDLE_DER.to_vec(),
            hint: "internal".to_owned(),
        }]
    );
    assert_eq!(decoded.crl, vec![CRL_DER.to_vec()]);
    assert_eq!(
        decoded.federated_bundles,
        HashMap::from([(FOREIGN_TD.to_owned(), FOREIGN_DER.to_vec())])
    );
}

#[test]
fn generated_x509_svid_response_encodes_to_the_standard_bytes() {
    let msg = X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: SPIFFE_ID.to_owned(),
            x509_svid: LEAF_DER.to_vec(),
            x509_svid_key: KEY_DER.to_vec(),
            bundle: BUNDLE_DER.to_vec(),
            hint: "internal".to_owned(),
        }],
        crl: vec![CRL_DER.to_vec()],
        federated_bundles: HashMap::from([(FOREIGN_TD.to_owned(), FOREIGN_DER.to_vec())]),
    };
    assert_eq!(msg.encode_to_vec(), standard_x509_svid_response());
}

#[test]
fn standard_jwt_svid_request_bytes_decode() {
    // audience=1 (repeated string), spiffe_id=2.
    let bytes = concat(&[
        len_field(1, b"aud-a"),
        len_field(1, b"aud-b"),
        len_field(2, SPIFFE_ID.as_bytes()),
    ]);
    let decoded = JwtsvidRequest::decode(bytes.as_slice()).expect("standard bytes decode");
    assert_eq!(decoded.audience, ["aud-a", "aud-b"]);
    assert_eq!(decoded.spiffe_id, SPIFFE_ID);
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn standard_x509_bundles_response_bytes_decode() {
    // crl=1, bundles=2 (map<string, bytes>).
    let entry = concat(&[
        len_field(1, b"spiffe://example.org"),
        len_field(2, BUNDLE_DER),
    ]);
    let bytes = concat(&[len_field(1, CRL_DER), len_field(2, &entry)]);
    let decoded = X509BundlesResponse::decode(bytes.as_slice()).expect("standard bytes decode");
    assert_eq!(decoded.crl, vec![CRL_DER.to_vec()]);
    assert_eq!(
        decoded
            .bundles
            .get("spiffe://example.org")
            .map(Vec::as_slice),
        Some(BUNDLE_DER)
    );
}

#[test]
fn validate_response_claims_round_trip_as_struct() {
    let claims = Struct {
        fields: [
            (
                "sub".to_owned(),
                Value {
                    kind: Some(Kind::StringValue(SPIFFE_ID.to_owned())),
                },
            ),
            (
                "exp".to_owned(),
                Value {
                    kind: Some(Kind::NumberValue(1_700_000_000.0)),
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    let msg = ValidateJwtsvidResponse {
        spiffe_id: SPIFFE_ID.to_owned(),
        claims: Some(claims),
    };
    let decoded = ValidateJwtsvidResponse::decode(msg.encode_to_vec().as_slice())
        .expect("round trip decodes");
    assert_eq!(decoded, msg);

    // claims is field 2, length-delimited: the first byte after spiffe_id must be its key.
    let bytes = msg.encode_to_vec();
    let after_id = 2 + SPIFFE_ID.len();
    assert_eq!(bytes[after_id], (2 << 3 | LEN) as u8);
}

// === SPIRE types ===

fn sample_entry(id: &str) -> Entry {
    Entry {
        id: id.to_owned(),
        spiffe_id: Some(Spiffeid {
            trust_domain: "example.org".into(),
            path: "/web".into(),
        }),
        parent_id: Some(Spiffeid {
            trust_domain: "example.org".into(),
            path: "/spire/agent/join_token/abc".into(),
        }),
        selectors: vec![Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        x509_svid_ttl: 3600,
        revision_number: 7,
        hint: "internal".into(),
        additional_attributes: Some(spire_types::entry::AdditionalAttributes {
            disable_x509_svid_prefetch: false,
            jwt_svid_include_jti: true,
        }),
        ..Default::default()
    }
}

#[test]
fn spire_entry_uses_spire_field_numbers_on_the_wire() {
    // id=1 and x509_svid_ttl=5 (varint), per spire-api-sdk.
    let bytes = {
        let mut b = len_field(1, b"entry-1");
        key(5, VARINT, &mut b);
        varint(3600, &mut b);
        b
    };
    let decoded = Entry::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded.id, "entry-1");
    assert_eq!(decoded.x509_svid_ttl, 3600);

    let entry = sample_entry("entry-2");
    assert_eq!(
        Entry::decode(entry.encode_to_vec().as_slice()).expect("decodes"),
        entry
    );
}

// === Tessera agent API ===

#[test]
fn sync_stream_messages_round_trip() {
    let messages = vec![
        agent::sync_response::Event::SnapshotBegin(agent::SnapshotBegin {
            seq: 41,
            entry_count: 2,
            bundle_count: 1,
        }),
        agent::sync_response::Event::SnapshotChunk(agent::SnapshotChunk {
            index: 0,
            entries: vec![sample_entry("a"), sample_entry("b")],
            bundles: vec![spire_types::Bundle {
                trust_domain: "example.org".into(),
                x509_authorities: vec![spire_types::X509Certificate {
                    asn1: BUNDLE_DER.to_vec(),
                    tainted: false,
                }],
                sequence_number: 3,
                ..Default::default()
            }],
        }),
        agent::sync_response::Event::SnapshotEnd(agent::SnapshotEnd {
            seq: 41,
            chunk_count: 1,
        }),
        agent::sync_response::Event::EntryUpserted(agent::EntryUpserted {
            seq: 42,
            entry: Some(sample_entry("c")),
        }),
        agent::sync_response::Event::EntryRemoved(agent::EntryRemoved {
            seq: 43,
            entry_id: "a".into(),
        }),
        agent::sync_response::Event::Checkpoint(agent::Checkpoint { seq: 43 }),
    ];
    for event in messages {
        let msg = agent::SyncResponse { event: Some(event) };
        let decoded = agent::SyncResponse::decode(msg.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, msg);
    }
}

#[test]
fn attest_steps_are_a_oneof() {
    let first = agent::AttestRequest {
        step: Some(agent::attest_request::Step::Params(agent::AttestParams {
            data: Some(spire_types::AttestationData {
                r#type: "join_token".into(),
                payload: b"secret".to_vec(),
            }),
            csr: vec![0x30, 0x01],
            agent_version: "0.1.0".into(),
        })),
    };
    let answer = agent::AttestRequest {
        step: Some(agent::attest_request::Step::ChallengeResponse(
            b"signed".to_vec(),
        )),
    };
    // Concatenated messages merge, and for a oneof the last member wins.
    let merged = agent::AttestRequest::decode(
        [first.encode_to_vec(), answer.encode_to_vec()]
            .concat()
            .as_slice(),
    )
    .expect("decodes");
    assert_eq!(merged, answer);
}

#[test]
fn batch_sign_results_round_trip() {
    let msg = agent::BatchSignX509SvidResponse {
        results: vec![
            agent::SignX509SvidResult {
                status: Some(spire_types::Status {
                    code: 0,
                    message: String::new(),
                }),
                svid: Some(spire_types::X509svid {
                    cert_chain: vec![LEAF_DER.to_vec(), BUNDLE_DER.to_vec()],
                    id: Some(Spiffeid {
                        trust_domain: "example.org".into(),
                        path: "/web".into(),
                    }),
                    expires_at: 1_700_003_600,
                    hint: String::new(),
                }),
                entry_id: "a".into(),
            },
            agent::SignX509SvidResult {
                status: Some(spire_types::Status {
                    code: 5,
                    message: "no entry \"b\"".into(),
                }),
                svid: None,
                entry_id: "b".into(),
            },
        ],
    };
    let decoded =
        agent::BatchSignX509SvidResponse::decode(msg.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, msg);
}

// === Event log API ===

#[test]
fn event_log_record_round_trips() {
    let record = eventlog::Record {
        seq: 9,
        recorded_at: Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_456_789,
        }),
        kind: "EntryCreated".into(),
        schema_version: 1,
        payload: vec![1, 2, 3],
        payload_json: r#"{"id":"a"}"#.into(),
        prev_hash: vec![0xaa; 32],
        hash: vec![0xbb; 32],
    };
    let decoded = eventlog::Record::decode(record.encode_to_vec().as_slice()).expect("decodes");
    assert_eq!(decoded, record);

    // seq is field 1, varint: the encoding opens with key 0x08 and the value.
    assert_eq!(&record.encode_to_vec()[..2], &[0x08, 9]);
}
