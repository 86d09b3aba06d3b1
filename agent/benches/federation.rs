//! A federated bundle's change, from the foreign server's admin API to a federated workload's
//! X.509 bundle stream, with real processes; figures printed, not asserted.
//!
//! ```sh
//! cargo build --release --bins
//! cargo bench -p tessera-agent --bench federation
//! ```
//!
//! Two servers on loopback:
//!
//! - `partner.example` with `ca_ttl = "60s"` (the least allowed), so that it rotates on its
//!   own: a new X.509 CA joins the bundle at half the current one's life and the one before
//!   leaves at its expiry, about two authority changes a minute. It serves its bundle
//!   endpoint with `refresh_hint = "1s"` and the `https_spiffe` profile.
//! - `example.org` (the platform) follows it (`federation create`, bootstrapped with the
//!   partner's `bundle show --format spiffe`) with
//!   `[limits.federation] min_refresh = "1s"`, so the 1 s hint is honoured. One join-token
//!   agent; an entry for this process's uid federating with `partner.example` and
//!   `third.example`; a `FetchX509Bundles` stream (the crates.io `spiffe` client) open on the
//!   agent's socket.
//!
//! Trial: a change of the partner's X.509 authorities. t0 is when the partner's admin API
//! (`Bundle.GetBundle` over its Unix socket, polled every [`POLL`] in a task) first shows the
//! new authority set; t1 is when the workload's stream first shows that set (or a later one,
//! when two changes came closer together than a refresh: the later one then covers both).
//!
//! Baseline, in the same run: `third.example`'s bundle set on the platform with `bundle set`
//! every [`BASELINE_EVERY`], t0 from the platform's `GetFederatedBundle`, t1 from the same
//! stream: the platform's event → sync → agent → Workload API path without the fetch. (The
//! brief asked for the platform's own CA rotation with `ca_ttl = "60s"`; with CAs that short
//! the platform's agent API served an expired server SVID for many seconds after a bundle
//! change, and the 20 s agent SVIDs expired under a sync connection, so its agent died
//! within two minutes in every attempt. The own bundle cannot be changed another way:
//! `AppendBundle` is not implemented.)
//!
//! A poll brackets t0: the change became visible after the last poll without it was sent and
//! before the first poll with it was answered. Both are printed: from the former (an upper
//! bound of the latency; the ratio uses it) and from the latter (a lower bound). The
//! baseline often reaches the stream before the poll that shows it is answered.
//!
//! Runs until [`CHANGES`] federated changes have reached the stream (`TESSERA_BENCH_QUICK=1`:
//! 2), bounded in time; about four and a half minutes in full.

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

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use processes::{my_uid, wait_until, AgentProc, ServerProc};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use spiffe::{TrustDomain, WorkloadApiClient, WorkloadApiError, X509BundleSet};
use support::{pct, uds};
use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::{GetBundleRequest, GetFederatedBundleRequest};

/// Federated changes to collect (each CA prepared or retired is one).
const CHANGES: usize = 8;
/// How often each server's `GetBundle` is polled for t0.
const POLL: Duration = Duration::from_millis(5);
/// Longest wait for any one set-up step.
const STEP: Duration = Duration::from_secs(30);
/// A change not on the stream after this long is reported as lost, not as a figure.
const LOST_AFTER: Duration = Duration::from_secs(15);

const PARTNER: &str = "partner.example";
const PLATFORM: &str = "example.org";
/// The baseline's trust domain: its bundle is set on the platform with `bundle set`.
const THIRD: &str = "third.example";
/// Time between two baseline changes.
const BASELINE_EVERY: Duration = Duration::from_secs(3);

/// A sorted set of DER X.509 authorities.
type Authorities = Vec<Vec<u8>>;
type Bundles = Pin<Box<dyn Stream<Item = Result<X509BundleSet, WorkloadApiError>> + Send>>;

/// One authority set, and when it was first seen.
#[derive(Clone)]
struct Seen {
    at: Instant,
    /// For a poll: when the last poll that did not show `set` was sent, the earliest the
    /// change can have been visible. For the stream: `at`.
    since: Instant,
    set: Authorities,
}

/// What the workload's stream delivered, message by message.
#[derive(Default)]
struct StreamLog {
    partner: Vec<Seen>,
    third: Vec<Seen>,
    /// Why the stream stopped, if it did.
    ended: Option<String>,
}

/// One change of a trust domain's authorities, matched to the stream.
struct Change {
    /// From the last poll that did not show the change (sent) to the stream: an upper bound.
    latency: Duration,
    /// From the first poll that showed it (answered) to the stream: a lower bound, 0 when
    /// the stream was first.
    latency_late: Duration,
    /// The stream showed a later set first (two changes within one refresh).
    covered_by_later: bool,
    /// The stream showed the set before the first poll showing it was answered.
    stream_first: bool,
}

// === helpers ===

/// Stops with a clear message unless both binaries are where [`processes::bin`] looks.
fn binaries_or_exit() {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let missing: Vec<&str> = ["tessera-server", "tessera-agent"]
        .into_iter()
        .filter(|name| !dir.join(name).exists())
        .collect();
    if !missing.is_empty() {
        println!(
            "federation bench: {} not found in {}: build the binaries first with \
             `cargo build --release --bins`, then run `cargo bench -p tessera-agent --bench federation`",
            missing.join(" and "),
            dir.display()
        );
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// "p50 .. p99 .. max .. (n changes)" of `latency`, or why there is none.
fn summary(changes: &[Change], latency: fn(&Change) -> Duration) -> String {
    if changes.is_empty() {
        return "no change reached the stream".to_owned();
    }
    let mut v: Vec<Duration> = changes.iter().map(latency).collect();
    v.sort();
    format!(
        "p50 {:>9}  p99 {:>9}  max {:>9}  ({} changes)",
        ms(pct(&v, 0.5)),
        ms(pct(&v, 0.99)),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn median(changes: &[Change]) -> Option<Duration> {
    let mut v: Vec<Duration> = changes.iter().map(|c| c.latency).collect();
    v.sort();
    (!v.is_empty()).then(|| pct(&v, 0.5))
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// The last lines of a log file (the temp dir goes when the bench stops).
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn sorted(mut v: Authorities) -> Authorities {
    v.sort();
    v
}

/// The X.509 authorities of `td` in a Workload API bundle set, if it holds that bundle.
fn authorities_in(set: &X509BundleSet, td: &TrustDomain) -> Option<Authorities> {
    set.get(td).map(|b| {
        sorted(
            b.authorities()
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect(),
        )
    })
}

/// Records every change of a server's X.509 authorities, polling `GetBundle` on its admin
/// socket every [`POLL`]. The first set recorded is the state at start, not a change.
async fn watch_admin(sock: PathBuf, federated: Option<&'static str>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut client = BundleClient::new(uds(sock));
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Authorities> = None;
    let mut unchanged_sent = Instant::now();
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let reply = match federated {
            None => {
                client
                    .get_bundle(GetBundleRequest { output_mask: None })
                    .await
            }
            Some(td) => {
                client
                    .get_federated_bundle(GetFederatedBundleRequest {
                        trust_domain: td.to_owned(),
                        output_mask: None,
                    })
                    .await
            }
        };
        let Ok(reply) = reply else {
            // A transient failure only delays t0 by a poll; the bench's time bound stops it.
            continue;
        };
        let at = Instant::now();
        let set = sorted(
            reply
                .into_inner()
                .x509_authorities
                .into_iter()
                .map(|a| a.asn1)
                .collect(),
        );
        if last.as_ref() != Some(&set) {
            last = Some(set.clone());
            log.lock().unwrap().push(Seen {
                at,
                since: unchanged_sent,
                set,
            });
        }
        unchanged_sent = sent;
    }
}

/// Records each partner.example and third.example authority set the stream delivers,
/// stamped on arrival.
async fn watch_stream(mut stream: Bundles, log: Arc<Mutex<StreamLog>>) {
    let (partner, third) = (
        TrustDomain::new(PARTNER).unwrap(),
        TrustDomain::new(THIRD).unwrap(),
    );
    loop {
        let item = stream.next().await;
        let at = Instant::now();
        let mut log = log.lock().unwrap();
        match item {
            Some(Ok(set)) => {
                if let Some(set) = authorities_in(&set, &partner) {
                    log.partner.push(Seen { at, since: at, set });
                }
                if let Some(set) = authorities_in(&set, &third) {
                    log.third.push(Seen { at, since: at, set });
                }
            }
            Some(Err(e)) => {
                log.ended = Some(format!("the stream failed: {e}"));
                return;
            }
            None => {
                log.ended = Some("the stream ended".to_owned());
                return;
            }
        }
    }
}

/// Matches each change `admin` recorded (after the first, the state at start) to the
/// stream's first message with that set or a later one. Returns the matched changes and how
/// many are older than [`LOST_AFTER`] with no match.
fn resolve(admin: &[Seen], stream: &[Seen], now: Instant) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut lost = 0;
    for i in 1..admin.len() {
        let later = &admin[i..];
        let hit = stream
            .iter()
            .find_map(|s| later.iter().position(|a| a.set == s.set).map(|k| (s.at, k)));
        match hit {
            Some((at, k)) => changes.push(Change {
                latency: at.saturating_duration_since(admin[i].since),
                latency_late: at.saturating_duration_since(admin[i].at),
                covered_by_later: k > 0,
                stream_first: at < admin[i].at,
            }),
            None if now.duration_since(admin[i].at) > LOST_AFTER => lost += 1,
            None => {}
        }
    }
    (changes, lost)
}

/// Opens a `FetchX509Bundles` stream on the agent once it serves the partner's bundle to
/// this process (before the entry reaches the agent it answers PermissionDenied).
async fn open_stream(endpoint: &str) -> Bundles {
    let partner = TrustDomain::new(PARTNER).unwrap();
    let open = async {
        loop {
            if let Ok(client) = WorkloadApiClient::connect_to(endpoint).await {
                if let Ok(s) = client.stream_x509_bundles().await {
                    let mut s: Bundles = Box::pin(s);
                    while let Some(Ok(set)) = s.next().await {
                        if set.get(&partner).is_some() {
                            return s;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(STEP, open)
        .await
        .expect("a FetchX509Bundles stream holding partner.example's bundle within 30 s")
}

/// A self-signed CA certificate (PEM) with a new key, and an issuer to sign with it.
fn test_ca(name: &str) -> (String, rcgen::Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

/// Sets the platform's bundle of [`THIRD`] to one new authority every [`BASELINE_EVERY`],
/// with the CLI (a blocking loop, in its own thread; ends with the process).
fn baseline_changes(sock: PathBuf, dir: PathBuf) {
    for i in 0.. {
        let path = write(
            &dir.join(format!("third-{i}.pem")),
            &test_ca(&format!("third.example {i}")).0,
        );
        let out = Command::new(processes::bin("tessera-server"))
            .args(["bundle", "set", "--id", "spiffe://third.example", "--path"])
            .arg(&path)
            .arg("--socketPath")
            .arg(&sock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bundle set of third.example: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(BASELINE_EVERY);
    }
}

fn main() {
    binaries_or_exit();
    let quick = std::env::var("TESSERA_BENCH_QUICK").is_ok();
    let wanted = if quick { 2 } else { CHANGES };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(wanted));
}

async fn run(wanted: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The partner rotates fast. A 1 s rotation check prepares and retires CAs on time instead
    // of up to 10 s late; SVIDs must be shorter than the CA. Its agent API is unused.
    let partner_dir = root.join("partner");
    std::fs::create_dir_all(&partner_dir).unwrap();
    let partner_conf = write(
        &partner_dir.join("server.toml"),
        "[server]\nca_ttl = \"60s\"\ndefault_x509_svid_ttl = \"20s\"\n\
         default_jwt_svid_ttl = \"20s\"\nrotation_check_interval = \"1s\"\n\
         [federation.bundle_endpoint]\naddress = \"127.0.0.1\"\nport = 0\n\
         refresh_hint = \"1s\"\nprofile = \"https_spiffe\"\n",
    );
    let partner = ServerProc::start_in(PARTNER, &partner_dir, Some(&partner_conf), &[]);
    let partner_endpoint = partner.bundle_endpoint_port();

    // The platform: default CA and SVID lifetimes; a 1 s refresh hint honoured.
    let platform_dir = root.join("platform");
    std::fs::create_dir_all(&platform_dir).unwrap();
    let platform_conf = write(
        &platform_dir.join("server.toml"),
        "[limits.federation]\nmin_refresh = \"1s\"\n",
    );
    let platform = ServerProc::start_in(PLATFORM, &platform_dir, Some(&platform_conf), &[]);
    let partner_jwks = write(
        &root.join("partner.jwks"),
        &partner.ok(&["bundle", "show", "--format", "spiffe"]),
    );
    platform.ok(&[
        "federation",
        "create",
        "--trustDomain",
        PARTNER,
        "--bundleEndpointURL",
        &format!("https://127.0.0.1:{partner_endpoint}"),
        "--bundleEndpointProfile",
        "https_spiffe",
        "--endpointSpiffeID",
        "spiffe://partner.example/spire/server",
        "--trustDomainBundlePath",
        partner_jwks.to_str().unwrap(),
        "--trustDomainBundleFormat",
        "spiffe",
    ]);
    let third = write(&root.join("third.pem"), &test_ca("third.example").0);
    platform.ok(&[
        "bundle",
        "set",
        "--id",
        "spiffe://third.example",
        "--path",
        third.to_str().unwrap(),
    ]);

    let token = platform.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent_dir = root.join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent = AgentProc::start(
        &agent_dir,
        platform.port,
        &platform.bundle_file(),
        Some(&token),
    );
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&platform.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    platform.ok(&[
        "entry",
        "create",
        "--spiffeID",
        "spiffe://example.org/federated",
        "--parentID",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", my_uid()),
        "--federatesWith",
        "spiffe://partner.example",
        "--federatesWith",
        "spiffe://third.example",
    ]);
    let stream = open_stream(&agent.endpoint()).await;

    let partner_admin = Arc::new(Mutex::new(Vec::new()));
    let third_admin = Arc::new(Mutex::new(Vec::new()));
    let stream_log = Arc::new(Mutex::new(StreamLog::default()));
    let tasks = [
        tokio::spawn(watch_admin(
            partner.sock.clone(),
            None,
            partner_admin.clone(),
        )),
        tokio::spawn(watch_admin(
            platform.sock.clone(),
            Some(THIRD),
            third_admin.clone(),
        )),
        tokio::spawn(watch_stream(stream, stream_log.clone())),
    ];
    {
        let (sock, dir) = (platform.sock.clone(), root.to_owned());
        std::thread::spawn(move || baseline_changes(sock, dir));
    }

    // Two changes a minute (a CA prepared, the one before the last retired), the first at
    // half a CA's life: a generous bound.
    let start = Instant::now();
    let bound = Duration::from_secs(90) + Duration::from_secs(45) * wanted as u32;
    let (federated, base, fed_lost, base_lost) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let log = stream_log.lock().unwrap();
        if let Some(why) = &log.ended {
            panic!(
                "{why}; the agent's log ends:\n{}",
                tail(&agent_dir.join("agent.log"))
            );
        }
        let (federated, fed_lost) = resolve(&partner_admin.lock().unwrap(), &log.partner, now);
        let (base, base_lost) = resolve(&third_admin.lock().unwrap(), &log.third, now);
        if federated.len() >= wanted || start.elapsed() > bound {
            break (federated, base, fed_lost, base_lost);
        }
    };
    for t in &tasks {
        t.abort();
    }
    let elapsed = start.elapsed();
    let refresh = platform.ok(&["federation", "show", "--trustDomain", PARTNER]);

    println!(
        "federation: partner.example (ca_ttl 60s: rotating; bundle endpoint https_spiffe, \
         refresh_hint 1s) federated into example.org ([limits.federation] min_refresh 1s); one \
         agent; a FetchX509Bundles stream for an entry federating with partner.example and \
         third.example; {:.0} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  trial: the partner's X.509 authorities change in its GetBundle -> the same on the \
         workload's stream"
    );
    println!(
        "  baseline: third.example's bundle set on the platform (`bundle set`, every {} s), in \
         its GetFederatedBundle -> the same on the stream",
        BASELINE_EVERY.as_secs()
    );
    println!(
        "  t0 = the last poll (every {}) without the change was sent (upper bound):",
        ms(POLL)
    );
    println!(
        "    federated over the endpoint: {}",
        summary(&federated, |c| c.latency)
    );
    println!(
        "    set on the platform:         {}",
        summary(&base, |c| c.latency)
    );
    println!(
        "  t0 = the first poll with the change was answered (lower bound, 0 if the stream was first):"
    );
    println!(
        "    federated over the endpoint: {}",
        summary(&federated, |c| c.latency_late)
    );
    println!(
        "    set on the platform:         {}",
        summary(&base, |c| c.latency_late)
    );
    if let (Some(f), Some(o)) = (median(&federated), median(&base)) {
        println!(
            "  ratio of medians (upper bounds), federated / baseline: {:.0}",
            f.as_secs_f64() / o.as_secs_f64().max(1e-6)
        );
    }
    for (name, changes, lost) in [
        ("federated", &federated, fed_lost),
        ("baseline", &base, base_lost),
    ] {
        let covered = changes.iter().filter(|c| c.covered_by_later).count();
        let first = changes.iter().filter(|c| c.stream_first).count();
        if covered + first + lost > 0 {
            println!(
                "  {name}: {covered} reached the stream only as a later set, {first} on the \
                 stream before the first poll showing them was answered, {lost} not on the \
                 stream after {} s",
                LOST_AFTER.as_secs()
            );
        }
    }
    if federated.len() < wanted {
        println!(
            "  only {} of {wanted} federated changes within {} s",
            federated.len(),
            bound.as_secs()
        );
    }
    println!("  the platform's `federation show`:");
    for line in refresh.lines() {
        println!("    {line}");
    }
    drop(agent);
    drop((platform, partner));
}
