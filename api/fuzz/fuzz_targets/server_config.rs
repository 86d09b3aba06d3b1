//! Fuzzes the server's configuration: TOML text (and, from a first line `#! a|b|c|d`, the
//! `--trustDomain`, `--bindAddress`, `--logLevel` and `--serverID` flags) to a validated
//! `Config`. No input may panic; validation is deterministic; a parse error names the file;
//! an accepted configuration keeps the rules `Config` promises (a valid trust domain, positive
//! bounds, the default page within the largest page).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tessera_identity::TrustDomain;
use tessera_server::config::{parse_file, Config, ConfigError, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut overrides = Overrides::default();
    if let Some(flags) = text.lines().next().and_then(|l| l.strip_prefix("#! ")) {
        let mut it = flags.split('|').map(str::to_owned);
        overrides.trust_domain = it.next();
        overrides.bind_address = it.next();
        overrides.log_level = it.next();
        overrides.server_id = it.next();
    }

    let path = Path::new("/fuzz/server.toml");
    let file = match parse_file(path, text) {
        Ok(file) => file,
        Err(e @ ConfigError::Parse { .. }) => {
            assert!(e.to_string().contains("/fuzz/server.toml"), "{e}");
            return;
        }
        Err(e) => panic!("parse_file gave a non-parse error: {e}"),
    };
    let first = Config::from_file(file.clone(), &overrides);
    let second = Config::from_file(file, &overrides);
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "validation is deterministic"
    );
    match first {
        Ok(c) => {
            assert_eq!(
                TrustDomain::new(c.trust_domain.as_str()).ok().as_ref(),
                Some(&c.trust_domain)
            );
            let l = &c.api;
            for v in [
                l.max_batch_size,
                l.default_page_size,
                l.max_page_size,
                l.max_audiences,
            ] {
                assert!(v > 0, "{l:?}");
            }
            assert!(l.max_request_bytes >= 1024);
            assert!(!c.actors.call_timeout.is_zero());
            assert!(l.default_page_size <= l.max_page_size);
            assert!(c.actors.max_entries > 0 && c.actors.max_in_flight > 0);
            assert!(!c.data_dir.as_os_str().is_empty() && !c.socket_path.as_os_str().is_empty());
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
