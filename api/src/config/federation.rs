//! `[federation]` and `[limits.federation]`: the bundle endpoint this server publishes its
//! bundle on, the trust domains it federates with (SPIRE's `federation { bundle_endpoint {...}
//! federates_with "td" {...} }`, flattened into TOML tables), and the bounds of both.
//!
//! Relationships named here are created (or updated to match) at start; relationships made
//! through the API are left alone. A bootstrap bundle (`trust_domain_bundle_path`, a Tessera
//! extension) is read when the config is loaded and used only if no bundle of that trust
//! domain is held yet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tessera_actors::server::federation::{EndpointProfile, FederationSettings, Relationship};
use tessera_identity::{Bundle, BundleLimits, SpiffeId, TrustDomain};

use super::{duration, invalid, parse_ip, positive, ConfigError};
use crate::federation::endpoint::EndpointLimits;
use crate::federation::fetch::FetchLimits;
use crate::federation::refresher::RefresherSettings;

/// `[federation]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationSection {
    /// `[federation.bundle_endpoint]`; absent: no endpoint is served (SPIRE's default).
    pub bundle_endpoint: Option<BundleEndpointSection>,
    /// `[federation.federates_with."<trust domain>"]`.
    pub federates_with: BTreeMap<String, FederatesWithSection>,
}

/// `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BundleEndpointSection {
    /// Address to listen on (SPIRE: `0.0.0.0`).
    pub address: String,
    /// Port to listen on (SPIRE: 443).
    pub port: u16,
    /// `spiffe_refresh_hint` served with the bundle (SPIRE: 5m).
    #[serde(deserialize_with = "duration::deserialize")]
    pub refresh_hint: Duration,
    /// `https_spiffe` (the server's own SVID; SPIRE's default) or `https_web`.
    pub profile: String,
    /// `[federation.bundle_endpoint.https_web]`: required with `profile = "https_web"`.
    pub https_web: Option<HttpsWebSection>,
}

impl Default for BundleEndpointSection {
    fn default() -> Self {
        Self {
            address: "0.0.0.0".into(),
            port: 443,
            refresh_hint: Duration::from_secs(300),
            profile: "https_spiffe".into(),
            https_web: None,
        }
    }
}

/// `[federation.bundle_endpoint.https_web]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsWebSection {
    /// PEM certificate chain, leaf first.
    pub cert_file_path: PathBuf,
    /// PEM private key of the leaf.
    pub key_file_path: PathBuf,
}

/// `[federation.federates_with."<trust domain>"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatesWithSection {
    /// `https://host[:port]/path` of the foreign bundle endpoint.
    pub bundle_endpoint_url: String,
    /// `https_spiffe` or `https_web`.
    pub bundle_endpoint_profile: String,
    /// With `https_spiffe`: the SPIFFE ID the endpoint presents.
    pub endpoint_spiffe_id: Option<String>,
    /// A bundle of the trust domain to start from (needed by `https_spiffe` the first time).
    pub trust_domain_bundle_path: Option<PathBuf>,
    /// `pem` (X.509 authorities only) or `spiffe` (a SPIFFE bundle JWKS). Default `pem`.
    pub trust_domain_bundle_format: Option<String>,
}

/// `[limits.federation]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationLimitsSection {
    /// Most federation relationships.
    pub max_relationships: usize,
    /// Most federated bundles.
    pub max_bundles: usize,
    /// Shortest time between two good fetches of one bundle, whatever its refresh hint.
    #[serde(deserialize_with = "duration::deserialize")]
    pub min_refresh: Duration,
    /// Longest TCP connect plus TLS handshake of a fetch.
    #[serde(deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// Longest whole fetch.
    #[serde(deserialize_with = "duration::deserialize")]
    pub fetch_timeout: Duration,
    /// Largest bundle document fetched, bytes.
    pub max_bundle_bytes: usize,
    /// Most keys in a fetched bundle.
    pub max_bundle_keys: usize,
    /// Fetches at once.
    pub max_concurrent_fetches: usize,
    /// Bundle endpoint connections open at once.
    pub endpoint_max_connections: usize,
    /// Longest a bundle endpoint connection stays open.
    #[serde(deserialize_with = "duration::deserialize")]
    pub endpoint_connection_timeout: Duration,
}

impl Default for FederationLimitsSection {
    fn default() -> Self {
        let (settings, fetch, refresh, endpoint) = (
            FederationSettings::default(),
            FetchLimits::default(),
            RefresherSettings::default(),
            EndpointLimits::default(),
        );
        Self {
            max_relationships: settings.max_relationships,
            max_bundles: settings.max_bundles,
            min_refresh: refresh.min_refresh,
            connect_timeout: fetch.connect_timeout,
            fetch_timeout: fetch.fetch_timeout,
            max_bundle_bytes: fetch.bundle.max_jwks_bytes,
            max_bundle_keys: fetch.bundle.max_keys,
            max_concurrent_fetches: refresh.max_concurrent_fetches,
            endpoint_max_connections: endpoint.max_connections,
            endpoint_connection_timeout: endpoint.connection_timeout,
        }
    }
}

/// How the bundle endpoint authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointCert {
    /// The server's own X.509-SVID.
    HttpsSpiffe,
    /// A Web PKI certificate from files.
    HttpsWeb {
        /// PEM chain.
        cert_file_path: PathBuf,
        /// PEM key.
        key_file_path: PathBuf,
    },
}

/// The checked `[federation.bundle_endpoint]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// `spiffe_refresh_hint`.
    pub refresh_hint: Duration,
    /// The certificate.
    pub cert: EndpointCert,
}

/// A relationship from the file, with its bootstrap bundle if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredRelationship {
    /// The relationship.
    pub relationship: Relationship,
    /// The bundle to start from.
    pub bootstrap: Option<Bundle>,
}

/// The checked federation configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FederationConfig {
    /// The bundle endpoint; `None`: not served.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// Relationships to create or update at start.
    pub relationships: Vec<ConfiguredRelationship>,
    /// The aggregate's bounds (`own` is set by the supervisor).
    pub settings: FederationSettings,
    /// Bounds of one fetch.
    pub fetch: FetchLimits,
    /// The refresher's timing.
    pub refresher: RefresherSettings,
    /// Bounds of the bundle endpoint.
    pub endpoint: EndpointLimits,
}

/// Checks `[federation]` and `[limits.federation]` for a server of `own`.
pub(super) fn federation(
    section: &FederationSection,
    limits: &FederationLimitsSection,
    own: &TrustDomain,
) -> Result<FederationConfig, ConfigError> {
    let l = limits;
    for (key, v) in [
        ("limits.federation.max_relationships", l.max_relationships),
        ("limits.federation.max_bundles", l.max_bundles),
        ("limits.federation.max_bundle_keys", l.max_bundle_keys),
        (
            "limits.federation.max_concurrent_fetches",
            l.max_concurrent_fetches,
        ),
        (
            "limits.federation.endpoint_max_connections",
            l.endpoint_max_connections,
        ),
    ] {
        positive(key, v)?;
    }
    if l.max_bundle_bytes < 1024 {
        return Err(invalid(
            "limits.federation.max_bundle_bytes",
            l.max_bundle_bytes,
            "must be at least 1024",
        ));
    }
    for (key, d) in [
        ("limits.federation.min_refresh", l.min_refresh),
        ("limits.federation.connect_timeout", l.connect_timeout),
        ("limits.federation.fetch_timeout", l.fetch_timeout),
        (
            "limits.federation.endpoint_connection_timeout",
            l.endpoint_connection_timeout,
        ),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "0", "must be longer than zero (e.g. \"10s\")"));
        }
    }
    let refresher = RefresherSettings {
        min_refresh: l.min_refresh,
        max_concurrent_fetches: l.max_concurrent_fetches,
        ..RefresherSettings::default()
    };
    if refresher.min_refresh > refresher.max_refresh {
        return Err(invalid(
            "limits.federation.min_refresh",
            duration::format_duration(l.min_refresh),
            "must not exceed 1h (the longest time between refreshes)",
        ));
    }
    let relationships = section
        .federates_with
        .iter()
        .map(|(td, s)| relationship(td, s, own, l))
        .collect::<Result<Vec<_>, _>>()?;
    if relationships.len() > l.max_relationships {
        return Err(invalid(
            "federation.federates_with",
            relationships.len(),
            &format!(
                "more relationships than limits.federation.max_relationships ({}); raise the limit or remove some",
                l.max_relationships
            ),
        ));
    }
    Ok(FederationConfig {
        bundle_endpoint: section.bundle_endpoint.as_ref().map(endpoint).transpose()?,
        relationships,
        settings: FederationSettings {
            own: None,
            max_relationships: l.max_relationships,
            max_bundles: l.max_bundles,
        },
        fetch: FetchLimits {
            connect_timeout: l.connect_timeout,
            fetch_timeout: l.fetch_timeout,
            bundle: BundleLimits {
                max_jwks_bytes: l.max_bundle_bytes,
                max_keys: l.max_bundle_keys,
            },
        },
        refresher,
        endpoint: EndpointLimits {
            max_connections: l.endpoint_max_connections,
            connection_timeout: l.endpoint_connection_timeout,
            ..EndpointLimits::default()
        },
    })
}

fn endpoint(s: &BundleEndpointSection) -> Result<BundleEndpointConfig, ConfigError> {
    const KEY: &str = "federation.bundle_endpoint";
    let ip = parse_ip(&format!("{KEY}.address"), &s.address)?;
    if s.refresh_hint < Duration::from_secs(1) {
        return Err(invalid(
            &format!("{KEY}.refresh_hint"),
            duration::format_duration(s.refresh_hint),
            "must be at least 1s (SPIRE's default is 5m)",
        ));
    }
    let cert = match (s.profile.as_str(), &s.https_web) {
        ("https_spiffe", None) => EndpointCert::HttpsSpiffe,
        ("https_spiffe", Some(_)) => {
            return Err(invalid(
                &format!("{KEY}.https_web"),
                "(set)",
                "is only for profile = \"https_web\"; remove it or change the profile",
            ))
        }
        ("https_web", Some(w)) => {
            for (key, p) in [("cert_file_path", &w.cert_file_path), ("key_file_path", &w.key_file_path)] {
                if p.as_os_str().is_empty() {
                    return Err(invalid(&format!("{KEY}.https_web.{key}"), "", "must not be empty"));
                }
            }
            EndpointCert::HttpsWeb {
                cert_file_path: w.cert_file_path.clone(),
                key_file_path: w.key_file_path.clone(),
            }
        }
        ("https_web", None) => {
            return Err(invalid(
                &format!("{KEY}.profile"),
                "https_web",
                "needs [federation.bundle_endpoint.https_web] with cert_file_path and key_file_path",
            ))
        }
        (other, _) => {
            return Err(invalid(
                &format!("{KEY}.profile"),
                other,
                "must be \"https_spiffe\" (the server's own SVID) or \"https_web\" (a Web PKI certificate)",
            ))
        }
    };
    Ok(BundleEndpointConfig {
        addr: SocketAddr::new(ip, s.port),
        refresh_hint: s.refresh_hint,
        cert,
    })
}

fn relationship(
    td: &str,
    s: &FederatesWithSection,
    own: &TrustDomain,
    limits: &FederationLimitsSection,
) -> Result<ConfiguredRelationship, ConfigError> {
    let key = format!("federation.federates_with.{td:?}");
    let trust_domain = TrustDomain::new(td)
        .map_err(|e| invalid(&key, td, &super::strip_input(&e.to_string(), td)))?;
    if trust_domain == *own {
        return Err(invalid(
            &key,
            td,
            "is this server's own trust domain (server.trust_domain); a server does not federate with itself",
        ));
    }
    let profile = match (s.bundle_endpoint_profile.as_str(), &s.endpoint_spiffe_id) {
        ("https_spiffe", Some(id)) => {
            let endpoint_spiffe_id = SpiffeId::new(id).map_err(|e| {
                invalid(
                    &format!("{key}.endpoint_spiffe_id"),
                    id,
                    &super::strip_input(&e.to_string(), id),
                )
            })?;
            EndpointProfile::HttpsSpiffe { endpoint_spiffe_id }
        }
        ("https_spiffe", None) => {
            return Err(invalid(
                &format!("{key}.endpoint_spiffe_id"),
                "",
                &format!("is required with bundle_endpoint_profile = \"https_spiffe\" (e.g. \"spiffe://{td}/spire/server\")"),
            ))
        }
        ("https_web", None) => EndpointProfile::HttpsWeb,
        ("https_web", Some(id)) => {
            return Err(invalid(
                &format!("{key}.endpoint_spiffe_id"),
                id,
                "is only for bundle_endpoint_profile = \"https_spiffe\"; remove it",
            ))
        }
        (other, _) => {
            return Err(invalid(
                &format!("{key}.bundle_endpoint_profile"),
                other,
                "must be \"https_spiffe\" or \"https_web\"",
            ))
        }
    };
    let relationship = Relationship {
        trust_domain: trust_domain.clone(),
        bundle_endpoint_url: s.bundle_endpoint_url.clone(),
        profile,
    };
    relationship.check().map_err(|e| {
        invalid(
            &format!("{key}.bundle_endpoint_url"),
            &s.bundle_endpoint_url,
            &e.to_string(),
        )
    })?;
    let bootstrap = match &s.trust_domain_bundle_path {
        None => {
            if s.trust_domain_bundle_format.is_some() {
                return Err(invalid(
                    &format!("{key}.trust_domain_bundle_format"),
                    s.trust_domain_bundle_format.as_deref().unwrap_or_default(),
                    "needs trust_domain_bundle_path",
                ));
            }
            None
        }
        Some(path) => Some(read_bundle(&key, path, s, trust_domain, limits)?),
    };
    Ok(ConfiguredRelationship {
        relationship,
        bootstrap,
    })
}

fn read_bundle(
    key: &str,
    path: &std::path::Path,
    s: &FederatesWithSection,
    td: TrustDomain,
    limits: &FederationLimitsSection,
) -> Result<Bundle, ConfigError> {
    let path_key = format!("{key}.trust_domain_bundle_path");
    let shown = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|e| invalid(&path_key, &shown, &format!("cannot read it: {e}")))?;
    if bytes.len() > limits.max_bundle_bytes {
        return Err(invalid(
            &path_key,
            &shown,
            "is larger than limits.federation.max_bundle_bytes",
        ));
    }
    let bad = |e: &dyn std::fmt::Display| invalid(&path_key, &shown, &e.to_string());
    let bundle = match s.trust_domain_bundle_format.as_deref().unwrap_or("pem") {
        "pem" => {
            let text = String::from_utf8(bytes).map_err(|_| bad(&"not PEM text"))?;
            Bundle::from_x509_pem(td, &text).map_err(|e| bad(&e))?
        }
        "spiffe" => Bundle::from_jwks_with_limits(
            td,
            &bytes,
            &BundleLimits {
                max_jwks_bytes: limits.max_bundle_bytes,
                max_keys: limits.max_bundle_keys,
            },
        )
        .map_err(|e| bad(&e))?,
        other => {
            return Err(invalid(
                &format!("{key}.trust_domain_bundle_format"),
                other,
                "must be \"pem\" (X.509 certificates) or \"spiffe\" (a SPIFFE bundle JWKS)",
            ))
        }
    };
    if bundle.is_empty() {
        return Err(bad(&"holds no X.509 or JWT authority"));
    }
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_file, Config, Overrides};

    fn load(text: &str) -> Result<Config, ConfigError> {
        let file = parse_file(std::path::Path::new("test.toml"), text)?;
        Config::from_file(file, &Overrides::default())
    }

    fn err(text: &str) -> String {
        load(text).unwrap_err().to_string()
    }

    #[test]
    fn absent_means_no_endpoint_no_relationships_and_default_limits() {
        let c = load("").unwrap();
        assert_eq!(
            c.federation,
            FederationConfig {
                settings: FederationSettings {
                    own: None,
                    ..FederationSettings::default()
                },
                ..FederationConfig::default()
            }
        );
        let s = c.server_settings(
            std::sync::Arc::new(tessera_actors::server::keys::MemoryKeyManager::default()),
            "s1",
        );
        assert_eq!(s.federation.max_relationships, 1_000);
    }

    #[test]
    fn endpoint_defaults_are_spires() {
        let c = load("[federation.bundle_endpoint]\n").unwrap();
        let e = c.federation.bundle_endpoint.unwrap();
        assert_eq!(e.addr, "0.0.0.0:443".parse().unwrap());
        assert_eq!(e.refresh_hint, Duration::from_secs(300));
        assert_eq!(e.cert, EndpointCert::HttpsSpiffe);
        let c = load(
            "[federation.bundle_endpoint]\naddress = \"127.0.0.1\"\nport = 8443\nrefresh_hint = \"1m\"\nprofile = \"https_web\"\n[federation.bundle_endpoint.https_web]\ncert_file_path = \"/c.pem\"\nkey_file_path = \"/k.pem\"\n",
        )
        .unwrap();
        let e = c.federation.bundle_endpoint.unwrap();
        assert_eq!(e.addr, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(e.refresh_hint, Duration::from_secs(60));
        assert!(matches!(e.cert, EndpointCert::HttpsWeb { .. }));
    }

    #[test]
    fn relationships_are_checked_key_by_key() {
        let c = load(
            "[federation.federates_with.\"partner.example\"]\nbundle_endpoint_url = \"https://127.0.0.1:8443\"\nbundle_endpoint_profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/spire/server\"\n[federation.federates_with.\"web.example\"]\nbundle_endpoint_url = \"https://web.example/bundle\"\nbundle_endpoint_profile = \"https_web\"\n",
        )
        .unwrap();
        let r = &c.federation.relationships;
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].relationship.trust_domain.as_str(), "partner.example");
        assert!(matches!(
            r[0].relationship.profile,
            EndpointProfile::HttpsSpiffe { .. }
        ));
        assert_eq!(r[1].relationship.profile, EndpointProfile::HttpsWeb);

        let base = "[federation.federates_with.\"p.example\"]\nbundle_endpoint_url = \"https://p.example\"\n";
        let e = err(&format!(
            "{base}bundle_endpoint_profile = \"https_spiffe\"\n"
        ));
        assert!(
            e.contains("federation.federates_with.\"p.example\".endpoint_spiffe_id")
                && e.contains("required"),
            "{e}"
        );
        let e = err(&format!(
            "{base}bundle_endpoint_profile = \"https_spifee\"\n"
        ));
        assert!(
            e.contains("bundle_endpoint_profile") && e.contains("must be"),
            "{e}"
        );
        let e = err(&format!("{base}bundle_endpoint_profile = \"https_web\"\nendpoint_spiffe_id = \"spiffe://p.example/x\"\n"));
        assert!(e.contains("only for"), "{e}");
        let e = err("[federation.federates_with.\"p.example\"]\nbundle_endpoint_url = \"http://p.example\"\nbundle_endpoint_profile = \"https_web\"\n");
        assert!(
            e.contains("bundle_endpoint_url") && e.contains("https://"),
            "{e}"
        );
        let e = err("[federation.federates_with.\"example.org\"]\nbundle_endpoint_url = \"https://x\"\nbundle_endpoint_profile = \"https_web\"\n");
        assert!(e.contains("own trust domain"), "{e}");
        let e = err("[federation.federates_with.\"Bad!\"]\nbundle_endpoint_url = \"https://x\"\nbundle_endpoint_profile = \"https_web\"\n");
        assert!(e.starts_with("federation.federates_with.\"Bad!\""), "{e}");
        let e = err(&format!(
            "{base}bundle_endpoint_profile = \"https_web\"\nbundle_endpont_url = \"x\"\n"
        ));
        assert!(
            e.contains("bundle_endpont_url"),
            "unknown keys are refused: {e}"
        );
        let e = err(&format!("{base}bundle_endpoint_profile = \"https_web\"\n[limits.federation]\nmax_relationships = 0\n"));
        assert!(e.contains("limits.federation.max_relationships"), "{e}");
    }

    #[test]
    fn endpoint_profiles_need_their_keys() {
        let e = err("[federation.bundle_endpoint]\nprofile = \"https_web\"\n");
        assert!(
            e.contains("federation.bundle_endpoint.profile") && e.contains("cert_file_path"),
            "{e}"
        );
        let e = err("[federation.bundle_endpoint]\nprofile = \"acme\"\n");
        assert!(
            e.contains("must be \\\"https_spiffe\\\"") || e.contains("must be \"https_spiffe\""),
            "{e}"
        );
        let e = err("[federation.bundle_endpoint]\n[federation.bundle_endpoint.https_web]\ncert_file_path = \"/c\"\nkey_file_path = \"/k\"\n");
        assert!(e.contains("only for profile"), "{e}");
        let e = err("[federation.bundle_endpoint]\naddress = \"example.com\"\n");
        assert!(e.contains("federation.bundle_endpoint.address"), "{e}");
        let e = err("[federation.bundle_endpoint]\nrefresh_hint = \"0s\"\n");
        assert!(e.contains("refresh_hint"), "{e}");
        let e = err("[federation.bundle_endpoint]\nprot = 1\n");
        assert!(e.contains("prot"), "{e}");
        let e = err("[limits.federation]\nmin_refresh = \"2h\"\n");
        assert!(e.contains("limits.federation.min_refresh"), "{e}");
    }

    #[test]
    fn the_documented_federation_tables_parse() {
        // conf/server.toml shows them commented out (federation is off by default).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut in_tables = false;
        let mut uncommented = String::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            if rest.starts_with("[federation.") {
                in_tables = true;
            }
            if in_tables && (rest.starts_with('[') || rest.contains(" = ")) {
                uncommented.push_str(rest);
                uncommented.push('\n');
            }
        }
        let file = parse_file(std::path::Path::new("server.toml"), &uncommented).unwrap();
        let f = &file.federation;
        let ep = f.bundle_endpoint.as_ref().unwrap();
        assert_eq!(
            ep,
            &BundleEndpointSection {
                https_web: ep.https_web.clone(),
                ..BundleEndpointSection::default()
            }
        );
        assert!(ep.https_web.is_some());
        let partner = &f.federates_with["partner.example"];
        assert_eq!(partner.bundle_endpoint_profile, "https_spiffe");
        assert_eq!(partner.trust_domain_bundle_format.as_deref(), Some("pem"));
    }

    #[test]
    fn bootstrap_bundles_are_read_in_either_format() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let pem_path = dir.path().join("p.pem");
        std::fs::write(&pem_path, ca.pem()).unwrap();
        let td = TrustDomain::new("p.example").unwrap();
        let jwks = Bundle::from_x509_pem(td.clone(), &ca.pem())
            .unwrap()
            .to_jwks()
            .unwrap();
        let jwks_path = dir.path().join("p.json");
        std::fs::write(&jwks_path, jwks).unwrap();
        let text = |path: &std::path::Path, format: &str| {
            format!(
                "[federation.federates_with.\"p.example\"]\nbundle_endpoint_url = \"https://p.example\"\nbundle_endpoint_profile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://p.example/spire/server\"\ntrust_domain_bundle_path = {:?}\n{format}",
                path.display().to_string()
            )
        };
        for (path, format) in [
            (&pem_path, ""),
            (&pem_path, "trust_domain_bundle_format = \"pem\"\n"),
            (&jwks_path, "trust_domain_bundle_format = \"spiffe\"\n"),
        ] {
            let c = load(&text(path, format)).unwrap();
            let b = c.federation.relationships[0].bootstrap.clone().unwrap();
            assert_eq!(b.trust_domain(), &td);
            assert_eq!(b.x509_authorities()[0].der(), ca.der().as_ref());
        }
        let e = err(&text(&jwks_path, "trust_domain_bundle_format = \"pem\"\n"));
        assert!(e.contains("trust_domain_bundle_path"), "{e}");
        let e = err(&text(&pem_path, "trust_domain_bundle_format = \"der\"\n"));
        assert!(
            e.contains("trust_domain_bundle_format") && e.contains("\"spiffe\""),
            "{e}"
        );
        let e = err(&text(&dir.path().join("absent"), ""));
        assert!(e.contains("cannot read it"), "{e}");
    }
}
