//! Requests in flight on one connection, so that [`super::PeerStream`] can close the
//! connection once it has carried none for the idle timeout. [`TrackRequests`] is a tower layer
//! for the tonic server: it counts each request from its arrival until its response body is
//! dropped (a unary answer sent, a stream ended or reset), and hands the caller's
//! [`PeerCredentials`] to the services as a request extension.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use super::{PeerCredentials, PeerInfo};

/// Requests in flight on one connection.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Changes whenever a request starts or ends: an idle timer armed at another value is
    /// stale.
    epoch: AtomicU64,
    /// The connection's reader, woken when the last request ends so that it arms its timer.
    reader: AtomicWaker,
}

impl Activity {
    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(super) fn register_reader(&self, cx: &Context<'_>) {
        self.reader.register(cx.waker());
    }

    /// Counts a request until the returned guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, Ordering::AcqRel);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.reader.wake();
        }
    }
}

/// Tower layer counting requests per connection (see the module doc). Every tonic server that
/// serves [`super::incoming`] with an idle timeout must use it, or its connections look idle.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequests;

impl<S> tower::Layer<S> for TrackRequests {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Tracked { inner }
    }
}

/// The service [`TrackRequests`] makes.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Tracked<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        let info = req.extensions().get::<PeerInfo>().cloned();
        let guard = info.map(|info| {
            req.extensions_mut()
                .insert::<PeerCredentials>(info.credentials);
            info.activity.start()
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted until it is dropped.
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _guard: Option<InFlight>,
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
