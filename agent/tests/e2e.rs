//! End to end with real processes: `tessera-server` and `tessera-agent` on loopback, and the
//! independent crates.io `spiffe` client on the agent's Workload API socket.
//!
//! - an entry created on the server reaches an already open `FetchX509SVID` stream; deleting
//!   the last one ends it with PermissionDenied;
//! - the server killed: the agent keeps serving; the agent restarted while the server is
//!   down: it serves its persisted cache at once;
//! - a short X.509-SVID TTL: rotation observed on the open stream;
//! - evicted, a join-token agent exits naming the fix (its token is spent);
//! - x509pop: attestation by proof of possession; evicted, the agent attests again without a
//!   restart and keeps serving; banned, it exits naming the fix;
//! - several server addresses: the agent fails over and resumes its sync from its cursor
//!   (`e2e/failover.rs`);
//! - several servers on one PostgreSQL log (`e2e/servers.rs`), and a database outage
//!   (`e2e/outage.rs`, on a private PostgreSQL instance the test starts and stops);
//! - the LRU SVID cache: eager up to its size, on demand beyond, eviction, a soft limit for
//!   open streams (`e2e/svid_cache.rs`);
//! - two trust domains federating with both bundle endpoint profiles (`e2e/federation.rs`).
//! - OpenTelemetry: one trace from a Workload API call through the server's signing, across
//!   both processes, with no secret in any attribute (`e2e/tracing.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[path = "e2e/failover.rs"]
mod failover;
#[path = "e2e/federation.rs"]
mod federation;
#[path = "e2e/outage.rs"]
mod outage;
#[path = "e2e/processes.rs"]
mod processes;
#[path = "e2e/proxy.rs"]
mod proxy;
#[path = "e2e/servers.rs"]
mod servers;
#[path = "e2e/svid_cache.rs"]
mod svid_cache;
#[path = "e2e/taint.rs"]
mod taint;
#[path = "e2e/tracing.rs"]
mod traces;

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
    client_at(&p.agent).await
}

/// A Workload API client of `agent`, once its socket accepts (bounded: 30 s).
async fn client_at(agent: &AgentProc) -> WorkloadApiClient {
    let endpoint = agent.endpoint();
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
async fn an_evicted_join_token_agent_stops_naming_the_fix() {
    let mut p = pair();
    create(&p, "/web", &[]);
    let c = client(&p).await;
    within("an SVID before the eviction", async {
        while c.fetch_x509_svid().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    p.server.ok(&["agent", "evict", "--spiffeID", &p.agent_id]);
    let mut status = None;
    wait_until("the evicted agent's exit", || {
        status = p.agent.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "{status:?}");
    let log = std::fs::read_to_string(p.server.dir.join("agent.log")).unwrap();
    let exit = log
        .lines()
        .find(|l| l.starts_with("run: "))
        .unwrap_or_default();
    assert!(
        exit.contains("join token is spent") && exit.contains("tessera-server token generate"),
        "the exit message names the fix: {log}"
    );
}

/// A node PKI for x509pop under `dir`: a CA the server trusts and this node's certificate
/// and key. Returns the server's and the agent's config files.
fn x509pop_configs(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

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
        let p = dir.join(name);
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
    (server_conf, agent_conf)
}

/// Waits for the x509pop agent to be attested; returns its SPIFFE ID.
fn x509pop_agent_id(server: &ServerProc) -> String {
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
    agent_id
}

/// An X.509-SVID from the agent at `endpoint`, retried until it has one for us.
async fn fetch_svid(endpoint: &str, what: &str) -> spiffe::X509Svid {
    within(what, async {
        loop {
            if let Ok(c) = WorkloadApiClient::connect_to(endpoint).await {
                if let Ok(s) = c.fetch_x509_svid().await {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_node_attests_by_proof_of_possession_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (server_conf, agent_conf) = x509pop_configs(dir.path());
    let server = ServerProc::start_with(dir.path(), 0, Some(&server_conf));
    let bundle = server.bundle_file();
    let agent = AgentProc::start_with(dir.path(), server.port, &bundle, None, Some(&agent_conf));
    let agent_id = x509pop_agent_id(&server);
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
    let svid = fetch_svid(&agent.endpoint(), "an SVID through the x509pop agent").await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/popped");
}

/// The serial of the agent's current SVID, as the server has it (`None` while it has no
/// record of the agent).
fn agent_serial(server: &ServerProc, agent_id: &str) -> Option<String> {
    let out = server.cli(&["agent", "show", "--spiffeID", agent_id]);
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.strip_prefix("Serial number")
            .map(|r| r.trim_start_matches([' ', ':']).trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_x509pop_agent_attests_again_and_a_banned_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (server_conf, agent_conf) = x509pop_configs(dir.path());
    let server = ServerProc::start_with(dir.path(), 0, Some(&server_conf));
    let bundle = server.bundle_file();
    let mut agent =
        AgentProc::start_with(dir.path(), server.port, &bundle, None, Some(&agent_conf));
    let agent_id = x509pop_agent_id(&server);
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
    let svid = fetch_svid(&endpoint, "an SVID before the eviction").await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/popped");
    let first_serial = agent_serial(&server, &agent_id).expect("the agent's record");
    let svid_file = dir.path().join("agent/agent_svid.pem");
    let first_svid = std::fs::read(&svid_file).unwrap();

    // Evicted: the agent attests again by itself, with the same ID (the certificate's
    // fingerprint) and a new agent SVID, and keeps serving without a restart.
    assert!(server
        .ok(&["agent", "evict", "--spiffeID", &agent_id])
        .contains("evicted"));
    let mut second_serial = None;
    wait_until("re-attestation after the eviction", || {
        second_serial = agent_serial(&server, &agent_id).filter(|s| *s != first_serial);
        second_serial.is_some()
    });
    wait_until("the new agent SVID stored", || {
        std::fs::read(&svid_file).is_ok_and(|b| b != first_svid)
    });
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent runs on"
    );
    let svid = fetch_svid(&endpoint, "an SVID after the re-attestation").await;
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/popped");

    // Banned: attesting again is refused; the agent says so, names the fix, and exits
    // non-zero (as SPIRE's agent does).
    server.ok(&["agent", "ban", "--spiffeID", &agent_id]);
    let mut status = None;
    wait_until("the banned agent's exit", || {
        status = agent.child.try_wait().unwrap();
        status.is_some()
    });
    assert!(!status.unwrap().success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("re-attested with x509pop"), "{log}");
    // The error `main` prints on the way out.
    let exit = log
        .lines()
        .find(|l| l.starts_with("run: "))
        .unwrap_or_default();
    assert!(
        exit.contains(&format!("agent {agent_id} is banned"))
            && exit.contains(&format!("tessera-server agent evict --spiffeID {agent_id}")),
        "the exit message names the ban and the fix: {log}"
    );
}
