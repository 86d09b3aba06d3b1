//! Tessera's own services, and the descriptor set's completeness for reflection.

use std::collections::BTreeSet;

use prost_types::field_descriptor_proto::Type;

use super::support::*;

#[test]
fn tessera_services_have_their_documented_shapes() {
    let set = descriptor_set();

    let agent = file(&set, "tessera/agent/v1/agent.proto");
    let paths = assert_service(
        agent,
        "AgentServer",
        "tessera.agent.v1.AgentServer",
        &[
            ("Attest", "AttestRequest", "AttestResponse", true, true),
            (
                "RenewAgent",
                "RenewAgentRequest",
                "RenewAgentResponse",
                false,
                false,
            ),
            ("SyncEvents", "SyncRequest", "SyncResponse", false, true),
            (
                "BatchSignX509Svid",
                "BatchSignX509SvidRequest",
                "BatchSignX509SvidResponse",
                false,
                false,
            ),
            (
                "MintJwtSvid",
                "MintJwtSvidRequest",
                "MintJwtSvidResponse",
                false,
                false,
            ),
        ],
    );
    assert_eq!(paths[2], "/tessera.agent.v1.AgentServer/SyncEvents");

    let eventlog = file(&set, "tessera/eventlog/v1/eventlog.proto");
    assert_service(
        eventlog,
        "EventLog",
        "tessera.eventlog.v1.EventLog",
        &[
            ("Tail", "TailRequest", "Record", false, true),
            ("Get", "GetRequest", "Record", false, false),
            ("Verify", "VerifyRequest", "VerifyResponse", false, false),
            ("Head", "HeadRequest", "HeadResponse", false, false),
            (
                "LatestCheckpoint",
                "LatestCheckpointRequest",
                "Checkpoint",
                false,
                false,
            ),
        ],
    );
    assert_numbers(
        message(eventlog, "Record"),
        &[
            ("seq", 1),
            ("recorded_at", 2),
            ("kind", 3),
            ("schema_version", 4),
            ("payload", 5),
            ("payload_json", 6),
            ("prev_hash", 7),
            ("hash", 8),
        ],
    );

    // Every sync message that moves the agent's cursor carries the log seq in field 1.
    for name in [
        "SnapshotBegin",
        "SnapshotEnd",
        "Checkpoint",
        "EntryUpserted",
        "EntryRemoved",
        "BundleUpdated",
        "BundleRemoved",
    ] {
        let seq = message(agent, name)
            .field
            .iter()
            .find(|f| f.name() == "seq")
            .unwrap_or_else(|| panic!("{name} has no seq"));
        assert_eq!(
            (seq.number(), seq.r#type()),
            (1, Type::Uint64),
            "{name}.seq"
        );
    }
}

// === Reflection ===

#[test]
fn descriptor_set_is_self_contained_for_reflection() {
    let set = descriptor_set();
    let names: BTreeSet<&str> = set.file.iter().map(|f| f.name()).collect();
    for f in &set.file {
        for dep in &f.dependency {
            assert!(
                names.contains(dep.as_str()),
                "{} imports {dep}, which the descriptor set lacks",
                f.name()
            );
        }
    }
    for expected in [
        "workload.proto",
        "google/protobuf/struct.proto",
        "spire/api/types/entry.proto",
        "spire/api/server/entry/v1/entry.proto",
        "tessera/agent/v1/agent.proto",
        "tessera/eventlog/v1/eventlog.proto",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from the descriptor set"
        );
    }
    // Comments are kept so `grpcurl describe` shows them.
    assert!(
        file(&set, "workload.proto").source_code_info.is_some(),
        "source info was stripped"
    );
}
