//! Health, reflection (what `grpcurl` needs), the socket's life, and the HTTP health and
//! metrics endpoint.

use std::sync::Arc;

use tessera_proto::spire::api::server::svid::v1::svid_client::SvidClient;
use tessera_proto::spire::api::server::svid::v1::{MintJwtsvidRequest, MintX509svidRequest};
use tessera_server::metrics::Metrics;
use tessera_server::uds::{self, SocketError};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::support::{id, Fixture};

#[tokio::test]
async fn health_says_serving_for_the_server_and_each_service() {
    let f = Fixture::start().await;
    let mut client = HealthClient::new(f.channel.clone());
    for service in [
        "",
        "spire.api.server.entry.v1.Entry",
        "tessera.eventlog.v1.EventLog",
    ] {
        let status = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    f.stop().await;
}

#[tokio::test]
async fn reflection_lists_every_admin_service() {
    let f = Fixture::start().await;
    let mut client = ServerReflectionClient::new(f.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(response)) = responses.next().await else {
        panic!("no reflection response");
    };
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "spire.api.server.entry.v1.Entry",
        "spire.api.server.agent.v1.Agent",
        "spire.api.server.bundle.v1.Bundle",
        "spire.api.server.svid.v1.SVID",
        "tessera.eventlog.v1.EventLog",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn a_second_server_cannot_take_a_live_socket() {
    let f = Fixture::start().await;
    assert!(matches!(
        uds::bind(&f.socket).await,
        Err(SocketError::InUse { .. })
    ));
    f.stop().await;
}

/// The full HTTP/1.1 response to `GET path`.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text
}

/// A metrics endpoint on port 0 over the fixture's server.
struct Endpoint {
    metrics: Arc<Metrics>,
    addr: std::net::SocketAddr,
    trigger: tessera_server::daemon::ShutdownTrigger,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Endpoint {
    async fn start(f: &Fixture) -> Endpoint {
        let metrics = Metrics::new(f.server.clone(), "server-test").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = tessera_server::daemon::ShutdownSignal::new();
        let task = tokio::spawn(tessera_server::metrics::serve(
            listener,
            metrics.clone(),
            shutdown.wait(),
        ));
        Endpoint {
            metrics,
            addr,
            trigger,
            task,
        }
    }

    async fn get(&self, path: &str) -> String {
        http_get(self.addr, path).await
    }

    async fn stop(self) {
        self.trigger.fire();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn live_ready_and_metrics_over_http() {
    let f = Fixture::start().await;
    let endpoint = Endpoint::start(&f).await;
    assert!(endpoint.get("/live").await.starts_with("HTTP/1.1 200"));
    assert!(endpoint.get("/ready").await.starts_with("HTTP/1.1 200"));
    let body = endpoint.get("/metrics").await;
    for want in [
        "tessera_server_entries 0",
        "tessera_server_agents 0",
        "tessera_server_x509_cas{status=\"active\"} 1",
        "tessera_server_jwt_keys{status=\"active\"} 1",
        "tessera_server_actor_in_flight{actor=\"registry\"}",
        "tessera_server_signing_queued 0",
    ] {
        assert!(body.contains(want), "{want} missing from\n{body}");
    }
    assert!(
        body.contains(&format!("tessera_server_log_head_seq {}", f.base)),
        "{body}"
    );
    // Every actor behind a bounded door has its row; nothing is in flight at rest.
    for actor in ["registry", "nodes", "tokens", "authority", "sync_hub"] {
        let series = format!("tessera_server_actor_in_flight{{actor=\"{actor}\"}}");
        assert_eq!(sample(&body, &series), 0.0, "{series}");
    }
    endpoint.metrics.set_failed();
    assert!(endpoint.get("/live").await.starts_with("HTTP/1.1 503"));
    assert!(endpoint.get("/ready").await.starts_with("HTTP/1.1 503"));
    endpoint.stop().await;
    f.stop().await;
}

/// The value of the sample `series` (name and labels, exactly as exposed) in `body`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} missing from\n{body}"))
        .parse()
        .unwrap()
}

fn mint_csr(spiffe_id: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(spiffe_id.try_into().unwrap()));
    params.serialize_request(&key).unwrap().der().to_vec()
}

#[tokio::test]
async fn signing_rate_and_latency_count_every_admin_mint() {
    let f = Fixture::start().await;
    let endpoint = Endpoint::start(&f).await;
    let signed = |kind: &str, outcome: &str| {
        format!("tessera_server_svids_signed_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}")
    };
    let timed =
        |kind: &str| format!("tessera_server_signing_duration_seconds_count{{kind=\"{kind}\"}}");
    let before = endpoint.get("/metrics").await;
    for kind in ["x509", "jwt"] {
        for outcome in ["ok", "error", "rejected"] {
            assert_eq!(
                sample(&before, &signed(kind, outcome)),
                0.0,
                "{kind} {outcome}"
            );
        }
        assert_eq!(sample(&before, &timed(kind)), 0.0);
    }

    let mut client = SvidClient::new(f.channel.clone());
    for i in 0..3 {
        client
            .mint_x509svid(MintX509svidRequest {
                csr: mint_csr(&format!("spiffe://example.org/tool/{i}")),
                ttl: 0,
            })
            .await
            .unwrap();
    }
    let jwt = || MintJwtsvidRequest {
        id: id("/tool"),
        audience: vec!["db".into()],
        ttl: 0,
    };
    for _ in 0..2 {
        client.mint_jwtsvid(jwt()).await.unwrap();
    }
    // Refused by the signer after admission: an error.
    let foreign = client
        .mint_x509svid(MintX509svidRequest {
            csr: mint_csr("spiffe://other.org/tool"),
            ttl: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    // With the whole queue held, the signer turns requests away: rejected.
    let signer = f.server.authority.signer();
    let held = signer.admit(signer.settings().max_queued).unwrap();
    let full = client.mint_jwtsvid(jwt()).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted);
    drop(held);

    let body = endpoint.get("/metrics").await;
    assert!(
        body.contains("# TYPE tessera_server_svids_signed_total counter"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE tessera_server_signing_duration_seconds histogram"),
        "{body}"
    );
    for (kind, outcome, n) in [
        ("x509", "ok", 3.0),
        ("x509", "error", 1.0),
        ("x509", "rejected", 0.0),
        ("jwt", "ok", 2.0),
        ("jwt", "error", 0.0),
        ("jwt", "rejected", 1.0),
    ] {
        assert_eq!(
            sample(&body, &signed(kind, outcome)),
            n,
            "{kind} {outcome}\n{body}"
        );
    }
    assert_eq!(sample(&body, &timed("x509")), 4.0, "ok + error");
    assert_eq!(
        sample(&body, &timed("jwt")),
        2.0,
        "rejections are not timed"
    );
    for kind in ["x509", "jwt"] {
        let bucket = |le: &str| {
            sample(
                &body,
                &format!(
                    "tessera_server_signing_duration_seconds_bucket{{kind=\"{kind}\",le=\"{le}\"}}"
                ),
            )
        };
        assert!(bucket("0.00005") <= bucket("5"));
        assert_eq!(bucket("+Inf"), sample(&body, &timed(kind)));
        assert!(
            sample(
                &body,
                &format!("tessera_server_signing_duration_seconds_sum{{kind=\"{kind}\"}}")
            ) > 0.0
        );
    }
    endpoint.stop().await;
    f.stop().await;
}
