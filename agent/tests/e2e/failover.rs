//! Several server addresses: a port that refuses, and two forwarders to one real server (two
//! addresses sharing one state, as servers sharing one event log do). The agent attests and
//! serves through whichever it picks; when the test cuts that one, the agent moves to the
//! other, resumes its sync there from its cursor (no snapshot), and an open Workload API
//! stream stays open and receives an entry created afterwards.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;

use super::processes::{AgentProc, ServerProc};
use super::proxy::{refusing_port, Proxy};
use super::{client, create, ids, open_stream, within, Pair};

const RESUMED: &str = "sync resumed from the agent's cursor";
const SNAPSHOT: &str = "sync started from a snapshot";

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

/// Lines of the agent's log that contain every one of `parts`.
fn lines_with(dir: &Path, parts: &[&str]) -> usize {
    log(dir)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Polls (every 50 ms, at most 30 s) until exactly one of `proxies` carries connections.
async fn carrying(proxies: &[&Proxy; 2]) -> usize {
    within("the agent's connection through one forwarder", async {
        loop {
            let busy: Vec<usize> = (0..2).filter(|&i| proxies[i].active() > 0).collect();
            if let [one] = busy[..] {
                return one;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_fails_over_and_resumes_its_sync_from_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), 0);
    let bundle = server.bundle_file();
    let token = server.token();
    let a = Proxy::start(server.port).await;
    let b = Proxy::start(server.port).await;
    let (_refusing, dead_port) = refusing_port();
    let dead = format!("127.0.0.1:{dead_port}");
    // Quick reconnections, so the test does not wait out the default 1 s..30 s backoff.
    let conf = dir.path().join("agent.toml");
    std::fs::write(
        &conf,
        "[sync]\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n",
    )
    .unwrap();
    // One address per flag, and two in one comma-separated flag.
    let both = format!("{},{}", a.address(), b.address());
    let agent = AgentProc::start_servers(
        dir.path(),
        &[dead.as_str(), both.as_str()],
        &bundle,
        Some(&token),
        Some(&conf),
    );
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let attested = tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        attested.is_ok(),
        "the agent's attestation, within 30 s:\n{}",
        log(dir.path())
    );
    let p = Pair {
        _dir: tempfile::tempdir().unwrap(),
        server,
        agent,
        agent_id,
        bundle,
    };

    create(&p, "/web", &[]);
    let c = client(&p).await;
    let mut stream = Box::pin(open_stream(&c).await);
    loop {
        let ctx = within("the first SVID", stream.next())
            .await
            .expect("stream open");
        if ctx.is_ok_and(|ctx| ids(&ctx) == ["spiffe://example.org/web"]) {
            break;
        }
    }

    // Cut the forwarder the agent uses; it must move to the other one.
    let proxies = [&a, &b];
    let used = carrying(&proxies).await;
    let (cut, other) = (proxies[used], proxies[1 - used]);
    let resumed_before = lines_with(dir.path(), &[RESUMED, &other.address()]);
    let snapshots_before = lines_with(dir.path(), &[SNAPSHOT, &other.address()]);
    let accepted_before = other.accepted();
    cut.cut();
    within("the agent's switch to the other forwarder", async {
        while lines_with(dir.path(), &[RESUMED, &other.address()]) <= resumed_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        other.accepted() > accepted_before,
        "the agent connected through {}",
        other.address()
    );
    // Off the cut forwarder (maybe to the refusing port first), then onto the other one.
    let from_cut = format!("previous={}", cut.address());
    let to_other = format!("server={}", other.address());
    for (what, part) in [("from", &from_cut), ("to", &to_other)] {
        assert!(
            lines_with(dir.path(), &["agent switched server", part]) >= 1,
            "the switch {what} is logged with the address:\n{}",
            log(dir.path())
        );
    }

    // The open stream survived, and the resumed sync delivers new entries to it.
    create(&p, "/api", &[]);
    loop {
        let ctx = within("the entry created after the failover", stream.next())
            .await
            .expect("the Workload API stream stayed open")
            .expect("no error on the open stream");
        if ids(&ctx).len() == 2 {
            assert_eq!(
                ids(&ctx),
                ["spiffe://example.org/api", "spiffe://example.org/web"]
            );
            break;
        }
    }
    assert_eq!(
        lines_with(dir.path(), &[SNAPSHOT, &other.address()]),
        snapshots_before,
        "resumed from the cursor, not a new snapshot:\n{}",
        log(dir.path())
    );
    drop(p);
}
