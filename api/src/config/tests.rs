use std::path::Path;

use tessera_actors::server::authority::{AuthoritySettings, SubjectName};
use tessera_actors::server::keys::KeyType;

use super::*;

fn load_text(text: &str) -> Result<Config, ConfigError> {
    let file = parse_file(Path::new("test.toml"), text)?;
    Config::from_file(file, &Overrides::default())
}

#[test]
fn no_file_gives_spire_defaults() {
    let c = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(c.trust_domain.as_str(), "example.org");
    assert_eq!(
        c.socket_path,
        Path::new("/tmp/tessera-server/private/api.sock")
    );
    assert_eq!(c.data_dir, Path::new("./.data"));
    assert_eq!(c.agent_api_addr.to_string(), "0.0.0.0:8081");
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.authority.ca.ttl, Duration::from_secs(86_400));
    assert_eq!(c.authority.jwt_key_ttl, Duration::from_secs(86_400));
    assert_eq!(c.authority.signer.x509_svid_ttl, Duration::from_secs(3_600));
    assert_eq!(c.authority.signer.jwt_svid_ttl, Duration::from_secs(300));
    assert_eq!(c.authority.ca.key_type, KeyType::EcP256);
    assert_eq!(c.authority.jwt_key_type, KeyType::EcP256);
    assert_eq!(c.authority.ca.subject, SubjectName::spiffe_ca());
    assert_eq!(c.authority.ca.upstream, None);
    assert_eq!(c.key_manager, KeyManagerKind::Disk);
    assert_eq!(
        c.authority,
        {
            let mut spire = AuthoritySettings::new(c.trust_domain.clone());
            spire.signer.max_concurrent_jobs = c.authority.signer.max_concurrent_jobs;
            spire
        },
        "the defaults are the authority's own (SPIRE's)"
    );
    assert_eq!(c.api.default_join_token_ttl, Duration::from_secs(600));
    assert_eq!(c.health_addr, None);
    assert_eq!(c.open_check, OpenCheck::FullChain);
    assert_eq!(c.x509pop_ca_bundle_path, None);
}

#[test]
fn the_documented_example_file_equals_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
    let documented = Config::load(Some(&path), &Overrides::default()).unwrap();
    let defaults = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
}

#[test]
fn unknown_keys_are_named() {
    let err = load_text("[server]\ntrust_domian = \"a.org\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("trust_domian"), "{err}");
    let err = load_text("[serverr]\n").unwrap_err().to_string();
    assert!(err.contains("serverr"), "{err}");
    let err = load_text("[limits.entry]\nmax_selector = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_selector"), "{err}");
}

#[test]
fn bad_trust_domain_names_key_value_and_rule() {
    let err = load_text("[server]\ntrust_domain = \"Ex.org\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("server.trust_domain \"Ex.org\": "), "{err}");
    assert!(err.contains("lowercase"), "{err}");
    let o = Overrides {
        trust_domain: Some("bad domain".into()),
        ..Overrides::default()
    };
    let err = Config::load(None, &o).unwrap_err().to_string();
    assert!(err.starts_with("--trustDomain \"bad domain\": "), "{err}");
}

#[test]
fn durations_take_spire_strings_and_seconds() {
    let c = load_text("[server]\nca_ttl = \"48h\"\ndefault_x509_svid_ttl = 7200\ndefault_jwt_svid_ttl = \"1m30s\"\n").unwrap();
    assert_eq!(c.authority.ca.ttl, Duration::from_secs(48 * 3600));
    assert_eq!(c.authority.signer.x509_svid_ttl, Duration::from_secs(7200));
    assert_eq!(c.authority.signer.jwt_svid_ttl, Duration::from_secs(90));
    let err = load_text("[server]\nca_ttl = \"24 hours\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca_ttl") && err.contains("unit"), "{err}");
}

#[test]
fn ca_subject_and_signing_limits_reach_the_authority() {
    let c = load_text(
        "[server]\njwt_key_type = \"ec-p384\"\nrotation_check_interval = \"2s\"\n\
         [server.ca_subject]\ncountry = []\norganization = [\"Acme\"]\ncommon_name = \"Acme CA\"\n\
         [limits]\nmax_signing_queue = 7\nmax_signing_batch = 3\nmax_signing_jobs = 1\nmax_audiences = 2\n",
    )
    .unwrap();
    assert_eq!(c.authority.jwt_key_type, KeyType::EcP384);
    assert_eq!(c.authority.tick_interval, Some(Duration::from_secs(2)));
    assert_eq!(c.authority.ca.subject.country, "");
    assert_eq!(c.authority.ca.subject.organization, "Acme");
    assert_eq!(
        c.authority.ca.subject.common_name.as_deref(),
        Some("Acme CA")
    );
    let s = &c.authority.signer;
    assert_eq!(
        (
            s.max_queued,
            s.max_batch,
            s.max_concurrent_jobs,
            s.max_audiences
        ),
        (7, 3, 1, 2)
    );
}

#[test]
fn signing_priority_keys_reach_the_signer_and_a_reserve_over_half_the_queue_is_refused() {
    let c = load_text(
        "[limits]
max_signing_queue = 100
signing_on_demand_reserve = 50
max_tracked_svids = 9
",
    )
    .unwrap();
    assert_eq!(c.authority.signer.on_demand_reserve, 50);
    assert_eq!(c.actors.max_tracked_svids, 9);
    let err = load_text(
        "[limits]
max_signing_queue = 100
signing_on_demand_reserve = 51
",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("limits.signing_on_demand_reserve"), "{err}");
    assert!(err.contains("half of limits.max_signing_queue"), "{err}");
    let err = load_text(
        "[limits]
max_tracked_svids = 0
",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("limits.max_tracked_svids"), "{err}");
}

#[test]
fn svid_ttl_must_fit_in_the_ca() {
    let err = load_text("[server]\nca_ttl = \"1h\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.default_x509_svid_ttl"), "{err}");
}

#[test]
fn overrides_win() {
    let o = Overrides {
        trust_domain: Some("b.org".into()),
        data_dir: Some("/d".into()),
        socket_path: Some("/s.sock".into()),
        bind_address: Some("127.0.0.1".into()),
        bind_port: Some(0),
        log_level: Some("debug".into()),
        log_format: Some("json".into()),
        store_url: Some("postgres://t@127.0.0.1:5432/tessera".into()),
        server_id: Some("server-b".into()),
    };
    let c = Config::from_file(
        parse_file(Path::new("t"), "[server]\ntrust_domain = \"a.org\"\n").unwrap(),
        &o,
    )
    .unwrap();
    assert_eq!(c.trust_domain.as_str(), "b.org");
    assert_eq!(c.data_dir, Path::new("/d"));
    assert_eq!(c.socket_path, Path::new("/s.sock"));
    assert_eq!(c.agent_api_addr.to_string(), "127.0.0.1:0");
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(c.log_dir(), Path::new("/d/log"));
    assert_eq!(c.server_id.as_deref(), Some("server-b"));
    assert!(c.store.is_shared(), "--storeURL selects the PostgreSQL log");
}

#[test]
fn sections_configure_their_parts() {
    let c = load_text(
        "[key_manager]\ntype = \"memory\"\n\
         [upstream_authority.disk]\ncert_file_path = \"/ca.pem\"\nkey_file_path = \"/ca.key\"\n\
         [limits]\nmax_entries = 5\n[limits.entry]\nmax_selectors = 3\n\
         [log]\nsnapshot_every = 7\nopen_check = \"from_latest_snapshot\"\n\
         [health_checks]\nlistener_enabled = true\nbind_port = 9999\n\
         [node_attestor.x509pop]\nca_bundle_path = \"/x509pop-ca.pem\"\n",
    )
    .unwrap();
    assert_eq!(c.key_manager, KeyManagerKind::Memory);
    let up = c.authority.ca.upstream.clone().unwrap();
    assert_eq!(up.cert_file_path, Path::new("/ca.pem"));
    assert_eq!(up.bundle_file_path, None);
    assert_eq!(c.actors.max_entries, 5);
    assert_eq!(c.actors.entry_limits.max_selectors, 3);
    assert_eq!(c.actors.snapshot_every, 7);
    let settings = c.server_settings(
        std::sync::Arc::new(tessera_actors::server::keys::MemoryKeyManager::default()),
        "s1",
    );
    assert_eq!(settings.max_entries, 5);
    assert_eq!(settings.authority.ca, c.authority.ca);
    let owner = settings.authority.owner.unwrap();
    assert_eq!(owner.server_id, "s1");
    assert!(
        owner.adopt_unowned,
        "a server on its own sled log adopts untagged CAs"
    );
    assert_eq!(c.open_check, OpenCheck::FromLatestSnapshot);
    assert_eq!(c.health_addr.unwrap().to_string(), "127.0.0.1:9999");
    assert_eq!(
        c.x509pop_ca_bundle_path.as_deref(),
        Some(Path::new("/x509pop-ca.pem"))
    );
}

#[test]
fn bad_values_name_their_key() {
    for (text, key) in [
        ("[server]\nlog_level = \"loud\"\n", "server.log_level"),
        (
            "[server]\nbind_address = \"nowhere\"\n",
            "server.bind_address",
        ),
        ("[server]\nca_key_type = \"dsa\"\n", "server.ca_key_type"),
        ("[key_manager]\ntype = \"vault\"\n", "key_manager.type"),
        ("[limits]\nmax_batch_size = 0\n", "limits.max_batch_size"),
        (
            "[limits]\ndefault_page_size = 10\nmax_page_size = 5\n",
            "limits.default_page_size",
        ),
        ("[log]\nopen_check = \"never\"\n", "log.open_check"),
        ("[server]\njoin_token_ttl = 0\n", "server.join_token_ttl"),
        ("[server]\nca_ttl = \"30s\"\n", "server.ca_ttl"),
        (
            "[server.ca_subject]\ncountry = [\"US\", \"FR\"]\n",
            "server.ca_subject.country",
        ),
        (
            "[limits]\nmax_signing_queue = 0\n",
            "limits.max_signing_queue",
        ),
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
    let err = load_text("[server]\nbind_port = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bind_port"), "{err}");
}

#[test]
fn telemetry_is_off_by_default_and_read_from_its_section() {
    let c = Config::load(None, &Overrides::default()).unwrap();
    assert!(!c.telemetry.enabled());
    assert_eq!(c.telemetry.service_name, "tessera-server");
    assert_eq!(c.telemetry.sampling_ratio, 1.0);
    let c = load_text(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsampling_ratio = 0.5\n\
         [telemetry.resource_attributes]\n\"deployment.environment\" = \"staging\"\n",
    )
    .unwrap();
    assert!(c.telemetry.enabled());
    assert_eq!(c.telemetry.service_name, "tessera-server");
    assert_eq!(c.telemetry.sampling_ratio, 0.5);
    assert_eq!(
        c.telemetry.resource_attributes["deployment.environment"],
        "staging"
    );
    for (text, key) in [
        (
            "[telemetry]\notlp_endpoint = \"localhost:4317\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\nsampling_ratio = 2.0\n",
            "telemetry.sampling_ratio",
        ),
        (
            "[telemetry]\nservice_name = \"\"\n",
            "telemetry.service_name",
        ),
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
    let err = load_text("[telemetry]\nendpoint = \"http://a:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("endpoint"), "{err}");
}

#[test]
fn audit_checkpoints_have_defaults_and_zero_turns_a_trigger_off() {
    let c = Config::load(None, &Overrides::default()).unwrap();
    assert_eq!(c.audit.checkpoint_every_records, 1000);
    assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(600));
    let c =
        load_text("[audit]\ncheckpoint_every_records = 0\ncheckpoint_interval = \"0s\"\n").unwrap();
    assert_eq!(c.audit.checkpoint_every_records, 0);
    assert_eq!(c.audit.checkpoint_interval, Duration::ZERO);
    let c = load_text("[audit]\ncheckpoint_every_records = 50\ncheckpoint_interval = \"1h30m\"\n")
        .unwrap();
    assert_eq!(c.audit.checkpoint_every_records, 50);
    assert_eq!(c.audit.checkpoint_interval, Duration::from_secs(5400));
    let err = load_text("[audit]\ncheckpoint_interval = \"10ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("audit.checkpoint_interval \"10ms\"") && err.contains("\"0s\""),
        "{err}"
    );
    for (text, key) in [
        (
            "[audit]\ncheckpoint_every_records = -1\n",
            "checkpoint_every_records",
        ),
        (
            "[audit]\ncheckpoint_interval = \"ten minutes\"\n",
            "checkpoint_interval",
        ),
        ("[audit]\ncheckpoint_every = 5\n", "checkpoint_every"),
    ] {
        let err = load_text(text).unwrap_err().to_string();
        assert!(err.contains(key), "{text}: {err}");
    }
}
