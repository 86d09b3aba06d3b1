//! A PostgreSQL outage under two servers sharing one log, on a private instance the test
//! starts, stops and restarts (`PrivatePostgres`): one agent with both servers' addresses, an
//! entry whose X.509-SVID lives 20 s (the agent renews it every ~10 s), and a Workload API
//! stream open on it.
//!
//! - database down: the stream keeps delivering SVIDs with new serials (signed from the
//!   servers' folded state, without the database), a JWT-SVID is minted and entries can be
//!   read; `entry create` and `token generate` fail promptly, non-zero, naming the unavailable
//!   database; a second agent's attestation is refused as Unavailable and it keeps trying; no
//!   server and no agent exits;
//! - database back: `entry create` works again, the new entry reaches the open stream and the
//!   other server, the second agent attests, a join token is issued, and `events verify`
//!   passes on both servers.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tessera_eventlog::pg::testing::PrivatePostgres;

use super::processes::{my_uid, wait_until, AgentProc, ServerProc};
use super::{client, create, ids, open_stream, within, Pair};

const ROTATING: &str = "spiffe://example.org/outage/rotating";
const AFTER: &str = "spiffe://example.org/outage/after";
/// Generous: a refused connection answers at once; the servers' connect timeout is 2 s and
/// their statement timeout 5 s (`ServerProc::start_pg`).
const PROMPT: Duration = Duration::from_secs(15);

type Contexts<'a> = std::pin::Pin<
    Box<dyn Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + 'a>,
>;

fn logs(dir: &Path) -> String {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    format!(
        "--- server a:\n{}\n--- server b:\n{}\n--- agent:\n{}\n--- second agent:\n{}",
        read(&dir.join("a/server.log")),
        read(&dir.join("b/server.log")),
        read(&dir.join("agent.log")),
        read(&dir.join("second/agent.log"))
    )
}

/// Waits (each step at most 30 s) for an SVID of [`ROTATING`] whose certificate is not in
/// `seen`; returns after adding it.
async fn new_serial(stream: &mut Contexts<'_>, seen: &mut BTreeSet<Vec<u8>>, what: &str) {
    loop {
        let ctx = within(what, stream.next())
            .await
            .unwrap_or_else(|| panic!("{what}: the Workload API stream ended"))
            .unwrap_or_else(|e| panic!("{what}: error on the open stream: {e:?}"));
        let leaf = ctx
            .svids()
            .iter()
            .find(|s| s.spiffe_id().to_string() == ROTATING)
            .map(|s| s.leaf().as_ref().to_vec());
        if let Some(leaf) = leaf {
            if seen.insert(leaf) {
                return;
            }
        }
    }
}

/// Runs `tessera-server <args>` on `server`, which must fail within [`PROMPT`] and say the
/// `database` is unavailable.
fn refused(server: &ServerProc, args: &[&str], database: &str, dir: &Path) {
    #[allow(clippy::disallowed_methods)] // A bound on a real process, not product time.
    let started = Instant::now();
    let out = server.cli(args);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "tessera-server {args:?} succeeded with the database down: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        logs(dir)
    );
    assert!(
        took < PROMPT,
        "tessera-server {args:?} took {took:?} to fail (bound {PROMPT:?}): {stderr}"
    );
    assert!(
        stderr.contains(database) && stderr.to_lowercase().contains("unavailable"),
        "tessera-server {args:?}: stderr names {database} and says it is unavailable: {stderr}"
    );
}

fn running(what: &str, child: &mut std::process::Child, dir: &Path) {
    assert!(
        child.try_wait().unwrap().is_none(),
        "{what} exited: {:?}\n{}",
        child.try_wait(),
        logs(dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_sign_through_a_database_outage_and_write_again_after_it() {
    let Some(mut pg) = PrivatePostgres::start().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url();
    let a = ServerProc::start_pg(&dir.path().join("a"), &url, "server-a", "");
    let mut b = ServerProc::start_pg(&dir.path().join("b"), &url, "server-b", "");
    // The agent's bootstrap bundle must hold both servers' CAs: it may dial either one.
    wait_until("both servers' CAs in server a's bundle", || {
        a.ok(&["bundle", "show"])
            .matches("BEGIN CERTIFICATE")
            .count()
            >= 2
    });
    let bundle = a.bundle_file();
    let token = a.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    // Quick reconnections, should a sync stream drop while the database is down.
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        "[sync]\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
    )
    .unwrap();
    let addresses = [
        format!("127.0.0.1:{}", a.port),
        format!("127.0.0.1:{}", b.port),
    ];
    let agent = AgentProc::start_servers(
        dir.path(),
        &[addresses[0].as_str(), addresses[1].as_str()],
        &bundle,
        Some(&token),
        Some(&conf),
    );
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&a.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    let mut p = Pair {
        _dir: tempfile::tempdir().unwrap(),
        server: a,
        agent,
        agent_id,
        bundle,
    };
    create(&p, "/outage/rotating", &["--x509SVIDTTL", "20"]);
    let c = client(&p).await;
    let mut stream: Contexts<'_> = Box::pin(open_stream(&c).await);
    let mut seen = BTreeSet::new();
    new_serial(&mut stream, &mut seen, "the first SVID").await;
    // Stop right after a renewal: every later serial is signed during the outage.
    new_serial(&mut stream, &mut seen, "a renewal before the outage").await;

    // Spent during the outage by a second agent, which cannot be recorded until it ends.
    let second_token = b.token();
    pg.stop().unwrap();
    let port = pg.port();
    let database = format!("PostgreSQL at 127.0.0.1:{port}");
    let uid = format!("unix:uid:{}", my_uid());
    refused(
        &p.server,
        &[
            "entry",
            "create",
            "--spiffeID",
            "spiffe://example.org/outage/during",
            "--parentID",
            &p.agent_id,
            "--selector",
            &uid,
        ],
        &database,
        dir.path(),
    );
    refused(&b, &["token", "generate"], &database, dir.path());
    let jwt = within(
        "a JWT-SVID during the outage",
        c.fetch_jwt_svid(["outage-audience"], None),
    )
    .await
    .unwrap_or_else(|e| panic!("a JWT-SVID during the outage: {e:?}\n{}", logs(dir.path())));
    assert_eq!(jwt.spiffe_id().to_string(), ROTATING);
    let shown = p.server.ok(&["entry", "show", "--spiffeID", ROTATING]);
    assert!(
        shown.contains(ROTATING),
        "entry show during the outage: {shown}"
    );
    for n in 1..=2 {
        new_serial(
            &mut stream,
            &mut seen,
            &format!("renewal {n} during the outage"),
        )
        .await;
    }
    running("server a", &mut p.server.child, dir.path());
    running("server b", &mut b.child, dir.path());
    running("the agent", &mut p.agent.child, dir.path());
    // Started late in the outage, so that its backoff is still short when the database is back.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let mut second = AgentProc::start_servers(
        &second_dir,
        &[addresses[0].as_str(), addresses[1].as_str()],
        &p.bundle,
        Some(&second_token),
        Some(&conf),
    );
    wait_until(
        "the second agent's attestation refused as Unavailable",
        || {
            std::fs::read_to_string(second_dir.join("agent.log"))
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.contains("attestation") && l.contains("Unavailable") && l.contains(&database)
                })
        },
    );
    running("the second agent", &mut second.child, dir.path());

    pg.restart().unwrap();
    // The first attempts may still meet closed pooled connections; an attempt whose commit
    // answer was lost may have written, so a later one can find the entry already there.
    wait_until("entry create after the database came back", || {
        let out = p.server.cli(&[
            "entry",
            "create",
            "--spiffeID",
            AFTER,
            "--parentID",
            &p.agent_id,
            "--selector",
            &uid,
        ]);
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("AlreadyExists")
    });
    loop {
        let ctx = within("the entry created after the outage", stream.next())
            .await
            .expect("the Workload API stream stayed open")
            .expect("no error on the open stream");
        if ids(&ctx).contains(&AFTER.to_owned()) {
            assert_eq!(ids(&ctx), [AFTER, ROTATING]);
            break;
        }
    }
    wait_until("the new entry on server b", || {
        String::from_utf8_lossy(&b.cli(&["entry", "show", "--spiffeID", AFTER]).stdout)
            .contains(AFTER)
    });
    let second_id = format!("spiffe://example.org/spire/agent/join_token/{second_token}");
    wait_until("the second agent's attestation after the outage", || {
        String::from_utf8_lossy(&p.server.cli(&["agent", "list"]).stdout).contains(&second_id)
    });
    wait_until("token generate on server b after the outage", || {
        b.cli(&["token", "generate"]).status.success()
    });
    for server in [&p.server, &b] {
        let verified = server.ok(&["events", "verify"]);
        assert!(verified.starts_with("OK: "), "events verify: {verified}");
    }
    running("server a", &mut p.server.child, dir.path());
    running("server b", &mut b.child, dir.path());
    running("the agent", &mut p.agent.child, dir.path());
    running("the second agent", &mut second.child, dir.path());
    drop(second);
    drop(p);
    drop(b);
}
