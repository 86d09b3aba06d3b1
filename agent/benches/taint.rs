//! Forced rotation with real processes (issue 14): the time from tainting the old X.509 CA to
//! the last of 1,000 cached SVIDs re-signed by the new one, on a workload's open stream;
//! figures printed, not asserted.
//!
//! ```sh
//! cargo build --release -p tessera-server -p tessera-agent
//! cargo bench -p tessera-agent --bench taint
//! ```
//!
//! One server, one join-token agent (both release processes, real crypto, default settings:
//! the agent signs in rounds of `rotation.batch_size` = 500), and one workload (this process)
//! with a raw `FetchX509SVID` stream whose selectors match every entry, so each message holds
//! every SVID the agent caches. Each leaf's issuer is read from its Authority Key Identifier,
//! which is the CA's authority ID (its Subject Key Identifier, hex) that `LocalAuthority`
//! names; each message's bundle likewise.
//!
//! Per iteration:
//! 1. baseline: 999 entries created in one `BatchCreateEntry` (one more, the anchor the
//!    stream opened on, stays for the whole run): from the call to the first message with
//!    all 1,000 SVIDs: the same agent signing the same number of SVIDs, from scratch;
//! 2. `PrepareX509Authority`, `ActivateX509Authority` (the new CA signs from now on);
//! 3. `TaintX509Authority` of the old CA: from the call to the first message whose 1,000
//!    leaves all carry the new CA's key ID ("last SVID re-signed"), and to the first message
//!    with any of them ("first");
//! 4. `RevokeX509Authority` of the old CA: from the call to the first message whose bundle
//!    no longer holds it;
//! 5. the 999 entries deleted, and the stream back to the anchor alone.
//!
//! `TESSERA_BENCH_QUICK=1`: 2 iterations instead of [`ITERATIONS`]; `TESSERA_BENCH_KEEP=1`:
//! the processes' data dirs and logs are kept (their path is printed).

// A benchmark measures wall time by definition; the library ban on clocks does not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/e2e/processes.rs"]
#[allow(dead_code)]
mod processes;
#[path = "support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use support::{entry, pct, uds};
use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    BatchCreateEntryRequest, BatchDeleteEntryRequest,
};
use tessera_proto::spire::api::server::localauthority::v1::local_authority_client::LocalAuthorityClient;
use tessera_proto::spire::api::server::localauthority::v1::{
    ActivateX509AuthorityRequest, GetX509AuthorityStateRequest, PrepareX509AuthorityRequest,
    RevokeX509AuthorityRequest, TaintX509AuthorityRequest,
};
use tessera_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tessera_proto::workload::{X509svidRequest, X509svidResponse};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};

/// SVIDs the agent caches during a measurement (the anchor and the iteration's entries).
const SVIDS: usize = 1_000;
const ITERATIONS: usize = 6;
/// Longest wait for any one step.
const STEP: Duration = Duration::from_secs(120);

/// One message of the workload's stream, digested.
struct Seen {
    at: Instant,
    /// SVIDs by the key ID (hex) of the CA that signed their leaf.
    by_issuer: HashMap<String, usize>,
    total: usize,
    /// Key IDs (hex) of the X.509 authorities of the message's bundle.
    bundle: Vec<String>,
}

fn key_id(der: &[u8], subject: bool) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(k) if !subject => {
                k.key_identifier.as_ref().map(|k| hex::encode(k.0))
            }
            ParsedExtension::SubjectKeyIdentifier(k) if subject => Some(hex::encode(k.0)),
            _ => None,
        })
}

/// The certificates of a concatenation of DER certificates.
fn split_der(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Ok((rest, _)) = X509Certificate::from_der(bytes) else {
            break;
        };
        out.push(&bytes[..bytes.len() - rest.len()]);
        bytes = rest;
    }
    out
}

fn digest(at: Instant, msg: &X509svidResponse) -> Seen {
    let mut by_issuer = HashMap::new();
    for s in &msg.svids {
        let leaf = split_der(&s.x509_svid)
            .first()
            .and_then(|l| key_id(l, false));
        *by_issuer.entry(leaf.unwrap_or_default()).or_insert(0) += 1;
    }
    let bundle = msg
        .svids
        .first()
        .map(|s| {
            split_der(&s.bundle)
                .into_iter()
                .filter_map(|c| key_id(c, true))
                .collect()
        })
        .unwrap_or_default();
    Seen {
        at,
        by_issuer,
        total: msg.svids.len(),
        bundle,
    }
}

/// Reads the stream into `tx` until it ends.
async fn follow(sock: std::path::PathBuf, tx: mpsc::UnboundedSender<Seen>) {
    let mut workload = SpiffeWorkloadApiClient::new(uds(sock)).max_decoding_message_size(64 << 20);
    let deadline = Instant::now() + STEP;
    let mut stream = loop {
        let mut req = tonic::Request::new(X509svidRequest {});
        req.metadata_mut()
            .insert("workload.spiffe.io", "true".parse().unwrap());
        if let Ok(s) = workload.fetch_x509svid(req).await {
            break s.into_inner();
        }
        assert!(Instant::now() < deadline, "no stream within {STEP:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Some(Ok(msg)) = stream.next().await {
        if tx.send(digest(Instant::now(), &msg)).is_err() {
            return;
        }
    }
}

/// The first message (from now on) that satisfies `ok`, bounded by [`STEP`].
async fn until(
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    what: &str,
    ok: impl Fn(&Seen) -> bool,
) -> Seen {
    let wait = async {
        loop {
            let seen = rx.recv().await.expect("the stream stays open");
            if ok(&seen) {
                return seen;
            }
        }
    };
    tokio::time::timeout(STEP, wait)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {STEP:?}"))
}

struct Iteration {
    baseline: Duration,
    first: Duration,
    last: Duration,
    revoke: Duration,
}

async fn iteration(
    n: usize,
    entries: &mut EntryClient<Channel>,
    authority: &mut LocalAuthorityClient<Channel>,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    agent_id: &str,
    uid: u32,
) -> Iteration {
    // 1. The baseline: 999 SVIDs signed from scratch.
    let batch = (1..SVIDS)
        .map(|i| entry(&format!("/it{n}/w{i}"), agent_id, uid))
        .collect();
    let t0 = Instant::now();
    let created = entries
        .batch_create_entry(BatchCreateEntryRequest {
            entries: batch,
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = created
        .results
        .into_iter()
        .filter_map(|r| r.entry.map(|e| e.id))
        .collect();
    assert_eq!(ids.len(), SVIDS - 1, "every entry created");
    let all = until(rx, "the initial SVIDs", |s| s.total == SVIDS).await;
    let baseline = all.at - t0;

    // 2. A new CA, signing.
    let old = authority
        .get_x509_authority_state(GetX509AuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner()
        .active
        .expect("an active CA")
        .authority_id;
    assert_eq!(
        all.by_issuer.get(&old),
        Some(&SVIDS),
        "every SVID signed by the active CA, named by its key ID"
    );
    let new = authority
        .prepare_x509_authority(PrepareX509AuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .expect("a prepared CA")
        .authority_id;
    authority
        .activate_x509_authority(ActivateX509AuthorityRequest {
            authority_id: new.clone(),
        })
        .await
        .unwrap();

    // 3. The taint.
    let t0 = Instant::now();
    authority
        .taint_x509_authority(TaintX509AuthorityRequest {
            authority_id: old.clone(),
        })
        .await
        .unwrap();
    let first = until(rx, "the first re-signed SVID", |s| {
        s.by_issuer.get(&new).is_some_and(|n| *n > 0)
    })
    .await;
    let first_at = first.at;
    let last = if first.by_issuer.get(&new) == Some(&SVIDS) {
        first
    } else {
        until(rx, "the last re-signed SVID", |s| {
            s.by_issuer.get(&new) == Some(&SVIDS)
        })
        .await
    };
    let (first, last) = (first_at - t0, last.at - t0);

    // 4. The revocation.
    let t0 = Instant::now();
    authority
        .revoke_x509_authority(RevokeX509AuthorityRequest {
            authority_id: old.clone(),
        })
        .await
        .unwrap();
    let gone = until(rx, "the bundle without the old CA", |s| {
        !s.bundle.is_empty() && !s.bundle.contains(&old)
    })
    .await;
    let revoke = gone.at - t0;

    // 5. Back to the anchor alone.
    entries
        .batch_delete_entry(BatchDeleteEntryRequest { ids })
        .await
        .unwrap();
    until(rx, "the anchor alone", |s| s.total == 1).await;
    Iteration {
        baseline,
        first,
        last,
        revoke,
    }
}

fn binaries_or_exit() {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let missing: Vec<&str> = ["tessera-server", "tessera-agent"]
        .into_iter()
        .filter(|name| !dir.join(name).exists())
        .collect();
    if !missing.is_empty() {
        println!(
            "taint bench: {} not found in {}: build the binaries first with \
             `cargo build --release -p tessera-server -p tessera-agent`, then run \
             `cargo bench -p tessera-agent --bench taint`",
            missing.join(" and "),
            dir.display()
        );
        std::process::exit(0);
    }
}

fn row(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "  {name:<44} median {:>8.1} ms  p90 {:>8.1} ms  min {:>8.1} ms  max {:>8.1} ms",
        pct(&v, 0.5).as_secs_f64() * 1e3,
        pct(&v, 0.9).as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
    );
}

fn main() {
    binaries_or_exit();
    let iterations = if std::env::var("TESSERA_BENCH_QUICK").is_ok() {
        2
    } else {
        ITERATIONS
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // TESSERA_BENCH_KEEP=1 keeps the processes' logs and data for a look afterwards.
    let keep = std::env::var("TESSERA_BENCH_KEEP").is_ok();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        println!("data and logs kept in {}", dir.path().display());
    }
    let server = ServerProc::start(dir.path(), 0);
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent = AgentProc::start(dir.path(), server.port, &bundle, Some(&token));
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    let uid = my_uid();
    println!(
        "tessera-agent taint bench: one agent caching {SVIDS} X.509-SVIDs for one workload's \
         open stream, {iterations} iterations (release processes, real crypto)"
    );
    let rows = rt.block_on(async {
        let mut entries = EntryClient::new(uds(server.sock.clone()));
        let mut authority = LocalAuthorityClient::new(uds(server.sock.clone()));
        entries
            .batch_create_entry(BatchCreateEntryRequest {
                entries: vec![entry("/anchor", &agent_id, uid)],
                output_mask: None,
            })
            .await
            .unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(agent.sock.clone(), tx));
        until(&mut rx, "the anchor's SVID", |s| s.total == 1).await;
        let mut rows = Vec::new();
        for n in 0..iterations {
            let it = iteration(n, &mut entries, &mut authority, &mut rx, &agent_id, uid).await;
            println!(
                "  iteration {n}: initial signing {:.1} ms; taint -> first re-signed {:.1} ms, \
                 -> last re-signed {:.1} ms; revoke -> bundle without the old CA {:.1} ms",
                it.baseline.as_secs_f64() * 1e3,
                it.first.as_secs_f64() * 1e3,
                it.last.as_secs_f64() * 1e3,
                it.revoke.as_secs_f64() * 1e3,
            );
            rows.push(it);
        }
        rows
    });
    println!("summary ({SVIDS} SVIDs on one agent, {iterations} iterations):");
    row(
        "taint -> last SVID re-signed (on the stream)",
        rows.iter().map(|r| r.last).collect(),
    );
    row(
        "taint -> first SVID re-signed",
        rows.iter().map(|r| r.first).collect(),
    );
    row(
        "baseline: 999 new entries -> all signed",
        rows.iter().map(|r| r.baseline).collect(),
    );
    row(
        "revoke -> bundle without the old CA",
        rows.iter().map(|r| r.revoke).collect(),
    );
    drop(agent);
    drop(server);
}
