//! The generated clients talk to the generated servers in process, with no transport: the
//! client's `tower` service is the server itself, wrapped to record each request path. This
//! checks the paths on the wire, gRPC framing of unary and streaming calls, and the
//! `Unimplemented` defaults of the SPIRE-shaped services.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers fail the test by panicking"
)]

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tessera_proto::{
    spire::api::{
        server::bundle::v1::{
            bundle_client::BundleClient,
            bundle_server::{Bundle as BundleService, BundleServer},
            CountBundlesRequest, GetBundleRequest,
        },
        types::Bundle,
    },
    workload::{
        spiffe_workload_api_client::SpiffeWorkloadApiClient,
        spiffe_workload_api_server::{SpiffeWorkloadApi, SpiffeWorkloadApiServer},
        JwtBundlesRequest, JwtBundlesResponse, Jwtsvid, JwtsvidRequest, JwtsvidResponse,
        ValidateJwtsvidRequest, ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse,
        WitsvidRequest, WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svid,
        X509svidRequest, X509svidResponse,
    },
};
// `http` comes through tonic's re-export, so the test needs no extra dependency.
use tonic::{
    codegen::{http, Service},
    Code, Request, Response, Status,
};

/// Passes requests to `inner`, noting each request's path.
#[derive(Clone)]
struct PathRecorder<S> {
    inner: S,
    paths: Arc<Mutex<Vec<String>>>,
}

impl<S> PathRecorder<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            paths: Arc::default(),
        }
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

impl<S, B> Service<http::Request<B>> for PathRecorder<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.paths.lock().unwrap().push(req.uri().path().to_owned());
        self.inner.call(req)
    }
}

// === Workload API ===

/// Answers with fixed values; the WIT profile is unsupported, as the standard allows.
struct FakeWorkloadApi;

fn x509_response(serial: u8) -> X509svidResponse {
    X509svidResponse {
        svids: vec![X509svid {
            spiffe_id: "spiffe://example.org/web".into(),
            x509_svid: vec![0x30, serial],
            x509_svid_key: vec![0x30, 0x00],
            bundle: vec![0x30, 0x01],
            hint: String::new(),
        }],
        ..Default::default()
    }
}

type Stream<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

#[tonic::async_trait]
impl SpiffeWorkloadApi for FakeWorkloadApi {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        // A first snapshot, then a rotation.
        let updates = vec![Ok(x509_response(1)), Ok(x509_response(2))];
        Ok(Response::new(tokio_stream::iter(updates)))
    }

    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        Err(Status::unavailable("not in this fake"))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        let audience = request.into_inner().audience.join(",");
        Ok(Response::new(JwtsvidResponse {
            svids: vec![Jwtsvid {
                spiffe_id: "spiffe://example.org/web".into(),
                svid: format!("token-for-{audience}"),
                hint: String::new(),
            }],
        }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        Err(Status::unavailable("not in this fake"))
    }

    async fn validate_jwtsvid(
        &self,
        _: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        Err(Status::invalid_argument("token is not valid"))
    }

    async fn fetch_witsvid(
        &self,
        _: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVID profile not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVID profile not supported"))
    }
}

#[tokio::test]
async fn workload_client_and_server_agree_on_paths_and_framing() {
    let server = PathRecorder::new(SpiffeWorkloadApiServer::new(FakeWorkloadApi));
    let mut client = SpiffeWorkloadApiClient::new(server.clone());

    let jwt = client
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["a".into(), "b".into()],
            spiffe_id: String::new(),
        })
        .await
        .expect("unary call succeeds")
        .into_inner();
    assert_eq!(jwt.svids[0].svid, "token-for-a,b");

    let mut stream = client
        .fetch_x509svid(X509svidRequest {})
        .await
        .expect("stream opens")
        .into_inner();
    let first = stream.message().await.expect("first update").expect("some");
    let second = stream
        .message()
        .await
        .expect("second update")
        .expect("some");
    assert_eq!(first, x509_response(1));
    assert_eq!(second, x509_response(2));
    assert!(stream.message().await.expect("clean end").is_none());

    let err = client
        .validate_jwtsvid(ValidateJwtsvidRequest {
            audience: "x".into(),
            svid: "y".into(),
        })
        .await
        .expect_err("the fake rejects every token");
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = client
        .fetch_witsvid(WitsvidRequest::default())
        .await
        .expect_err("WIT is unsupported");
    assert_eq!(err.code(), Code::Unimplemented);

    assert_eq!(
        server.paths(),
        [
            "/SpiffeWorkloadAPI/FetchJWTSVID",
            "/SpiffeWorkloadAPI/FetchX509SVID",
            "/SpiffeWorkloadAPI/ValidateJWTSVID",
            "/SpiffeWorkloadAPI/FetchWITSVID",
        ]
    );
}

// === SPIRE-shaped admin API: defaults answer Unimplemented ===

/// Implements only GetBundle, as a Tessera server that lacks federation would.
struct OnlyGetBundle;

#[tonic::async_trait]
impl BundleService for OnlyGetBundle {
    async fn get_bundle(&self, _: Request<GetBundleRequest>) -> Result<Response<Bundle>, Status> {
        Ok(Response::new(Bundle {
            trust_domain: "example.org".into(),
            ..Default::default()
        }))
    }
}

#[tokio::test]
async fn spire_services_default_to_unimplemented() {
    let server = PathRecorder::new(BundleServer::new(OnlyGetBundle));
    let mut client = BundleClient::new(server.clone());

    let bundle = client
        .get_bundle(GetBundleRequest::default())
        .await
        .expect("implemented method answers")
        .into_inner();
    assert_eq!(bundle.trust_domain, "example.org");

    let err = client
        .count_bundles(CountBundlesRequest {})
        .await
        .expect_err("not implemented by this server");
    assert_eq!(err.code(), Code::Unimplemented);

    assert_eq!(
        server.paths(),
        [
            "/spire.api.server.bundle.v1.Bundle/GetBundle",
            "/spire.api.server.bundle.v1.Bundle/CountBundles",
        ]
    );
}
