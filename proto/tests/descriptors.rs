//! Checks the compiled schema itself (the reflection descriptor set) against the standards:
//! service names, gRPC paths, streaming shapes and field numbers. A renumbered field or a
//! stray `package` line in `workload.proto` breaks every SPIFFE client, so each is pinned here.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::{
    field_descriptor_proto::{Label, Type},
    DescriptorProto, FileDescriptorProto, FileDescriptorSet,
};
use tessera_proto::FILE_DESCRIPTOR_SET;

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
}

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{name} is missing from the descriptor set"))
}

fn message<'a>(file: &'a FileDescriptorProto, name: &str) -> &'a DescriptorProto {
    file.message_type
        .iter()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("message {name} is missing from {}", file.name()))
}

/// `(method, input, output, client_streaming, server_streaming)`. Input and output types
/// without a leading dot are taken as relative to the file's package.
type MethodShape = (&'static str, &'static str, &'static str, bool, bool);

/// Asserts the service's fully-qualified name, and its methods exactly (names, order,
/// types, streaming); returns the gRPC paths as a client would build them.
fn assert_service(
    file: &FileDescriptorProto,
    service: &str,
    want_full_name: &str,
    want: &[MethodShape],
) -> Vec<String> {
    let svc = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("service {service} is missing from {}", file.name()));
    let full_name = if file.package().is_empty() {
        svc.name().to_owned()
    } else {
        format!("{}.{}", file.package(), svc.name())
    };
    assert_eq!(full_name, want_full_name, "full name of service {service}");

    let got: Vec<(String, String, String, bool, bool)> = svc
        .method
        .iter()
        .map(|m| {
            (
                m.name().to_owned(),
                m.input_type().to_owned(),
                m.output_type().to_owned(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect();
    let qualify = |ty: &str| {
        if ty.starts_with('.') || file.package().is_empty() {
            format!(".{}", ty.trim_start_matches('.'))
        } else {
            format!(".{}.{ty}", file.package())
        }
    };
    let want: Vec<(String, String, String, bool, bool)> = want
        .iter()
        .map(|(n, i, o, cs, ss)| (n.to_string(), qualify(i), qualify(o), *cs, *ss))
        .collect();
    assert_eq!(got, want, "methods of {full_name}");

    svc.method
        .iter()
        .map(|m| format!("/{full_name}/{}", m.name()))
        .collect()
}

/// One expected field: `(name, number, type, repeated, type_name)`; `type_name` is empty
/// for scalars.
type FieldShape = (&'static str, i32, Type, bool, &'static str);

/// Asserts that `msg` has exactly these fields, with these numbers, types and labels.
fn assert_fields(msg: &DescriptorProto, want: &[FieldShape]) {
    let got: BTreeMap<String, (i32, Type, bool, String)> = msg
        .field
        .iter()
        .map(|f| {
            (
                f.name().to_owned(),
                (
                    f.number(),
                    f.r#type(),
                    f.label() == Label::Repeated,
                    f.type_name().to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (i32, Type, bool, String)> = want
        .iter()
        .map(|(name, number, ty, repeated, type_name)| {
            (
                name.to_string(),
                (*number, *ty, *repeated, type_name.to_string()),
            )
        })
        .collect();
    assert_eq!(got, want, "fields of message {}", msg.name());
}

/// Asserts that `field` of `msg` is a `map<key, value>`.
fn assert_map(msg: &DescriptorProto, field: &str, key: Type, value: Type) {
    let f = msg
        .field
        .iter()
        .find(|f| f.name() == field)
        .unwrap_or_else(|| panic!("{}.{field} is missing", msg.name()));
    let entry_name = f.type_name().rsplit('.').next().unwrap_or_default();
    let entry = msg
        .nested_type
        .iter()
        .find(|n| n.name() == entry_name)
        .unwrap_or_else(|| panic!("{}.{field}: no nested entry type {entry_name}", msg.name()));
    assert!(
        entry.options.as_ref().is_some_and(|o| o.map_entry()),
        "{}.{field} is not a map",
        msg.name()
    );
    assert_fields(
        entry,
        &[("key", 1, key, false, ""), ("value", 2, value, false, "")],
    );
}

/// Asserts field numbers by name only (for the larger SPIRE messages).
fn assert_numbers(msg: &DescriptorProto, want: &[(&str, i32)]) {
    let got: BTreeMap<&str, i32> = msg.field.iter().map(|f| (f.name(), f.number())).collect();
    let want: BTreeMap<&str, i32> = want.iter().copied().collect();
    assert_eq!(got, want, "field numbers of {}", msg.name());
}

// === Workload API ===

#[test]
fn workload_api_has_no_package_and_standard_paths() {
    let set = descriptor_set();
    let workload = file(&set, "workload.proto");
    assert_eq!(
        workload.package(),
        "",
        "workload.proto must have no package"
    );

    let paths = assert_service(
        workload,
        "SpiffeWorkloadAPI",
        "SpiffeWorkloadAPI",
        &[
            (
                "FetchX509SVID",
                ".X509SVIDRequest",
                ".X509SVIDResponse",
                false,
                true,
            ),
            (
                "FetchX509Bundles",
                ".X509BundlesRequest",
                ".X509BundlesResponse",
                false,
                true,
            ),
            (
                "FetchJWTSVID",
                ".JWTSVIDRequest",
                ".JWTSVIDResponse",
                false,
                false,
            ),
            (
                "FetchJWTBundles",
                ".JWTBundlesRequest",
                ".JWTBundlesResponse",
                false,
                true,
            ),
            (
                "ValidateJWTSVID",
                ".ValidateJWTSVIDRequest",
                ".ValidateJWTSVIDResponse",
                false,
                false,
            ),
            (
                "FetchWITSVID",
                ".WITSVIDRequest",
                ".WITSVIDResponse",
                false,
                true,
            ),
            (
                "FetchWITBundles",
                ".WITBundlesRequest",
                ".WITBundlesResponse",
                false,
                true,
            ),
        ],
    );
    assert_eq!(
        paths,
        [
            "/SpiffeWorkloadAPI/FetchX509SVID",
            "/SpiffeWorkloadAPI/FetchX509Bundles",
            "/SpiffeWorkloadAPI/FetchJWTSVID",
            "/SpiffeWorkloadAPI/FetchJWTBundles",
            "/SpiffeWorkloadAPI/ValidateJWTSVID",
            "/SpiffeWorkloadAPI/FetchWITSVID",
            "/SpiffeWorkloadAPI/FetchWITBundles",
        ]
    );
}

#[test]
fn generated_workload_server_name_is_the_standard_one() {
    use tessera_proto::workload::spiffe_workload_api_server::SERVICE_NAME;
    assert_eq!(SERVICE_NAME, "SpiffeWorkloadAPI");
}

#[test]
fn workload_api_messages_match_the_standard() {
    use Type::{Bytes, Message as Msg, String as Str};

    let set = descriptor_set();
    let workload = file(&set, "workload.proto");

    let expected: &[(&str, &[FieldShape])] = &[
        ("X509SVIDRequest", &[]),
        (
            "X509SVIDResponse",
            &[
                ("svids", 1, Msg, true, ".X509SVID"),
                ("crl", 2, Bytes, true, ""),
                (
                    "federated_bundles",
                    3,
                    Msg,
                    true,
                    ".X509SVIDResponse.FederatedBundlesEntry",
                ),
            ],
        ),
        (
            "X509SVID",
            &[
                ("spiffe_id", 1, Str, false, ""),
                ("x509_svid", 2, Bytes, false, ""),
                ("x509_svid_key", 3, Bytes, false, ""),
                ("bundle", 4, Bytes, false, ""),
                ("hint", 5, Str, false, ""),
            ],
        ),
        ("X509BundlesRequest", &[]),
        (
            "X509BundlesResponse",
            &[
                ("crl", 1, Bytes, true, ""),
                ("bundles", 2, Msg, true, ".X509BundlesResponse.BundlesEntry"),
            ],
        ),
        (
            "JWTSVIDRequest",
            &[
                ("audience", 1, Str, true, ""),
                ("spiffe_id", 2, Str, false, ""),
            ],
        ),
        ("JWTSVIDResponse", &[("svids", 1, Msg, true, ".JWTSVID")]),
        (
            "JWTSVID",
            &[
                ("spiffe_id", 1, Str, false, ""),
                ("svid", 2, Str, false, ""),
                ("hint", 3, Str, false, ""),
            ],
        ),
        ("JWTBundlesRequest", &[]),
        (
            "JWTBundlesResponse",
            &[("bundles", 1, Msg, true, ".JWTBundlesResponse.BundlesEntry")],
        ),
        (
            "ValidateJWTSVIDRequest",
            &[("audience", 1, Str, false, ""), ("svid", 2, Str, false, "")],
        ),
        (
            "ValidateJWTSVIDResponse",
            &[
                ("spiffe_id", 1, Str, false, ""),
                ("claims", 2, Msg, false, ".google.protobuf.Struct"),
            ],
        ),
        ("WITSVIDRequest", &[("spiffe_id", 1, Str, false, "")]),
        ("WITSVIDResponse", &[("svids", 1, Msg, true, ".WITSVID")]),
        (
            "WITSVID",
            &[
                ("spiffe_id", 1, Str, false, ""),
                ("wit_svid", 2, Str, false, ""),
                ("wit_svid_key", 3, Str, false, ""),
                ("hint", 4, Str, false, ""),
            ],
        ),
        ("WITBundlesRequest", &[]),
        (
            "WITBundlesResponse",
            &[("bundles", 1, Msg, true, ".WITBundlesResponse.BundlesEntry")],
        ),
    ];

    let declared: BTreeSet<&str> = workload.message_type.iter().map(|m| m.name()).collect();
    let listed: BTreeSet<&str> = expected.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, listed, "messages declared in workload.proto");

    for (name, fields) in expected {
        assert_fields(message(workload, name), fields);
    }

    assert_map(
        message(workload, "X509SVIDResponse"),
        "federated_bundles",
        Str,
        Bytes,
    );
    assert_map(
        message(workload, "X509BundlesResponse"),
        "bundles",
        Str,
        Bytes,
    );
    assert_map(
        message(workload, "JWTBundlesResponse"),
        "bundles",
        Str,
        Bytes,
    );
    assert_map(message(workload, "WITBundlesResponse"), "bundles", Str, Str);
}

// === SPIRE admin API ===

#[test]
fn spire_services_have_spire_names() {
    let set = descriptor_set();
    let cases = [
        (
            "spire/api/server/entry/v1/entry.proto",
            "Entry",
            "spire.api.server.entry.v1.Entry",
            vec![
                "CountEntries",
                "ListEntries",
                "GetEntry",
                "BatchCreateEntry",
                "BatchUpdateEntry",
                "BatchDeleteEntry",
                "GetAuthorizedEntries",
                "SyncAuthorizedEntries",
            ],
        ),
        (
            "spire/api/server/agent/v1/agent.proto",
            "Agent",
            "spire.api.server.agent.v1.Agent",
            vec![
                "CountAgents",
                "ListAgents",
                "GetAgent",
                "DeleteAgent",
                "BanAgent",
                "AttestAgent",
                "RenewAgent",
                "CreateJoinToken",
                "PostStatus",
            ],
        ),
        (
            "spire/api/server/bundle/v1/bundle.proto",
            "Bundle",
            "spire.api.server.bundle.v1.Bundle",
            vec![
                "CountBundles",
                "GetBundle",
                "AppendBundle",
                "PublishJWTAuthority",
                "PublishWITAuthority",
                "ListFederatedBundles",
                "GetFederatedBundle",
                "BatchCreateFederatedBundle",
                "BatchUpdateFederatedBundle",
                "BatchSetFederatedBundle",
                "BatchDeleteFederatedBundle",
            ],
        ),
        (
            "spire/api/server/svid/v1/svid.proto",
            "SVID",
            "spire.api.server.svid.v1.SVID",
            vec![
                "MintX509SVID",
                "MintJWTSVID",
                "MintWITSVID",
                "BatchNewX509SVID",
                "NewJWTSVID",
                "BatchNewWITSVID",
                "NewDownstreamX509CA",
            ],
        ),
        (
            "spire/api/server/trustdomain/v1/trustdomain.proto",
            "TrustDomain",
            "spire.api.server.trustdomain.v1.TrustDomain",
            vec![
                "ListFederationRelationships",
                "GetFederationRelationship",
                "BatchCreateFederationRelationship",
                "BatchUpdateFederationRelationship",
                "BatchDeleteFederationRelationship",
                "RefreshBundle",
            ],
        ),
    ];
    for (path, service, full_name, methods) in cases {
        let f = file(&set, path);
        let svc = f
            .service
            .iter()
            .find(|s| s.name() == service)
            .unwrap_or_else(|| panic!("{service} missing from {path}"));
        assert_eq!(format!("{}.{}", f.package(), svc.name()), full_name);
        let got: Vec<&str> = svc.method.iter().map(|m| m.name()).collect();
        assert_eq!(got, methods, "methods of {full_name}");
    }

    // The bidirectional attestation stream is the one streaming shape tooling depends on.
    let agent = file(&set, "spire/api/server/agent/v1/agent.proto");
    assert_service(
        agent,
        "Agent",
        "spire.api.server.agent.v1.Agent",
        &[
            (
                "CountAgents",
                "CountAgentsRequest",
                "CountAgentsResponse",
                false,
                false,
            ),
            (
                "ListAgents",
                "ListAgentsRequest",
                "ListAgentsResponse",
                false,
                false,
            ),
            (
                "GetAgent",
                "GetAgentRequest",
                ".spire.api.types.Agent",
                false,
                false,
            ),
            (
                "DeleteAgent",
                "DeleteAgentRequest",
                ".google.protobuf.Empty",
                false,
                false,
            ),
            (
                "BanAgent",
                "BanAgentRequest",
                ".google.protobuf.Empty",
                false,
                false,
            ),
            (
                "AttestAgent",
                "AttestAgentRequest",
                "AttestAgentResponse",
                true,
                true,
            ),
            (
                "RenewAgent",
                "RenewAgentRequest",
                "RenewAgentResponse",
                false,
                false,
            ),
            (
                "CreateJoinToken",
                "CreateJoinTokenRequest",
                ".spire.api.types.JoinToken",
                false,
                false,
            ),
            (
                "PostStatus",
                "PostStatusRequest",
                "PostStatusResponse",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn spire_types_keep_spire_field_numbers() {
    let set = descriptor_set();

    let entry = file(&set, "spire/api/types/entry.proto");
    assert_eq!(entry.package(), "spire.api.types");
    assert_numbers(
        message(entry, "Entry"),
        &[
            ("id", 1),
            ("spiffe_id", 2),
            ("parent_id", 3),
            ("selectors", 4),
            ("x509_svid_ttl", 5),
            ("federates_with", 6),
            ("admin", 7),
            ("downstream", 8),
            ("expires_at", 9),
            ("dns_names", 10),
            ("revision_number", 11),
            ("store_svid", 12),
            ("jwt_svid_ttl", 13),
            ("hint", 14),
            ("created_at", 15),
            ("additional_attributes", 16),
        ],
    );
    let mask = message(entry, "EntryMask");
    let entry_numbers: BTreeMap<&str, i32> = message(entry, "Entry")
        .field
        .iter()
        .filter(|f| f.name() != "id")
        .map(|f| (f.name(), f.number()))
        .collect();
    let mask_numbers: BTreeMap<&str, i32> =
        mask.field.iter().map(|f| (f.name(), f.number())).collect();
    assert_eq!(mask_numbers, entry_numbers, "EntryMask mirrors Entry");

    let spiffeid = file(&set, "spire/api/types/spiffeid.proto");
    assert_numbers(
        message(spiffeid, "SPIFFEID"),
        &[("trust_domain", 1), ("path", 2)],
    );

    let selector = file(&set, "spire/api/types/selector.proto");
    assert_numbers(message(selector, "Selector"), &[("type", 1), ("value", 2)]);

    let agent = file(&set, "spire/api/types/agent.proto");
    assert_numbers(
        message(agent, "Agent"),
        &[
            ("id", 1),
            ("attestation_type", 2),
            ("x509svid_serial_number", 3),
            ("x509svid_expires_at", 4),
            ("selectors", 5),
            ("banned", 6),
            ("can_reattest", 7),
            ("agent_version", 8),
        ],
    );

    let bundle = file(&set, "spire/api/types/bundle.proto");
    assert_numbers(
        message(bundle, "Bundle"),
        &[
            ("trust_domain", 1),
            ("x509_authorities", 2),
            ("jwt_authorities", 3),
            ("refresh_hint", 4),
            ("sequence_number", 5),
            ("wit_authorities", 6),
        ],
    );
    assert_numbers(
        message(bundle, "X509Certificate"),
        &[("asn1", 1), ("tainted", 2)],
    );
    assert_numbers(
        message(bundle, "JWTKey"),
        &[
            ("public_key", 1),
            ("key_id", 2),
            ("expires_at", 3),
            ("tainted", 4),
        ],
    );

    let x509 = file(&set, "spire/api/types/x509svid.proto");
    assert_numbers(
        message(x509, "X509SVID"),
        &[("cert_chain", 1), ("id", 2), ("expires_at", 3), ("hint", 4)],
    );
    let jwt = file(&set, "spire/api/types/jwtsvid.proto");
    assert_numbers(
        message(jwt, "JWTSVID"),
        &[
            ("token", 1),
            ("id", 2),
            ("expires_at", 3),
            ("issued_at", 4),
            ("hint", 5),
        ],
    );
    let status = file(&set, "spire/api/types/status.proto");
    assert_numbers(message(status, "Status"), &[("code", 1), ("message", 2)]);
    let token = file(&set, "spire/api/types/jointoken.proto");
    assert_numbers(
        message(token, "JoinToken"),
        &[("value", 1), ("expires_at", 2)],
    );

    let svid = file(&set, "spire/api/server/svid/v1/svid.proto");
    assert_numbers(
        message(svid, "NewX509SVIDParams"),
        &[("entry_id", 1), ("csr", 2)],
    );
    assert_numbers(
        message(svid, "MintJWTSVIDRequest"),
        &[("id", 1), ("audience", 2), ("ttl", 3)],
    );

    let entry_api = file(&set, "spire/api/server/entry/v1/entry.proto");
    assert_numbers(
        message(entry_api, "ListEntriesRequest"),
        &[
            ("filter", 1),
            ("output_mask", 2),
            ("page_size", 3),
            ("page_token", 4),
        ],
    );
}

// === Tessera's own services ===

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
