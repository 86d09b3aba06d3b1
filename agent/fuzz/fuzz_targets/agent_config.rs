//! Fuzzes the agent's configuration: TOML text (and, from a first line `#! a|b|c|d`, the
//! `--trustDomain`, `--serverAddress`, `--logLevel` and `--joinToken` flags) to a validated
//! `AgentConfig`. No input may panic; validation is deterministic; a parse error names the
//! file; an accepted configuration keeps what `AgentConfig` promises: at least one server and
//! no duplicates, each address printing and parsing back to itself, never both a bootstrap
//! bundle and insecure bootstrap, backoff within its bounds, positive caches and limits.

#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_agent::config::{parse_file, AgentConfig, ConfigError, Overrides, ServerAddress};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut overrides = Overrides::default();
    if let Some(flags) = text.lines().next().and_then(|l| l.strip_prefix("#! ")) {
        let mut it = flags.split('|').map(str::to_owned);
        overrides.trust_domain = it.next();
        overrides.server_address = it.next().into_iter().collect();
        overrides.log_level = it.next();
        overrides.join_token = it.next();
    }

    let path = Path::new("/fuzz/agent.toml");
    let file = match parse_file(path, text) {
        Ok(file) => file,
        Err(e @ ConfigError::Parse { .. }) => {
            assert!(e.to_string().contains("/fuzz/agent.toml"), "{e}");
            return;
        }
        Err(e) => panic!("parse_file gave a non-parse error: {e}"),
    };
    let first = AgentConfig::from_file(file.clone(), &overrides);
    let second = AgentConfig::from_file(file.clone(), &overrides);
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "validation is deterministic"
    );
    match first {
        Ok(c) => {
            assert!(!c.servers.is_empty());
            let distinct: HashSet<&ServerAddress> = c.servers.iter().collect();
            assert_eq!(distinct.len(), c.servers.len(), "no duplicate servers");
            for s in &c.servers {
                assert_ne!(s.port(), 0);
                let again = ServerAddress::parse(&s.to_string(), 1);
                assert_eq!(again.as_ref(), Ok(s), "{s} prints and parses back");
            }
            assert!(!(c.insecure_bootstrap && c.trust_bundle_path.is_some()));
            assert!(!c.sync.backoff_initial.is_zero());
            assert!(c.sync.backoff_initial <= c.sync.backoff_max);
            assert!(c.rotation.batch_size > 0);
            assert!(c.x509_svid_cache_max_size > 0 && c.jwt_svid_cache_max_size > 0);
            assert!(!c.data_dir.as_os_str().is_empty() && !c.socket_path.as_os_str().is_empty());
            // The join token never shows in the configuration's Debug form (logged at start):
            // whatever of it shows, shows as well when no token is given.
            if let Some(token) = overrides.join_token.as_deref().filter(|t| t.len() >= 8) {
                let shown = format!("{c:?}");
                let without = Overrides {
                    join_token: None,
                    ..overrides.clone()
                };
                if shown.contains(token) {
                    if let Ok(plain) = AgentConfig::from_file(file.clone(), &without) {
                        assert!(format!("{plain:?}").contains(token), "join token in Debug");
                    }
                }
            }
        }
        Err(ConfigError::Invalid { key, .. }) => {
            assert!(!key.is_empty());
            assert!(
                key.starts_with("--") || key.contains('.'),
                "a key or flag: {key}"
            );
        }
        Err(_) => {}
    }
});
