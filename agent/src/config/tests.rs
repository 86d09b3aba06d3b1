use std::path::Path;

use super::*;
use crate::attestor::unix::WorkloadSizeLimit;

fn addresses(c: &AgentConfig) -> Vec<String> {
    c.servers.iter().map(ToString::to_string).collect()
}

fn load_text(text: &str) -> Result<AgentConfig, ConfigError> {
    let file = parse_file(Path::new("test.toml"), text)?;
    AgentConfig::from_file(file, &Overrides::default())
}

#[test]
fn no_file_gives_spire_defaults() {
    let c = AgentConfig::load(None, &Overrides::default()).unwrap();
    assert_eq!(c.trust_domain.as_str(), "example.org");
    assert_eq!(
        c.socket_path,
        Path::new("/tmp/tessera-agent/public/api.sock")
    );
    assert_eq!(c.data_dir, Path::new("./.data"));
    assert_eq!(addresses(&c), ["127.0.0.1:8081"]);
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.trust_bundle_path, None);
    assert!(!c.insecure_bootstrap);
    assert_eq!(c.node_attestor, None);
    assert_eq!(c.workload_x509_svid_key_type, SvidKeyType::EcP256);
    assert_eq!(c.rotation.jitter_percent, 10);
    assert!(!c.unix_attestor.discover_workload_path);
    assert_eq!(c.health_addr, None);
    assert_eq!(c.limits, Limits::default());
}

#[test]
fn the_documented_example_file_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent.toml");
    let documented = AgentConfig::load(Some(&path), &Overrides::default()).unwrap();
    let defaults = AgentConfig::load(None, &Overrides::default()).unwrap();
    assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
}

#[test]
fn every_documented_key_is_known() {
    // Uncommenting every `# key = value` line of the example must still parse: the comments
    // document real keys, not stale ones.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") || rest.starts_with('[') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = parse_file(&path, &uncommented).unwrap();
    assert!(file.node_attestor.x509pop.is_some());
}

#[test]
fn unknown_keys_are_named() {
    let err = load_text("[agent]\ntrust_domian = \"a.org\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("trust_domian"), "{err}");
    let err = load_text("[agentt]\n").unwrap_err().to_string();
    assert!(err.contains("agentt"), "{err}");
    let err = load_text("[workload_attestor.unix]\ndiscover_workload_paths = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("discover_workload_paths"), "{err}");
    let err = load_text("[limits]\nmax_stream = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_stream"), "{err}");
}

#[test]
fn flags_override_the_file() {
    let file = parse_file(
        Path::new("t.toml"),
        "[agent]\ntrust_domain = \"file.org\"\nserver_port = 1\njoin_token = \"file-token\"\nsocket_path = \"/file.sock\"\n",
    )
    .unwrap();
    let o = Overrides {
        trust_domain: Some("flag.org".into()),
        server_port: Some(2),
        join_token: Some("flag-token".into()),
        socket_path: Some("/flag.sock".into()),
        data_dir: Some("/flag-data".into()),
        log_level: Some("debug".into()),
        ..Overrides::default()
    };
    let c = AgentConfig::from_file(file.clone(), &o).unwrap();
    assert_eq!(c.trust_domain.as_str(), "flag.org");
    assert_eq!(addresses(&c), ["127.0.0.1:2"]);
    assert_eq!(
        c.node_attestor,
        Some(NodeAttestorConfig::JoinToken("flag-token".into()))
    );
    assert_eq!(c.socket_path, Path::new("/flag.sock"));
    assert_eq!(c.data_dir, Path::new("/flag-data"));
    assert_eq!(c.log_level, LogLevel::Debug);
    let c = AgentConfig::from_file(file, &Overrides::default()).unwrap();
    assert_eq!(c.trust_domain.as_str(), "file.org");
    assert_eq!(
        c.node_attestor,
        Some(NodeAttestorConfig::JoinToken("file-token".into()))
    );
}

#[test]
fn values_are_checked_naming_key_or_flag() {
    let err = load_text("[agent]\ntrust_domain = \"Ex.org\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("agent.trust_domain \"Ex.org\": "), "{err}");
    let o = Overrides {
        trust_domain: Some("bad domain".into()),
        ..Overrides::default()
    };
    let err = AgentConfig::load(None, &o).unwrap_err().to_string();
    assert!(err.starts_with("--trustDomain \"bad domain\": "), "{err}");
    let err = load_text("[agent]\nlog_level = \"loud\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("agent.log_level \"loud\""), "{err}");
    let err = load_text("[agent]\nserver_port = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("agent.server_port"), "{err}");
    let err = load_text("[agent]\nworkload_x509_svid_key_type = \"dsa-1024\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("agent.workload_x509_svid_key_type \"dsa-1024\"")
            && err.contains("\"ec-p256\" (default)")
            && err.contains("\"rsa-2048\""),
        "{err}"
    );
    for (name, key_type) in [
        ("ec-p384", SvidKeyType::EcP384),
        ("rsa-2048", SvidKeyType::Rsa2048),
        ("rsa-4096", SvidKeyType::Rsa4096),
    ] {
        let c = load_text(&format!(
            "[agent]\nworkload_x509_svid_key_type = \"{name}\"\n"
        ))
        .unwrap();
        assert_eq!(c.workload_x509_svid_key_type, key_type);
    }
    let err = load_text("[agent]\ntrust_bundle_path = \"/b.pem\"\ninsecure_bootstrap = true\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("insecure_bootstrap") && err.contains("/b.pem"),
        "{err}"
    );
    let err = load_text("[limits]\nmax_streams_per_uid = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("limits.max_streams_per_uid"), "{err}");
    let err = load_text("[limits]\nattestation_timeout = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attestation_timeout") || err.contains("soon"),
        "{err}"
    );
    let err = load_text("[rotation]\njitter_percent = 60\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("rotation.jitter_percent"), "{err}");
    let err = load_text("[sync]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("sync.backoff_max"), "{err}");
}

#[test]
fn attestors_and_limits_from_the_file() {
    let c = load_text(
        "[workload_attestor.unix]\ndiscover_workload_path = true\nworkload_size_limit = -1\n\
         [limits]\nmax_streams_per_uid = 3\nattestation_timeout = \"1500ms\"\n\
         [node_attestor.x509pop]\nprivate_key_path = \"/k.pem\"\ncertificate_path = \"/c.pem\"\n\
         [health_checks]\nlistener_enabled = true\nbind_port = 9999\n",
    )
    .unwrap();
    assert!(c.unix_attestor.discover_workload_path);
    assert_eq!(
        c.unix_attestor.workload_size_limit,
        WorkloadSizeLimit::Never
    );
    assert_eq!(c.limits.max_streams_per_uid, 3);
    assert_eq!(c.limits.attestation_timeout, Duration::from_millis(1500));
    assert_eq!(
        c.node_attestor,
        Some(NodeAttestorConfig::X509Pop(X509PopConfig {
            private_key_path: "/k.pem".into(),
            certificate_path: "/c.pem".into(),
            intermediates_path: None,
        }))
    );
    assert_eq!(
        c.health_addr.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9999")
    );
    assert!(!format!("{:?}", NodeAttestorConfig::JoinToken("secret".into())).contains("secret"));
}

#[test]
fn server_address_is_a_string_or_a_list() {
    // SPIRE's form: one host, and the port apart.
    let c =
        load_text("[agent]\nserver_address = \"spire.example.org\"\nserver_port = 443\n").unwrap();
    assert_eq!(addresses(&c), ["spire.example.org:443"]);
    let c = load_text(
        "[agent]\nserver_address = [\"10.0.0.1:8081\", \"10.0.0.2\", \"[2001:db8::2]:9000\"]\nserver_port = 7000\n",
    )
    .unwrap();
    assert_eq!(
        addresses(&c),
        ["10.0.0.1:8081", "10.0.0.2:7000", "[2001:db8::2]:9000"]
    );
    let c = load_text("[agent]\nserver_address = \"10.0.0.1, 10.0.0.2\"\n").unwrap();
    assert_eq!(addresses(&c), ["10.0.0.1:8081", "10.0.0.2:8081"]);
}

#[test]
fn repeated_and_comma_flags_replace_the_file_list() {
    let file = parse_file(
        Path::new("t.toml"),
        "[agent]\nserver_address = [\"file-a\", \"file-b\"]\n",
    )
    .unwrap();
    let o = Overrides {
        server_address: vec!["10.0.0.1:1".into(), "10.0.0.2,10.0.0.3:3".into()],
        server_port: Some(2),
        ..Overrides::default()
    };
    let c = AgentConfig::from_file(file.clone(), &o).unwrap();
    assert_eq!(addresses(&c), ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:3"]);
    // --serverPort alone applies to the file's addresses.
    let o = Overrides {
        server_port: Some(2),
        ..Overrides::default()
    };
    let c = AgentConfig::from_file(file, &o).unwrap();
    assert_eq!(addresses(&c), ["file-a:2", "file-b:2"]);
}

#[test]
fn bad_server_addresses_name_the_entry_and_the_fix() {
    let err = load_text("[agent]\nserver_address = [\"10.0.0.1:8081\", \"10.0.0.2:80o1\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("agent.server_address[1] \"10.0.0.2:80o1\": the port \"80o1\" is not a number from 1 to 65535"),
        "{err}"
    );
    let err = load_text("[agent]\nserver_address = []\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("agent.server_address \"\": list at least one server"),
        "{err}"
    );
    let err = load_text("[agent]\nserver_address = 8081\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server_address") && err.contains("list of them"),
        "{err}"
    );
    let o = Overrides {
        server_address: vec!["https://10.0.0.1:8081".into()],
        ..Overrides::default()
    };
    let err = AgentConfig::load(None, &o).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "--serverAddress \"https://10.0.0.1:8081\": write host or host:port without a scheme"
        ),
        "{err}"
    );
    let o = Overrides {
        server_address: vec!["a.org,".into()],
        ..Overrides::default()
    };
    let err = AgentConfig::load(None, &o).unwrap_err().to_string();
    assert!(err.contains("empty server address"), "{err}");
}

#[test]
fn x509_svid_cache_max_size_is_spires_key_default_and_zero() {
    let size = |text: &str| load_text(text).map(|c| c.x509_svid_cache_max_size);
    assert_eq!(
        AgentConfig::load(None, &Overrides::default())
            .unwrap()
            .x509_svid_cache_max_size,
        1000
    );
    assert_eq!(size("[agent]\nx509_svid_cache_max_size = 5").unwrap(), 5);
    // SPIRE reads 0 (its unset value) as the default.
    assert_eq!(size("[agent]\nx509_svid_cache_max_size = 0").unwrap(), 1000);
    let err = size("[agent]\nx509_svid_cache_max_size = -5")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("agent.x509_svid_cache_max_size")
            && err.contains("-5")
            && err.contains("must not be negative"),
        "{err}"
    );
}

#[test]
fn log_format_is_text_by_default_json_on_request_and_refused_otherwise() {
    let c = AgentConfig::load(None, &Overrides::default()).unwrap();
    assert_eq!(c.log_format, LogFormat::Text);
    let c = load_text("[agent]\nlog_format = \"json\"\n").unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    // SPIRE accepts any case.
    let c = load_text("[agent]\nlog_format = \"JSON\"\n").unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    let err = load_text("[agent]\nlog_format = \"xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("agent.log_format \"xml\""), "{err}");
    assert!(err.contains("\"text\" or \"json\""), "{err}");
}

#[test]
fn telemetry_is_off_by_default_and_read_from_its_section() {
    let c = AgentConfig::load(None, &Overrides::default()).unwrap();
    assert!(!c.telemetry.enabled());
    assert_eq!(c.telemetry.service_name, "tessera-agent");
    let c = load_text(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"node-7\"\n\
         sampling_ratio = 0.0\n[telemetry.resource_attributes]\n\"host.name\" = \"n7\"\n",
    )
    .unwrap();
    assert!(c.telemetry.enabled());
    assert_eq!(c.telemetry.service_name, "node-7");
    assert_eq!(c.telemetry.sampling_ratio, 0.0);
    assert_eq!(c.telemetry.resource_attributes["host.name"], "n7");
    for (text, key) in [
        (
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\nsampling_ratio = -1.0\n",
            "telemetry.sampling_ratio",
        ),
        (
            "[telemetry.resource_attributes]\n\"service.name\" = \"x\"\n",
            "telemetry.resource_attributes.\"service.name\"",
        ),
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
}
