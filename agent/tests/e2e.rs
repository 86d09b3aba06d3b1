//! End to end with real processes: `tessera-server` and `tessera-agent` on loopback, and the
//! independent crates.io `spiffe` client on the agent's Workload API socket.
//!
//! - an entry created on the server reaches an already open `FetchX509SVID` stream; deleting
//!   the last one ends it with PermissionDenied;
//! - the server killed: the agent keeps serving; the agent restarted while the server is
//!   down: it serves its persisted cache at once;
//! - a short X.509-SVID TTL: rotation observed on the open stream.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "e2e/processes.rs"]
mod processes;

use std::time::Duration;

use futures::StreamExt;
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use spiffe::WorkloadApiClient;

const STEP: Duration = Duration::from_secs(30);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within 30 s"))
}

struct Pair {
    _dir: tempfile::TempDir,
    server: ServerProc,
    agent: AgentProc,
    agent_id: String,
    bundle: std::path::PathBuf,
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), 0);
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent = AgentProc::start(dir.path(), server.port, &bundle, Some(&token));
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    Pair {
        _dir: dir,
        server,
        agent,
        agent_id,
        bundle,
    }
}

fn create(p: &Pair, path: &str, extra: &[&str]) -> String {
    let uid = format!("unix:uid:{}", my_uid());
    let spiffe = format!("spiffe://example.org{path}");
    let mut args = vec![
        "entry",
        "create",
        "--spiffeID",
        &spiffe,
        "--parentID",
        &p.agent_id,
        "--selector",
        &uid,
    ];
    args.extend_from_slice(extra);
    let out = p.server.ok(&args);
    out.lines()
        .find_map(|l| {
            l.strip_prefix("Entry ID")
                .map(|r| r.trim_start_matches([' ', ':']).trim().to_owned())
        })
        .expect("Entry ID line")
}

async fn client(p: &Pair) -> WorkloadApiClient {
    let endpoint = p.agent.endpoint();
    let mut last = None;
    for _ in 0..300 {
        match WorkloadApiClient::connect_to(&endpoint).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoint}: {last:?}");
}

/// Opens an X.509 context stream once the agent has an identity for us (until then the
/// Workload API answers PermissionDenied, as the standard says).
async fn open_stream(
    c: &WorkloadApiClient,
) -> impl futures::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + '_ {
    within("the first identity", async {
        loop {
            if let Ok(s) = c.stream_x509_contexts().await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn ids(ctx: &spiffe::X509Context) -> Vec<String> {
    let mut v: Vec<String> = ctx
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_an_open_stream_and_deletion_ends_it() {
    let p = pair();
    let first = create(&p, "/web", &[]);
    let c = client(&p).await;
    let mut stream = Box::pin(open_stream(&c).await);
    loop {
        let ctx = within("first SVID", stream.next())
            .await
            .expect("stream open");
        if let Ok(ctx) = ctx {
            if ids(&ctx) == vec!["spiffe://example.org/web".to_string()] {
                break;
            }
        }
    }
    let second = create(&p, "/db", &[]);
    loop {
        let ctx = within("the new entry's SVID", stream.next())
            .await
            .expect("stream open")
            .unwrap();
        if ids(&ctx).len() == 2 {
            assert_eq!(
                ids(&ctx),
                vec![
                    "spiffe://example.org/db".to_string(),
                    "spiffe://example.org/web".to_string()
                ]
            );
            break;
        }
    }
    p.server.ok(&["entry", "delete", "--entryID", &first]);
    loop {
        let ctx = within("the deletion", stream.next())
            .await
            .expect("stream open")
            .unwrap();
        if ids(&ctx) == vec!["spiffe://example.org/db".to_string()] {
            break;
        }
    }
    p.server.ok(&["entry", "delete", "--entryID", &second]);
    let end = loop {
        match within("the last deletion", stream.next()).await {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    let err = format!("{end:?}");
    // PermissionDenied on the wire; the spiffe crate reports it as NoIdentityIssued.
    assert!(
        err.contains("NoIdentityIssued") || err.contains("PermissionDenied") || end.is_none(),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_while_the_server_is_down_and_after_its_own_restart() {
    let mut p = pair();
    create(&p, "/web", &[]);
    let c = client(&p).await;
    let mut got = None;
    for _ in 0..300 {
        if let Ok(svid) = c.fetch_x509_svid().await {
            got = Some(svid);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        got.expect("an SVID").spiffe_id().to_string(),
        "spiffe://example.org/web"
    );

    p.server.kill();
    let svid = within("fetch with the server down", c.fetch_x509_svid())
        .await
        .unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");

    // Restart the agent while the server is down: it serves its persisted cache.
    p.agent.kill();
    let dir = p.server.dir.clone();
    p.agent = AgentProc::start(&dir, p.server.port, &p.bundle, None);
    let c = client(&p).await;
    let svid = within("fetch after the agent restarted", async {
        loop {
            if let Ok(s) = c.fetch_x509_svid().await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttl_svids_rotate_on_the_open_stream() {
    let p = pair();
    // The shortest TTL the server accepts; renewal comes at about half of it.
    create(&p, "/rotating", &["--x509SVIDTTL", "10"]);
    let c = client(&p).await;
    let mut stream = Box::pin(open_stream(&c).await);
    let mut serials = std::collections::BTreeSet::new();
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    within("two rotations", async {
        while serials.len() < 3 {
            if let Some(Ok(ctx)) = stream.next().await {
                for s in ctx.svids() {
                    serials.insert(s.leaf().as_ref().to_vec());
                }
            }
        }
    })
    .await;
    assert!(
        serials.len() >= 3,
        "the SVID was renewed twice on the open stream"
    );
    // Renewal at about half of a 10 s lifetime: two renewals take several seconds, never a
    // burst (which would mean renewing in a loop).
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "renewed too fast: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_node_attests_by_proof_of_possession_and_serves() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let dir = tempfile::tempdir().unwrap();
    // A node PKI: a CA the server trusts for x509pop, and this node's certificate and key.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, "node CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let node_key = KeyPair::generate().unwrap();
    let mut node = CertificateParams::new(Vec::<String>::new()).unwrap();
    node.distinguished_name
        .push(DnType::CommonName, "node-1.example.org");
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let node_cert = node.signed_by(&node_key, &issuer).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_path = write("node-ca.pem", &ca_cert.pem());
    let cert_path = write("node.crt.pem", &node_cert.pem());
    let key_path = write("node.key.pem", &node_key.serialize_pem());
    let server_conf = write(
        "server.toml",
        &format!(
            "[node_attestor.x509pop]\nca_bundle_path = {:?}\n",
            ca_path.display().to_string()
        ),
    );
    let agent_conf = write(
        "agent.toml",
        &format!(
            "[node_attestor.x509pop]\nprivate_key_path = {:?}\ncertificate_path = {:?}\n",
            key_path.display().to_string(),
            cert_path.display().to_string()
        ),
    );

    let server = ServerProc::start_with(dir.path(), 0, Some(&server_conf));
    let bundle = server.bundle_file();
    let agent = AgentProc::start_with(dir.path(), server.port, &bundle, None, Some(&agent_conf));
    let mut agent_id = String::new();
    wait_until("x509pop attestation", || {
        let out = String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).into_owned();
        match out
            .split_whitespace()
            .find(|w| w.starts_with("spiffe://example.org/spire/agent/x509pop/"))
        {
            Some(id) => {
                agent_id = id.to_owned();
                true
            }
            None => false,
        }
    });
    let shown = server.ok(&["agent", "show", "--spiffeID", &agent_id]);
    assert!(
        shown.contains("x509pop:subject:cn:node-1.example.org"),
        "{shown}"
    );

    let uid = format!("unix:uid:{}", my_uid());
    server.ok(&[
        "entry",
        "create",
        "--spiffeID",
        "spiffe://example.org/popped",
        "--parentID",
        &agent_id,
        "--selector",
        &uid,
    ]);
    let endpoint = agent.endpoint();
    let svid = within("an SVID through the x509pop agent", async {
        loop {
            if let Ok(c) = WorkloadApiClient::connect_to(&endpoint).await {
                if let Ok(s) = c.fetch_x509_svid().await {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/popped");
}
