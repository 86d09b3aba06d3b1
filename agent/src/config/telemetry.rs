//! `[telemetry]`: OTLP export of the agent's spans. The keys, defaults and rules are the
//! server's too and live once in [`tessera_edge::telemetry::config`]; this file only names the
//! agent's default `service.name` and turns a bad value into a [`ConfigError`].

use tessera_edge::telemetry::{TelemetryConfig, TelemetrySection};

use super::ConfigError;

/// `service.name` when `telemetry.service_name` is unset.
pub const DEFAULT_SERVICE_NAME: &str = "tessera-agent";

/// Checks `[telemetry]`.
pub(super) fn telemetry(section: &TelemetrySection) -> Result<TelemetryConfig, ConfigError> {
    section
        .config(DEFAULT_SERVICE_NAME)
        .map_err(|e| ConfigError::Invalid {
            key: e.key,
            value: e.value,
            reason: e.reason,
        })
}
