//! OpenTelemetry traces across the two processes: an OTLP/gRPC receiver in the test
//! (the OpenTelemetry protocol's own generated service, `opentelemetry-proto`), a real
//! `tessera-server` and `tessera-agent` both exporting to it, and a workload whose entry is
//! signed on demand (outside a full LRU cache of size 1), so that its first fetch causes the
//! signing. One trace must then run:
//!
//! ```text
//! agent:  SpiffeWorkloadAPI/FetchX509SVID ─▶ attest_workload
//!                                         └▶ sign_x509_batch ─▶ sign_x509_request
//! server:                                     (traceparent) ─▶ AgentServer/BatchSignX509Svid ─▶ sign_x509_svids
//! ```
//!
//! and no attribute (of a span, its events or the resources) may hold a private key, the join
//! token or a JWT. The processes are stopped with SIGTERM, so the last spans are flushed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use spiffe::WorkloadApiClient;
use tessera_actors::agent::cache::Cache;

use super::processes::{my_uid, wait_until, AgentProc, ServerProc};
use super::within;

/// One received span, flattened: its service, ids, name and every attribute value (its own,
/// its events' and its resource's).
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    values: Vec<String>,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn values(attrs: &[KeyValue]) -> impl Iterator<Item = String> + '_ {
    attrs.iter().map(|kv| text(&kv.value))
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = resource
                .iter()
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let mut all: Vec<String> = values(&s.attributes).collect();
                    all.extend(values(&resource));
                    for e in &s.events {
                        all.push(e.name.clone());
                        all.extend(values(&e.attributes));
                    }
                    got.push(Got {
                        service: service.clone(),
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        name: s.name,
                        values: all,
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on 127.0.0.1:0; returns its port.
async fn receiver(r: Receiver) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

fn stored(dir: &Path) -> Option<Cache> {
    let bytes = std::fs::read(dir.join("agent/cache.bin")).ok()?;
    tessera_eventlog::typed::decode_state::<Cache>(0, &bytes).ok()
}

fn create(server: &ServerProc, agent_id: &str, path: &str, selector: &str) -> String {
    let spiffe = format!("spiffe://example.org{path}");
    let out = server.ok(&[
        "entry",
        "create",
        "--spiffeID",
        &spiffe,
        "--parentID",
        agent_id,
        "--selector",
        selector,
    ]);
    out.lines()
        .find_map(|l| {
            l.strip_prefix("Entry ID")
                .map(|r| r.trim_start_matches([' ', ':']).trim().to_owned())
        })
        .expect("Entry ID line")
}

/// SIGTERM, then waits (bounded: 30 s) for the process to exit.
fn terminate(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    wait_until("the process's exit after SIGTERM", || {
        child.try_wait().ok().flatten().is_some()
    });
}

/// Whether `value` looks like a JWT: three dot-separated base64url parts of some length, or
/// a base64-encoded JSON object (`eyJ`).
fn looks_like_jwt(value: &str) -> bool {
    value.contains("eyJ")
        || value
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .any(|word| {
                let parts: Vec<&str> = word.split('.').collect();
                parts.len() == 3
                    && parts.iter().all(|p| {
                        p.len() >= 10
                            && p.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
            })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_a_workload_call_to_the_servers_signing() {
    let r = Receiver::default();
    let port = receiver(r.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let telemetry = format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n\
         [telemetry.resource_attributes]\n\"deployment.environment\" = \"e2e\"\n"
    );
    let server_conf = dir.path().join("server.toml");
    std::fs::write(&server_conf, &telemetry).unwrap();
    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!("[agent]\nx509_svid_cache_max_size = 1\n{telemetry}"),
    )
    .unwrap();

    let mut server = ServerProc::start_with(dir.path(), 0, Some(&server_conf));
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let mut agent = AgentProc::start_with(
        dir.path(),
        server.port,
        &bundle,
        Some(&token),
        Some(&agent_conf),
    );
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    // Given a full cache (one eager SVID, for another uid's entry)...
    let other = format!("unix:uid:{}", my_uid() + 1_000_000);
    create(&server, &agent_id, "/other", &other);
    wait_until("the other entry's SVID in the cache file", || {
        stored(dir.path()).is_some_and(|c| c.svids.len() == 1)
    });
    // ...the workload's entry is in view but not signed until the workload asks.
    let me = format!("unix:uid:{}", my_uid());
    let mine = create(&server, &agent_id, "/mine", &me);
    wait_until("the workload's entry in the cache file", || {
        stored(dir.path()).is_some_and(|c| c.entries.keys().any(|k| k.as_str() == mine))
    });
    let client = within("the Workload API", async {
        for _ in 0..300 {
            if let Ok(c) = WorkloadApiClient::connect_to(&agent.endpoint()).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no Workload API socket");
    })
    .await;
    let svid = within("the first fetch", client.fetch_x509_svid())
        .await
        .expect("the first fetch gets the SVID signed on demand");
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/mine");
    // A JWT too, so that a JWT exists that spans must not carry.
    let jwt = within("a JWT-SVID", client.fetch_jwt_token(&["trace-test"], None))
        .await
        .expect("a JWT-SVID");
    assert!(looks_like_jwt(&jwt), "the detector recognises a real JWT");

    // Stopped gracefully: each flushes its last spans.
    terminate(&mut agent.child);
    terminate(&mut server.child);

    // Then: one trace from the Workload API call to the server's signing.
    let found = within("the spans of the on-demand signing", async {
        loop {
            let spans = r.spans.lock().unwrap().clone();
            if let Some(chain) = chain(&spans) {
                return (chain, spans);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (chain, spans) = found;
    let by_id: HashMap<&[u8], &Got> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    // The server's RPC span is a child of an agent span (the request's client span) of the
    // same trace, whose own parent is the agent's signing round, a child of the call.
    let rpc = &chain.rpc;
    let client_span = by_id[rpc.parent.as_slice()];
    assert_eq!(client_span.service, "tessera-agent");
    assert_eq!(client_span.name, "sign_x509_request");
    assert_eq!(client_span.trace_id, rpc.trace_id);
    let round = by_id[client_span.parent.as_slice()];
    assert_eq!(round.name, "sign_x509_batch");
    let call = by_id[round.parent.as_slice()];
    assert_eq!(call.service, "tessera-agent");
    assert!(call.name.contains("FetchX509SVID"), "{call:?}");
    assert_eq!(
        chain.sign.parent, rpc.span_id,
        "signing inside the RPC span"
    );
    assert!(
        spans.iter().any(|s| s.trace_id == call.trace_id
            && s.name == "attest_workload"
            && s.parent == call.span_id),
        "the workload's attestation is in the call's trace"
    );
    // The JWT: the server's MintJwtSvid is a child of the agent's mint, itself in the
    // FetchJWTSVID call's trace.
    let mint = spans
        .iter()
        .find(|s| s.service == "tessera-server" && s.name.ends_with("/MintJwtSvid"))
        .expect("the server's MintJwtSvid span");
    let agent_mint = by_id[mint.parent.as_slice()];
    assert_eq!(agent_mint.name, "mint_jwt");
    let jwt_call = by_id[agent_mint.parent.as_slice()];
    assert!(jwt_call.name.contains("FetchJWTSVID"), "{jwt_call:?}");
    assert_eq!(jwt_call.trace_id, mint.trace_id);
    assert!(
        rpc.values.iter().any(|v| v == "e2e"),
        "resource attributes are exported"
    );
    // Journal appends and admin RPCs are spans too (the entries were created over the admin
    // API and appended to the log).
    assert!(spans
        .iter()
        .any(|s| s.service == "tessera-server" && s.name == "append_events"));
    assert!(spans
        .iter()
        .any(|s| s.service == "tessera-server" && s.name.contains("Entry/BatchCreateEntry")));

    // And no attribute anywhere carries a secret.
    for s in &spans {
        for v in &s.values {
            assert!(!v.contains("PRIVATE KEY"), "a private key in {s:?}");
            assert!(!v.contains(&token), "the join token in {s:?}");
            assert!(!v.contains(&jwt), "the JWT-SVID in {s:?}");
            assert!(!looks_like_jwt(v), "something like a JWT in {s:?}: {v}");
        }
    }
}

struct Chain {
    rpc: Got,
    sign: Got,
}

/// The server's BatchSignX509Svid span whose trace holds its signing span and whose parent is
/// an agent span, once both have arrived.
fn chain(spans: &[Got]) -> Option<Chain> {
    let agent_ids: HashMap<&[u8], &Got> = spans
        .iter()
        .filter(|s| s.service == "tessera-agent")
        .map(|s| (s.span_id.as_slice(), s))
        .collect();
    spans
        .iter()
        .filter(|s| s.service == "tessera-server" && s.name.ends_with("/BatchSignX509Svid"))
        .find_map(|rpc| {
            let parent = agent_ids.get(rpc.parent.as_slice())?;
            let round = agent_ids.get(parent.parent.as_slice())?;
            agent_ids.get(round.parent.as_slice())?;
            let sign = spans.iter().find(|s| {
                s.service == "tessera-server"
                    && s.name == "sign_x509_svids"
                    && s.trace_id == rpc.trace_id
            })?;
            Some(Chain {
                rpc: rpc.clone(),
                sign: sign.clone(),
            })
        })
}
