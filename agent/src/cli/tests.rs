use std::ffi::OsString;
use std::path::Path;

use clap::CommandFactory;

use super::api::{ApiCommand, FetchKind, ValidateCommand};
use super::client::socket_path;
use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(normalize_args(args.iter().map(OsString::from)))
}

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn run_flags_in_camel_kebab_and_single_dash_form() {
    for args in [
        &[
            "tessera-agent",
            "run",
            "--joinToken",
            "t",
            "--serverPort",
            "9",
            "--trustDomain",
            "a.org",
            "--insecureBootstrap",
        ][..],
        &[
            "tessera-agent",
            "run",
            "--join-token",
            "t",
            "--server-port",
            "9",
            "--trust-domain",
            "a.org",
            "--insecure-bootstrap",
        ][..],
        &[
            "tessera-agent",
            "run",
            "-joinToken",
            "t",
            "-serverPort=9",
            "-trustDomain",
            "a.org",
            "-insecureBootstrap",
        ][..],
    ] {
        let Command::Run(r) = parse(args).unwrap().command else {
            panic!("wrong verb for {args:?}")
        };
        let o = r.overrides();
        assert_eq!(o.join_token.as_deref(), Some("t"), "{args:?}");
        assert_eq!(o.server_port, Some(9), "{args:?}");
        assert_eq!(o.trust_domain.as_deref(), Some("a.org"), "{args:?}");
        assert!(o.insecure_bootstrap, "{args:?}");
    }
    let Command::Run(r) = parse(&[
        "tessera-agent",
        "run",
        "--config",
        "/c.toml",
        "--dataDir",
        "/d",
        "--serverAddress",
        "s",
        "--socketPath",
        "/s.sock",
        "--trustBundle",
        "/b.pem",
        "--logLevel",
        "debug",
    ])
    .unwrap()
    .command
    else {
        panic!("wrong verb")
    };
    assert_eq!(r.config.as_deref(), Some(Path::new("/c.toml")));
    let o = r.overrides();
    assert_eq!(o.data_dir.as_deref(), Some(Path::new("/d")));
    assert_eq!(o.server_address, ["s"]);
    assert_eq!(o.socket_path.as_deref(), Some(Path::new("/s.sock")));
    assert_eq!(o.trust_bundle_path.as_deref(), Some(Path::new("/b.pem")));
    assert_eq!(o.log_level.as_deref(), Some("debug"));
    assert!(!o.insecure_bootstrap);
}

#[test]
fn api_verbs_parse() {
    let Command::Api(ApiCommand::Fetch(f)) = parse(&[
        "tessera-agent",
        "api",
        "fetch",
        "x509",
        "--write",
        "/o",
        "-socketPath",
        "/s",
    ])
    .unwrap()
    .command
    else {
        panic!("fetch x509")
    };
    let Some(FetchKind::X509(x)) = f.kind else {
        panic!("x509")
    };
    assert_eq!(x.write.as_deref(), Some(Path::new("/o")));
    assert_eq!(x.socket.socket_path.as_deref(), Some(Path::new("/s")));

    let Command::Api(ApiCommand::Fetch(f)) =
        parse(&["tessera-agent", "api", "fetch", "--write", "/o"])
            .unwrap()
            .command
    else {
        panic!("bare fetch")
    };
    assert!(f.kind.is_none());
    assert_eq!(f.x509.write.as_deref(), Some(Path::new("/o")));

    let Command::Api(ApiCommand::Fetch(f)) = parse(&[
        "tessera-agent",
        "api",
        "fetch",
        "jwt",
        "--audience",
        "a,b",
        "--audience",
        "c",
        "--spiffeID",
        "spiffe://a.org/w",
    ])
    .unwrap()
    .command
    else {
        panic!("fetch jwt")
    };
    let Some(FetchKind::Jwt(j)) = f.kind else {
        panic!("jwt")
    };
    assert_eq!(j.audience, ["a", "b", "c"]);
    assert_eq!(j.spiffe_id.as_deref(), Some("spiffe://a.org/w"));
    assert!(
        parse(&["tessera-agent", "api", "fetch", "jwt"]).is_err(),
        "--audience is required"
    );

    let Command::Api(ApiCommand::Validate(ValidateCommand::Jwt(v))) = parse(&[
        "tessera-agent",
        "api",
        "validate",
        "jwt",
        "--audience",
        "a",
        "--svid",
        "t.o.k",
    ])
    .unwrap()
    .command
    else {
        panic!("validate jwt")
    };
    assert_eq!((v.audience.as_str(), v.svid.as_str()), ("a", "t.o.k"));
    assert!(matches!(
        parse(&["tessera-agent", "api", "watch"]).unwrap().command,
        Command::Api(ApiCommand::Watch(_))
    ));
    assert!(matches!(
        parse(&["tessera-agent", "healthcheck", "--shallow"])
            .unwrap()
            .command,
        Command::Healthcheck(_)
    ));
}

#[test]
fn socket_from_flag_then_environment_then_default() {
    let flag = Path::new("/flag.sock");
    assert_eq!(
        socket_path("v", Some(flag), Some("unix:///env.sock")).unwrap(),
        flag
    );
    assert_eq!(
        socket_path("v", None, Some("unix:///env.sock")).unwrap(),
        Path::new("/env.sock")
    );
    assert_eq!(
        socket_path("v", None, Some("unix:/env.sock")).unwrap(),
        Path::new("/env.sock")
    );
    assert_eq!(
        socket_path("v", None, Some("/plain.sock")).unwrap(),
        Path::new("/plain.sock")
    );
    assert_eq!(
        socket_path("v", None, Some("")).unwrap(),
        Path::new(crate::config::DEFAULT_SOCKET_PATH)
    );
    assert_eq!(
        socket_path("v", None, None).unwrap(),
        Path::new(crate::config::DEFAULT_SOCKET_PATH)
    );
    let err = socket_path("v", None, Some("tcp://127.0.0.1:1"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SPIFFE_ENDPOINT_SOCKET") && err.contains("unix:///"),
        "{err}"
    );
    assert!(socket_path("v", None, Some("unix://host/x")).is_err());
}

#[test]
fn normalize_leaves_values_short_flags_and_the_rest_alone() {
    let got = normalize_args(["x", "-h", "-5", "--a", "-bc", "--", "-de"].map(OsString::from));
    assert_eq!(
        got,
        ["x", "-h", "-5", "--a", "--bc", "--", "-de"].map(OsString::from)
    );
}

#[test]
fn server_address_repeats() {
    let Command::Run(r) = parse(&[
        "tessera-agent",
        "run",
        "--serverAddress",
        "10.0.0.1:8081",
        "-serverAddress",
        "10.0.0.2,10.0.0.3",
        "--server-address=10.0.0.4",
    ])
    .unwrap()
    .command
    else {
        panic!("wrong verb")
    };
    assert_eq!(
        r.overrides().server_address,
        ["10.0.0.1:8081", "10.0.0.2,10.0.0.3", "10.0.0.4"]
    );
    let Command::Run(r) = parse(&["tessera-agent", "run"]).unwrap().command else {
        panic!("wrong verb")
    };
    assert!(r.overrides().server_address.is_empty());
}
