//! W3C trace context (`traceparent`, `tracestate`) across gRPC, so that the server's spans
//! continue the trace the agent started: [`TraceInterceptor`] writes the current span's
//! context into a client call's metadata; [`TraceLayer`] gives a server one span per RPC
//! (`rpc.method`), parented on the caller's context when the request carries one.
//!
//! With telemetry off, spans have no OpenTelemetry context: nothing is written, and a
//! received `traceparent` only parents spans that are never exported.

use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::instrument::Instrumented;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes `span`'s trace context into `metadata` (`traceparent`, and `tracestate` when set).
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// The trace context a request's headers carry (an empty context when none or malformed).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Parents `span` on the trace context in `headers`, when they carry one.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if headers.contains_key("traceparent") {
        // Fails only when the span is disabled or already started a trace of its own.
        let _ = span.set_parent(extract(headers));
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A tonic client interceptor: each call carries the trace context of the span it is made
/// in.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceInterceptor;

impl tonic::service::Interceptor for TraceInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject(&tracing::Span::current(), request.metadata_mut());
        Ok(request)
    }
}

/// A tower layer for tonic servers: one INFO span per RPC, named after the gRPC method
/// (`otel.name` = `package.Service/Method`, fields `rpc.system`, `rpc.service`,
/// `rpc.method`), a child of the caller's span when the request carries `traceparent`.
/// Handlers' spans nest inside it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = rpc_span(request.uri().path());
        continue_trace(&span, request.headers());
        let _entered = span.enter();
        self.inner.call(request).instrument(span.clone())
    }
}

/// The span of one RPC whose path is `/package.Service/Method`.
pub fn rpc_span(path: &str) -> tracing::Span {
    let full = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = full.split_once('/').unwrap_or((full, ""));
    tracing::info_span!(
        "rpc",
        otel.name = full,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
    )
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    fn remote() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    }

    #[test]
    fn traceparent_survives_inject_then_extract() {
        let cx = Context::new().with_remote_span_context(remote());
        let mut metadata = MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let headers = metadata.into_headers();
        let back = extract(&headers);
        let got = back.span().span_context().clone();
        assert_eq!(got.trace_id(), remote().trace_id());
        assert_eq!(got.span_id(), remote().span_id());
        assert!(got.is_sampled() && got.is_remote());
    }

    #[test]
    fn no_or_bad_traceparent_gives_no_parent() {
        let mut headers = http::HeaderMap::new();
        assert!(!extract(&headers).span().span_context().is_valid());
        headers.insert("traceparent", http::HeaderValue::from_static("00-zz-11-01"));
        assert!(!extract(&headers).span().span_context().is_valid());
    }

    #[test]
    fn a_span_without_telemetry_injects_nothing() {
        let mut metadata = MetadataMap::new();
        inject(&tracing::Span::none(), &mut metadata);
        assert!(metadata.get("traceparent").is_none());
    }

    #[test]
    fn rpc_spans_are_named_after_the_method() {
        // The name is read by the OpenTelemetry layer; here only that odd paths do not panic.
        let _ = rpc_span("/tessera.agent.v1.AgentServer/BatchSignX509Svid");
        let _ = rpc_span("");
        let _ = rpc_span("/no-method");
    }
}
