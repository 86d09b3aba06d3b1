//! The OTLP pipeline: a [`tracing_opentelemetry`] layer whose tracer hands finished spans to
//! the SDK's batch processor, which exports them over OTLP/gRPC (tonic) to the configured
//! collector. Sampling: a new trace is kept with probability `sampling_ratio` (decided on its
//! trace ID); a span under a local parent follows it; a span continued from a remote caller
//! that says "sampled" is decided on the trace ID again, so a peer (even one not yet
//! authenticated, on the agent API) cannot force its calls to be exported. With the same
//! ratio on agent and server the decisions agree, since both hash the same trace ID.
//!
//! The exporter's gRPC channel lives on a small runtime of its own (one worker thread,
//! `otlp-export`), so it is built before the process's runtime exists and keeps exporting
//! while that runtime shuts down; the batch processor runs on its own thread. Export failures
//! (collector down) cost dropped spans, never a stalled or failed process.
//!
//! [`Telemetry::shutdown`] flushes what is buffered (bounded by [`FLUSH_TIMEOUT`]); dropping
//! the guard does the same.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{ParentBasedSampler, Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

use super::TelemetryConfig;

/// Longest an export call may take.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the final flush at shutdown may take.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Name of the instrumentation scope of every span.
pub const SCOPE: &str = "tessera";

/// The sampler described in the module doc.
fn sampler(ratio: f64) -> ParentBasedSampler {
    ParentBasedSampler::new(Sampler::TraceIdRatioBased(ratio))
        .with_remote_parent_sampled(Sampler::TraceIdRatioBased(ratio))
}

/// Why the OTLP pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The exporter's runtime could not be started (out of threads).
    #[error("telemetry: cannot start the OTLP export runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The OTLP exporter refused its configuration.
    #[error("telemetry.otlp_endpoint {endpoint:?}: cannot build the OTLP exporter: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// The exporter's message.
        message: String,
    },
}

/// The running pipeline; flush it with [`Telemetry::shutdown`] before the process exits.
/// Holds nothing when telemetry is off.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered (bounded by [`FLUSH_TIMEOUT`]) and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
                tracing::warn!(error = %e, "telemetry: spans not flushed at shutdown");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Builds the pipeline for `config`: `None` (and an empty guard) when telemetry is off.
pub fn layer<S>(
    config: &TelemetryConfig,
) -> Result<(Telemetry, Option<OpenTelemetryLayer<S, SdkTracer>>), TelemetryError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok((Telemetry::default(), None));
    };
    let endpoint = endpoint.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(TelemetryError::Runtime)?;
    // The gRPC channel spawns its connection tasks on the runtime it is built in.
    let exporter = {
        let _in_runtime = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: endpoint.clone(),
                message: e.to_string(),
            })?
    };
    let resource = Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(config.sampling_ratio))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer(SCOPE);
    let layer = tracing_opentelemetry::layer().with_tracer(tracer);
    Ok((
        Telemetry {
            provider: Some(provider),
            runtime: Some(runtime),
        },
        Some(layer),
    ))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::Context;
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};

    use super::*;

    fn decision(ratio: f64, remote: bool) -> SamplingDecision {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let parent = SpanContext::new(
            trace_id,
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            remote,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(parent);
        sampler(ratio)
            .should_sample(Some(&cx), trace_id, "rpc", &SpanKind::Server, &[], &[])
            .decision
    }

    #[test]
    fn a_remote_caller_saying_sampled_cannot_override_the_ratio() {
        assert_eq!(decision(0.0, true), SamplingDecision::Drop);
        assert_eq!(decision(1.0, true), SamplingDecision::RecordAndSample);
        // A local parent's decision is followed.
        assert_eq!(decision(0.0, false), SamplingDecision::RecordAndSample);
    }
}
