//! Health, reflection (what `grpcurl` needs) and the socket's life.

use tessera_server::uds::{self, SocketError};
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::support::Fixture;

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
        Err(SocketError::InUse(_))
    ));
    f.stop().await;
}

#[tokio::test]
async fn live_ready_and_metrics_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = Fixture::start().await;
    let metrics = tessera_server::metrics::Metrics::new(f.server.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = tessera_server::daemon::ShutdownSignal::new();
    let task = tokio::spawn(tessera_server::metrics::serve(
        listener,
        metrics.clone(),
        shutdown.wait(),
    ));
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text
    };
    assert!(get("/live").await.starts_with("HTTP/1.1 200"));
    assert!(get("/ready").await.starts_with("HTTP/1.1 200"));
    let body = get("/metrics").await;
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
    metrics.set_failed();
    assert!(get("/live").await.starts_with("HTTP/1.1 503"));
    assert!(get("/ready").await.starts_with("HTTP/1.1 503"));
    let _ = trigger.send(true);
    task.await.unwrap().unwrap();
    f.stop().await;
}
