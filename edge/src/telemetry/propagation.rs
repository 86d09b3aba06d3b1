//! W3C trace context (`traceparent`, `tracestate`) across gRPC, so that the server's spans
//! continue the trace the agent started: [`TraceInterceptor`] writes the current span's
//! context into a client call's metadata; [`TraceLayer`] gives a server one span per RPC
//! (`rpc.method`), parented on the caller's context when the request carries one and the
//! callers are trusted to choose it (agents, admins; never the Workload API's local users).
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
///
/// [`TraceLayer::LOCAL_CALLERS`] is for servers whose callers are not trusted to choose the
/// trace (the Workload API: any local user): it never continues their `traceparent`, so a
/// caller cannot force its calls to be sampled or attach them to another trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    continue_callers: bool,
}

impl TraceLayer {
    /// Continues the caller's trace (authenticated callers: agents over mTLS, admins).
    pub const TRUSTED_CALLERS: TraceLayer = TraceLayer {
        continue_callers: true,
    };
    /// Always starts a new trace, whatever the request carries.
    pub const LOCAL_CALLERS: TraceLayer = TraceLayer {
        continue_callers: false,
    };
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            continue_callers: self.continue_callers,
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    continue_callers: bool,
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
        if self.continue_callers {
            continue_trace(&span, request.headers());
        }
        let _entered = span.enter();
        self.inner.call(request).instrument(span.clone())
    }
}

/// Longest RPC name a span takes from a request path, in characters.
const MAX_RPC_NAME_CHARS: usize = 128;

/// The span of one RPC whose path is `/package.Service/Method`.
pub fn rpc_span(path: &str) -> tracing::Span {
    let full = path.strip_prefix('/').unwrap_or(path);
    // The path is the caller's (an unknown method still gets here): bounded, never a huge name.
    let full = match full.char_indices().nth(MAX_RPC_NAME_CHARS) {
        Some((at, _)) => &full[..at],
        None => full,
    };
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

    /// The trace ID the inner service sees under `layer`, for a request carrying `remote()`.
    fn trace_seen_under(layer: TraceLayer) -> TraceId {
        use opentelemetry::trace::TracerProvider as _;
        use tower::{Layer as _, Service as _};
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut seen = None;
            let mut service = layer.layer(tower::service_fn(|_: http::Request<()>| {
                seen = Some(
                    tracing::Span::current()
                        .context()
                        .span()
                        .span_context()
                        .trace_id(),
                );
                std::future::ready(Ok::<_, std::convert::Infallible>(()))
            }));
            let mut metadata = MetadataMap::new();
            let cx = Context::new().with_remote_span_context(remote());
            TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
            let mut request = http::Request::new(());
            *request.uri_mut() = http::Uri::from_static("/SpiffeWorkloadAPI/FetchX509SVID");
            *request.headers_mut() = metadata.into_headers();
            drop(service.call(request));
            seen.expect("the inner service ran")
        })
    }

    #[test]
    fn local_callers_cannot_choose_the_trace_trusted_ones_continue_theirs() {
        assert_eq!(
            trace_seen_under(TraceLayer::TRUSTED_CALLERS),
            remote().trace_id()
        );
        let local = trace_seen_under(TraceLayer::LOCAL_CALLERS);
        assert_ne!(local, remote().trace_id());
        assert_ne!(local, TraceId::INVALID, "a new trace of its own");
    }

    #[test]
    fn rpc_spans_are_named_after_the_method() {
        // The name is read by the OpenTelemetry layer; here only that odd paths do not panic.
        let _ = rpc_span("/tessera.agent.v1.AgentServer/BatchSignX509Svid");
        let _ = rpc_span("");
        let _ = rpc_span("/no-method");
        let _ = rpc_span(&format!("/{}é/{}", "x".repeat(200), "y".repeat(10_000)));
    }
}
