//! Several servers on one PostgreSQL log (a throw-away database on the local PostgreSQL),
//! real processes: three servers, two agents given every address.
//!
//! - the servers agree on one bundle holding the three servers' CAs;
//! - an entry created on one server reaches a workload whose agent is connected to another;
//! - a join token spent through one server is refused through another;
//! - `kill -9` of the server an agent is connected to: the agent resumes on another server,
//!   its workload's stream stays open, and entries created meanwhile are not lost;
//! - every surviving server holds the same entries, and `events verify` passes on the log.
//!
//! Skipped with one line when PostgreSQL is not reachable, unless `CI=true`.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tessera_eventlog::pg::testing::TestDatabase;

use super::processes::{my_uid, wait_until, AgentProc, ServerProc};
use super::{ids, open_stream, within};

const TD: &str = "spiffe://example.org";

/// The server the agent logged it connected to last (`server=host:port`).
fn connected_port(agent_dir: &Path) -> Option<u16> {
    let log = std::fs::read_to_string(agent_dir.join("agent.log")).unwrap_or_default();
    log.lines()
        .rev()
        .filter(|l| {
            l.contains("agent connected to its first server") || l.contains("agent switched server")
        })
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("server="))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        })
}

fn lines_with(agent_dir: &Path, part: &str) -> usize {
    std::fs::read_to_string(agent_dir.join("agent.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(part))
        .count()
}

fn token(server: &ServerProc) -> String {
    server.token()
}

fn create(server: &ServerProc, path: &str, parent: &str) {
    let uid = format!("unix:uid:{}", my_uid());
    let spiffe = format!("{TD}{path}");
    server.ok(&[
        "entry",
        "create",
        "--spiffeID",
        &spiffe,
        "--parentID",
        parent,
        "--selector",
        &uid,
    ]);
}

/// Waits (bounded) until the stream delivers a context holding `want`.
async fn until_served<S>(stream: &mut S, want: &str)
where
    S: futures::Stream<Item = Result<spiffe::X509Context, spiffe::WorkloadApiError>> + Unpin,
{
    within(&format!("{want} on the open stream"), async {
        loop {
            match stream.next().await {
                Some(Ok(ctx)) if ids(&ctx).iter().any(|i| i == want) => return,
                Some(_) => {}
                None => panic!("the workload's stream ended while waiting for {want}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_one_log_and_agents_fail_over_without_losing_anything() {
    let Some(db) = TestDatabase::create().await.expect("the test database") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<Option<ServerProc>> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| Some(ServerProc::start_pg(&dir.path().join(id), db.url(), id, "")))
        .collect();
    let live = |servers: &[Option<ServerProc>]| -> Vec<usize> {
        (0..servers.len())
            .filter(|&i| servers[i].is_some())
            .collect()
    };
    let s = |servers: &[Option<ServerProc>], i: usize| -> String {
        format!("127.0.0.1:{}", servers[i].as_ref().unwrap().port)
    };

    // One bundle, three CAs, the same on every server.
    wait_until("three CAs in one bundle on every server", || {
        let bundles: Vec<String> = servers
            .iter()
            .flatten()
            .map(|s| s.ok(&["bundle", "show"]))
            .collect();
        bundles[0].matches("BEGIN CERTIFICATE").count() == 3
            && bundles.iter().all(|b| b == &bundles[0])
    });
    let bundle = servers[0].as_ref().unwrap().bundle_file();
    let addresses: Vec<String> = (0..3).map(|i| s(&servers, i)).collect();
    let addresses: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        "[sync]\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
    )
    .unwrap();

    // Two agents, each with a token from a different server, each given every address.
    let mut agents = Vec::new();
    for (n, from) in [(1, 0), (2, 2)] {
        let t = token(servers[from].as_ref().unwrap());
        let agent_dir = dir.path().join(format!("agent{n}"));
        std::fs::create_dir_all(&agent_dir).unwrap();
        let agent =
            AgentProc::start_servers(&agent_dir, &addresses, &bundle, Some(&t), Some(&agent_conf));
        agents.push((agent_dir, agent, t));
    }
    let agent_id = |t: &str| format!("{TD}/spire/agent/join_token/{t}");
    for (agent_dir, _, t) in &agents {
        let id = agent_id(t);
        wait_until("the agent's attestation, seen by every server", || {
            connected_port(agent_dir).is_some()
                && servers.iter().flatten().all(|s| {
                    String::from_utf8_lossy(&s.cli(&["agent", "list"]).stdout).contains(&id)
                })
        });
    }

    // A token spent through one server is refused through another.
    let (first_dir, first_agent, first_token) = &agents[0];
    let used_on = connected_port(first_dir).unwrap();
    let other = (0..3)
        .find(|&i| servers[i].as_ref().unwrap().port != used_on)
        .unwrap();
    let dup_dir = dir.path().join("dup");
    std::fs::create_dir_all(&dup_dir).unwrap();
    let mut dup = AgentProc::start_servers(
        &dup_dir,
        &[addresses[other]],
        &bundle,
        Some(first_token),
        Some(&agent_conf),
    );
    let mut refused = None;
    wait_until("the second use of the token to be refused", || {
        refused = dup.child.try_wait().unwrap();
        refused.is_some()
    });
    assert!(!refused.unwrap().success(), "a spent token must be refused");
    let dup_log = std::fs::read_to_string(dup_dir.join("agent.log")).unwrap_or_default();
    assert!(dup_log.to_lowercase().contains("token"), "{dup_log}");
    dup.kill();

    // An entry created on a server the agent is not connected to reaches its workload.
    let parent = agent_id(first_token);
    let connected = connected_port(first_dir).unwrap();
    let elsewhere = live(&servers)
        .into_iter()
        .find(|&i| servers[i].as_ref().unwrap().port != connected)
        .unwrap();
    create(servers[elsewhere].as_ref().unwrap(), "/web", &parent);
    let c = client_for(first_agent).await;
    let mut stream = Box::pin(open_stream(&c).await);
    until_served(&mut stream, &format!("{TD}/web")).await;

    // kill -9 of the agent's server: it resumes elsewhere, its stream stays open, and an
    // entry created meanwhile (on a survivor) is not lost.
    let killed = (0..3)
        .find(|&i| servers[i].as_ref().unwrap().port == connected)
        .unwrap();
    let resumed_before = lines_with(first_dir, "sync resumed from the agent's cursor")
        + lines_with(first_dir, "sync started from a snapshot");
    servers[killed].take().unwrap().kill();
    let survivor = live(&servers)[0];
    create(servers[survivor].as_ref().unwrap(), "/db", &parent);
    wait_until("the agent's sync to resume on another server", || {
        let resumed = lines_with(first_dir, "sync resumed from the agent's cursor")
            + lines_with(first_dir, "sync started from a snapshot");
        resumed > resumed_before && connected_port(first_dir).is_some_and(|p| p != connected)
    });
    until_served(&mut stream, &format!("{TD}/db")).await;
    // And one created after the move, on the other survivor.
    let last = *live(&servers).last().unwrap();
    create(servers[last].as_ref().unwrap(), "/cache", &parent);
    until_served(&mut stream, &format!("{TD}/cache")).await;

    // The survivors hold the same entries, and the shared log verifies.
    wait_until("every survivor to list the same entries", || {
        let shows: Vec<String> = servers
            .iter()
            .flatten()
            .map(|s| s.ok(&["entry", "show"]))
            .collect();
        ["/web", "/db", "/cache"]
            .iter()
            .all(|p| shows[0].contains(&format!("{TD}{p}")))
            && shows.iter().all(|x| x == &shows[0])
    });
    for server in servers.iter().flatten() {
        let out = server.ok(&["events", "verify"]);
        assert!(out.starts_with("OK:"), "{out}");
    }
    drop(stream);
    drop(agents);
    drop(servers);
    db.cleanup().await.unwrap();
}

async fn client_for(agent: &AgentProc) -> spiffe::WorkloadApiClient {
    // The e2e helper takes a pair; connect the same way to this agent's socket.
    let endpoint = agent.endpoint();
    let mut last = None;
    for _ in 0..300 {
        match spiffe::WorkloadApiClient::connect_to(&endpoint).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot connect to {endpoint}: {last:?}");
}

/// `log copy`: a single server's sled log moved into PostgreSQL serves the same entries from
/// a server on the shared log, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_copy_moves_a_sled_log_into_postgresql() {
    let Some(db) = TestDatabase::create().await.expect("the test database") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut lone = ServerProc::start(dir.path(), 0);
    create(&lone, "/copied", &format!("{TD}/spire/agent/join_token/t"));
    lone.kill();
    let out = std::process::Command::new(super::processes::bin("tessera-server"))
        .args(["log", "copy", "--dataDir"])
        .arg(dir.path().join("server"))
        .args(["--storeURL", db.url()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("verified"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second copy into the now used database is refused.
    let again = std::process::Command::new(super::processes::bin("tessera-server"))
        .args(["log", "copy", "--dataDir"])
        .arg(dir.path().join("server"))
        .args(["--storeURL", db.url()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let shared = ServerProc::start_pg(dir.path(), db.url(), "s1", "");
    assert!(shared
        .ok(&["entry", "show"])
        .contains(&format!("{TD}/copied")));
    assert!(shared.ok(&["events", "verify"]).starts_with("OK:"));
    drop(shared);
    db.cleanup().await.unwrap();
}
