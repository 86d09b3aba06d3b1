//! OpenTelemetry traces for both binaries, written once: the `[telemetry]` section both config
//! files share ([`TelemetrySection`], validated into [`TelemetryConfig`]), the OTLP pipeline
//! that exports the `tracing` spans when an endpoint is configured, and the W3C `traceparent`
//! propagation that joins the agent's and the server's spans into one trace.
//!
//! - [`config`]: the keys, their defaults and their rules.
//! - [`pipeline`]: the `tracing-opentelemetry` layer, the batch OTLP/gRPC exporter, the
//!   parent-based ratio sampler, the flush at shutdown ([`Telemetry`]). Installed by
//!   [`crate::cli::init_tracing_with`].
//! - [`propagation`]: `traceparent` into a client call's metadata ([`TraceInterceptor`]) and
//!   out of a server request's headers, with one span per RPC ([`TraceLayer`]).
//!
//! Off by default: with no `otlp_endpoint` nothing is exported, no exporter is built and the
//! propagation helpers carry nothing. Span fields must never hold a secret (a private key, a
//! join token, a JWT): the spans are shipped to whoever runs the collector.

pub mod config;
pub mod pipeline;
pub mod propagation;

pub use self::config::{TelemetryConfig, TelemetryConfigError, TelemetrySection};
pub use self::pipeline::{Telemetry, TelemetryError};
pub use self::propagation::{TraceInterceptor, TraceLayer};
