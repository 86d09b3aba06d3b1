//! Hostile transports: idle sockets, cut-short handshakes and frames, stream floods,
//! oversized messages, session resumption, per-IP connection caps.

use std::time::Duration;

use futures::StreamExt;
use tessera_proto::tessera::agent::v1::agent_server_client::AgentServerClient;
use tessera_proto::tessera::agent::v1::{
    AttestRequest, BatchSignX509SvidRequest, SignX509SvidParams, SyncRequest,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// A legitimate agent is served: a fresh connection, a handshake with its SVID, and a call.
async fn serves_a_legitimate_agent(r: &Running, svid: &Svid) {
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(svid)).await);
    let mut sync = within(
        "a legitimate SyncEvents",
        client.sync_events(SyncRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    within("its first message", sync.next())
        .await
        .expect("a message")
        .expect("not an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_sockets_do_not_slow_a_legitimate_handshake() {
    let mut s = settings();
    // Keep every idle socket pending on the server for the whole test: the worst case.
    s.limits.handshake_timeout = Duration::from_secs(60);
    s.limits.max_connections_per_ip = 2_000;
    let r = start(s, false).await;
    let agent = attest_new(&r, "idle-1").await;
    let mut idle = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        idle.push(TcpStream::connect(r.addr).await.unwrap());
    }
    // Before the fix the 1,000 sockets held the 512 handshake slots (taken before accept):
    // this handshake waited for them to time out (10 s).
    let handshake = tokio::time::timeout(
        Duration::from_secs(5),
        tls_connect(r.addr, client_config(&r.bundle, Some(&agent))),
    )
    .await
    .expect("handshake completes within 5 s while 1,000 idle sockets are open");
    handshake.unwrap();
    serves_a_legitimate_agent(&r, &agent).await;
    drop(idle);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_ip_cap_are_closed_at_once_and_idle_ones_time_out() {
    let mut s = settings();
    s.limits.max_connections_per_ip = 3;
    s.limits.handshake_timeout = Duration::from_secs(3);
    let r = start(s, false).await;
    let agent = attest_new(&r, "cap-1").await;
    // The attestation's connection may still be closing: let the count settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(r.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = TcpStream::connect(r.addr).await.unwrap();
    // Closed at once, not after the handshake timeout.
    tokio::time::timeout(
        Duration::from_secs(1),
        closed_by_peer("over limits.max_agent_connections_per_ip", &mut fourth),
    )
    .await
    .expect("the fourth connection from one IP is closed within 1 s");
    // The idle three are closed by limits.agent_handshake_timeout...
    for (i, s) in idle.iter_mut().enumerate() {
        closed_by_peer(&format!("idle socket {i}"), s).await;
    }
    // ...which frees their places.
    tokio::time::sleep(Duration::from_millis(100)).await;
    serves_a_legitimate_agent(&r, &agent).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_cut_short_is_closed_after_the_handshake_timeout() {
    let mut s = settings();
    s.limits.handshake_timeout = Duration::from_millis(500);
    let r = start(s, false).await;
    let agent = attest_new(&r, "hello-1").await;
    let mut half = TcpStream::connect(r.addr).await.unwrap();
    // A TLS record header announcing a 512-byte handshake record, then 5 bytes of it.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .await
        .unwrap();
    // Garbage instead of a ClientHello is refused too.
    let mut garbage = TcpStream::connect(r.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    serves_a_legitimate_agent(&r, &agent).await;
    closed_by_peer("the half-sent ClientHello", &mut half).await;
    closed_by_peer("the HTTP/1 request", &mut garbage).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_headers_cut_short_after_a_good_handshake_end_in_a_close() {
    let mut s = settings();
    s.keepalive_interval = Duration::from_millis(500);
    s.keepalive_timeout = Duration::from_millis(500);
    s.limits.connection_max_age = Duration::from_secs(3);
    s.limits.connection_max_age_grace = Duration::from_secs(1);
    let r = start(s, false).await;
    let agent = attest_new(&r, "h2-1").await;
    let mut tls = tls_connect(r.addr, client_config(&r.bundle, Some(&agent)))
        .await
        .unwrap();
    // The connection preface, an empty SETTINGS frame, then a HEADERS frame (stream 1)
    // announcing 200 bytes of which 9 arrive; then silence (PINGs go unanswered).
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x04, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0, 0, 200, 0x01, 0x04, 0, 0, 0, 1]);
    bytes.extend_from_slice(&[0x82, 0x86, 0x84, 0x41, 0x8a, 0x08, 0x9d, 0x5c, 0x0b]);
    tls.write_all(&bytes).await.unwrap();
    tls.flush().await.unwrap();
    serves_a_legitimate_agent(&r, &agent).await;
    closed_by_peer("the half-sent HEADERS frame", &mut tls).await;
    serves_a_legitimate_agent(&r, &agent).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_streams_wait_on_their_connection_only() {
    let mut s = settings();
    s.limits.max_concurrent_streams = 4;
    let r = start(s, false).await;
    let agent = attest_new(&r, "flood-1").await;
    let channel = channel(r.addr, &r.bundle, None).await;
    // Four attestations that never send their params hold the four streams.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = AgentServerClient::new(channel.clone());
        held.push(
            within(
                "a held stream",
                c.attest(futures::stream::pending::<AttestRequest>()),
            )
            .await
            .unwrap(),
        );
    }
    // A fifth on the same connection is not admitted while they are open...
    let mut fifth = AgentServerClient::new(channel.clone());
    let queued = tokio::time::timeout(
        Duration::from_millis(1_000),
        fifth.sync_events(SyncRequest::default()),
    )
    .await;
    assert!(queued.is_err(), "the fifth stream was admitted: {queued:?}");
    // ...while another connection is served at once.
    serves_a_legitimate_agent(&r, &agent).await;
    // The held attestations end by limits.attestation_step_timeout, typed.
    for h in &mut held {
        let err = within("a held attestation", h.get_mut().next())
            .await
            .expect("a status")
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err}");
        assert!(
            err.message().contains("limits.attestation_step_timeout"),
            "{err}"
        );
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_and_the_connection_still_serves() {
    let mut s = settings();
    s.limits.max_request_bytes = 128 * 1024;
    let r = start(s, false).await;
    let agent = attest_new(&r, "big-1").await;
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some(&agent)).await);
    let err = within(
        "an oversized batch",
        client.batch_sign_x509_svid(BatchSignX509SvidRequest {
            params: vec![SignX509SvidParams {
                entry_id: "e".into(),
                csr: vec![0u8; 200 * 1024],
            }],
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    // The same connection and a new one both still serve.
    within(
        "sync after the refusal",
        client.sync_events(SyncRequest::default()),
    )
    .await
    .unwrap();
    serves_a_legitimate_agent(&r, &agent).await;
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_are_never_resumed() {
    let r = start(settings(), false).await;
    let agent = attest_new(&r, "resume-1").await;
    // The same client config (and so its session cache) for both connections.
    let config = client_config(&r.bundle, Some(&agent));
    for i in 0..2 {
        let mut tls = tls_connect(r.addr, config.clone()).await.unwrap();
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "connection {i}"
        );
        // Read what the server sends after the handshake (its SETTINGS, and any session
        // ticket) so that a ticket, if one were issued, would be stored for the next one.
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            tokio::io::AsyncReadExt::read(&mut tls, &mut buf),
        )
        .await;
    }
    r.stop().await;
}
