//! The SPIFFE Workload API: no package, standard paths, standard field numbers.

use std::collections::BTreeSet;

use prost_types::field_descriptor_proto::Type;

use super::support::*;

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
