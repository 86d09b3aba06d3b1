//! SPIRE's server API: service names and the field numbers of its types.

use std::collections::BTreeMap;

use super::support::*;

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
        (
            "spire/api/server/localauthority/v1/localauthority.proto",
            "LocalAuthority",
            "spire.api.server.localauthority.v1.LocalAuthority",
            vec![
                "GetJWTAuthorityState",
                "PrepareJWTAuthority",
                "ActivateJWTAuthority",
                "TaintJWTAuthority",
                "RevokeJWTAuthority",
                "GetX509AuthorityState",
                "PrepareX509Authority",
                "ActivateX509Authority",
                "TaintX509Authority",
                "TaintX509UpstreamAuthority",
                "RevokeX509Authority",
                "RevokeX509UpstreamAuthority",
                "GetWITAuthorityState",
                "PrepareWITAuthority",
                "ActivateWITAuthority",
                "TaintWITAuthority",
                "RevokeWITAuthority",
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
fn local_authority_keeps_spire_field_numbers() {
    let set = descriptor_set();
    let f = file(
        &set,
        "spire/api/server/localauthority/v1/localauthority.proto",
    );
    assert_eq!(f.package(), "spire.api.server.localauthority.v1");
    assert_numbers(
        message(f, "AuthorityState"),
        &[
            ("authority_id", 1),
            ("expires_at", 2),
            ("upstream_authority_subject_key_id", 3),
        ],
    );
    for state in [
        "GetX509AuthorityStateResponse",
        "GetJWTAuthorityStateResponse",
    ] {
        assert_numbers(
            message(f, state),
            &[("active", 1), ("prepared", 2), ("old", 3)],
        );
    }
    for request in [
        "ActivateX509AuthorityRequest",
        "TaintX509AuthorityRequest",
        "RevokeX509AuthorityRequest",
        "ActivateJWTAuthorityRequest",
        "TaintJWTAuthorityRequest",
        "RevokeJWTAuthorityRequest",
    ] {
        assert_numbers(message(f, request), &[("authority_id", 1)]);
    }
    for request in [
        "TaintX509UpstreamAuthorityRequest",
        "RevokeX509UpstreamAuthorityRequest",
    ] {
        assert_numbers(message(f, request), &[("subject_key_id", 1)]);
    }
}
