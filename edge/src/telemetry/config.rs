//! `[telemetry]`: where spans go and how they are labelled. The same keys in both binaries'
//! files; each binary gives its own default `service_name` and maps [`TelemetryConfigError`]
//! to its own config error (which names the key, the value and the fix).
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4317"   # unset: no spans are exported
//! service_name = "tessera-server"           # unset: the binary's name
//! sampling_ratio = 1.0                      # share of new traces kept, 0.0..=1.0
//! [telemetry.resource_attributes]
//! "deployment.environment" = "prod"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// Most entries of `telemetry.resource_attributes`.
pub const MAX_RESOURCE_ATTRIBUTES: usize = 64;
/// Longest resource attribute key, bytes.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 256;
/// Longest resource attribute value, bytes.
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 4096;
/// Longest `telemetry.otlp_endpoint` or `telemetry.service_name`, bytes.
pub const MAX_NAME_LEN: usize = 1024;

const ENDPOINT_RULE: &str = "must be the http:// URL of an OTLP/gRPC collector with a host and \
     a port and no path, such as \"http://127.0.0.1:4317\"; leave it unset to export no spans";

/// `[telemetry]` as written. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// The OTLP/gRPC collector, `http://host:port`; unset (or empty): spans are not exported.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of every span; unset: the binary's name.
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0; a trace continued from a caller follows the
    /// caller's decision (parent-based sampling).
    pub sampling_ratio: f64,
    /// More resource attributes (`deployment.environment`, `host.name`, ...), string to string.
    pub resource_attributes: BTreeMap<String, String>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// The validated `[telemetry]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The OTLP/gRPC collector; `None`: off.
    pub otlp_endpoint: Option<http::Uri>,
    /// `service.name`.
    pub service_name: String,
    /// Share of new traces recorded, 0.0 to 1.0.
    pub sampling_ratio: f64,
    /// More resource attributes.
    pub resource_attributes: BTreeMap<String, String>,
}

impl TelemetryConfig {
    /// Telemetry off, spans labelled `service_name` (what a file without `[telemetry]` gives).
    pub fn off(service_name: &str) -> Self {
        Self {
            otlp_endpoint: None,
            service_name: service_name.to_owned(),
            sampling_ratio: 1.0,
            resource_attributes: BTreeMap::new(),
        }
    }

    /// Whether spans are exported.
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some()
    }
}

/// A `[telemetry]` value that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {value:?}: {reason}")]
pub struct TelemetryConfigError {
    /// The key, `telemetry.sampling_ratio` or `telemetry.resource_attributes."k"`.
    pub key: String,
    /// The value given.
    pub value: String,
    /// The rule, and the fix.
    pub reason: String,
}

fn invalid(key: impl Into<String>, value: impl Into<String>, reason: &str) -> TelemetryConfigError {
    TelemetryConfigError {
        key: key.into(),
        value: value.into(),
        reason: reason.to_owned(),
    }
}

impl TelemetrySection {
    /// Checks every key; `default_service_name` labels spans when `service_name` is unset.
    pub fn config(
        &self,
        default_service_name: &str,
    ) -> Result<TelemetryConfig, TelemetryConfigError> {
        let otlp_endpoint = match self.otlp_endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(parse_endpoint(raw)?),
        };
        let service_name = match &self.service_name {
            None => default_service_name.to_owned(),
            Some(name) => {
                if name.trim().is_empty() {
                    return Err(invalid(
                        "telemetry.service_name",
                        name.as_str(),
                        &format!(
                            "must not be empty; leave it unset for \"{default_service_name}\""
                        ),
                    ));
                }
                if name.len() > MAX_NAME_LEN {
                    return Err(invalid(
                        "telemetry.service_name",
                        truncated(name),
                        &format!("must be at most {MAX_NAME_LEN} bytes"),
                    ));
                }
                name.clone()
            }
        };
        let r = self.sampling_ratio;
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            return Err(invalid(
                "telemetry.sampling_ratio",
                r.to_string(),
                "must be between 0.0 (record no new trace) and 1.0 (record every trace)",
            ));
        }
        if self.resource_attributes.len() > MAX_RESOURCE_ATTRIBUTES {
            return Err(invalid(
                "telemetry.resource_attributes",
                format!("{} entries", self.resource_attributes.len()),
                &format!("must have at most {MAX_RESOURCE_ATTRIBUTES} entries"),
            ));
        }
        for (k, v) in &self.resource_attributes {
            let key = format!("telemetry.resource_attributes.{k:?}");
            if k.trim().is_empty() {
                return Err(invalid(
                    key,
                    v.as_str(),
                    "the attribute's name must not be empty",
                ));
            }
            if k == "service.name" {
                return Err(invalid(
                    key,
                    v.as_str(),
                    "set the service name with telemetry.service_name instead",
                ));
            }
            if k.len() > MAX_ATTRIBUTE_KEY_LEN {
                return Err(invalid(
                    "telemetry.resource_attributes",
                    truncated(k),
                    &format!("attribute names must be at most {MAX_ATTRIBUTE_KEY_LEN} bytes"),
                ));
            }
            if v.len() > MAX_ATTRIBUTE_VALUE_LEN {
                return Err(invalid(
                    key,
                    truncated(v),
                    &format!("must be at most {MAX_ATTRIBUTE_VALUE_LEN} bytes"),
                ));
            }
        }
        Ok(TelemetryConfig {
            otlp_endpoint,
            service_name,
            sampling_ratio: r,
            resource_attributes: self.resource_attributes.clone(),
        })
    }
}

fn parse_endpoint(raw: &str) -> Result<http::Uri, TelemetryConfigError> {
    const KEY: &str = "telemetry.otlp_endpoint";
    if raw.len() > MAX_NAME_LEN {
        return Err(invalid(KEY, truncated(raw), ENDPOINT_RULE));
    }
    let uri: http::Uri = raw.parse().map_err(|_| invalid(KEY, raw, ENDPOINT_RULE))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                KEY,
                raw,
                "https is not supported yet: run a collector next to the binary and give its \
                 http:// address, such as \"http://127.0.0.1:4317\"",
            ))
        }
        _ => return Err(invalid(KEY, raw, ENDPOINT_RULE)),
    }
    let has_host = uri.host().is_some_and(|h| !h.is_empty());
    let no_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !has_host || uri.port_u16().is_none() || !no_path {
        return Err(invalid(KEY, raw, ENDPOINT_RULE));
    }
    Ok(uri)
}

/// The first bytes of an overlong value, for the message.
fn truncated(s: &str) -> String {
    let mut end = 64.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> TelemetrySection {
        #[derive(Deserialize)]
        struct File {
            telemetry: TelemetrySection,
        }
        let file: File = toml::from_str(toml_text).unwrap();
        file.telemetry
    }

    #[test]
    fn defaults_are_off_with_the_binary_name() {
        let c = TelemetrySection::default().config("tessera-agent").unwrap();
        assert_eq!(c, TelemetryConfig::off("tessera-agent"));
        assert!(!c.enabled());
        let c = section("[telemetry]\notlp_endpoint = \"\"\n")
            .config("tessera-agent")
            .unwrap();
        assert!(!c.enabled());
    }

    #[test]
    fn every_key_is_read() {
        let c = section(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"edge-a\"\n\
             sampling_ratio = 0.25\n[telemetry.resource_attributes]\n\"deployment.environment\" = \"prod\"\n",
        )
        .config("tessera-server")
        .unwrap();
        assert_eq!(
            c.otlp_endpoint.as_ref().map(ToString::to_string).as_deref(),
            Some("http://127.0.0.1:4317/")
        );
        assert_eq!(c.service_name, "edge-a");
        assert_eq!(c.sampling_ratio, 0.25);
        assert_eq!(
            c.resource_attributes
                .get("deployment.environment")
                .map(String::as_str),
            Some("prod")
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            (
                "otlp_endpoint = \"127.0.0.1:4317\"",
                "telemetry.otlp_endpoint",
                "http://",
            ),
            (
                "otlp_endpoint = \"ftp://c:4317\"",
                "telemetry.otlp_endpoint",
                "http://",
            ),
            (
                "otlp_endpoint = \"http://c\"",
                "telemetry.otlp_endpoint",
                "port",
            ),
            (
                "otlp_endpoint = \"http://c:4317/v1/traces\"",
                "telemetry.otlp_endpoint",
                "no path",
            ),
            (
                "otlp_endpoint = \"https://c:4317\"",
                "telemetry.otlp_endpoint",
                "not supported",
            ),
            (
                "service_name = \" \"",
                "telemetry.service_name",
                "tessera-server",
            ),
            (
                "sampling_ratio = 1.5",
                "telemetry.sampling_ratio",
                "between 0.0",
            ),
            (
                "sampling_ratio = -0.1",
                "telemetry.sampling_ratio",
                "between 0.0",
            ),
            (
                "sampling_ratio = nan",
                "telemetry.sampling_ratio",
                "between 0.0",
            ),
            (
                "resource_attributes = { \"service.name\" = \"x\" }",
                "telemetry.resource_attributes.\"service.name\"",
                "telemetry.service_name",
            ),
            (
                "resource_attributes = { \"\" = \"x\" }",
                "telemetry.resource_attributes.\"\"",
                "must not be empty",
            ),
        ];
        for (line, key, fix) in cases {
            let err = section(&format!("[telemetry]\n{line}\n"))
                .config("tessera-server")
                .unwrap_err();
            assert_eq!(err.key, key, "{line}");
            let text = err.to_string();
            assert!(
                text.starts_with(key) && text.contains(fix),
                "{line}: {text}"
            );
        }
    }

    #[test]
    fn attribute_limits_are_enforced() {
        let mut s = TelemetrySection::default();
        for i in 0..=MAX_RESOURCE_ATTRIBUTES {
            s.resource_attributes.insert(format!("k{i}"), "v".into());
        }
        let err = s.config("x").unwrap_err();
        assert_eq!(err.key, "telemetry.resource_attributes");
        let mut s = TelemetrySection::default();
        s.resource_attributes
            .insert("k".into(), "v".repeat(MAX_ATTRIBUTE_VALUE_LEN + 1));
        let err = s.config("x").unwrap_err();
        assert!(err.reason.contains("at most"), "{err}");
        assert!(err.value.len() < 100, "the message shows a prefix: {err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<TelemetrySection>("otlp_endpiont = \"http://a:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("otlp_endpiont"), "{err}");
    }
}
