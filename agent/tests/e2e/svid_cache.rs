//! The agent's LRU SVID cache (`agent.x509_svid_cache_max_size`), with real processes: an
//! agent whose view holds 50 entries and whose cache holds 5 signs 5 eagerly; a workload
//! whose entry is outside the cache gets its SVID on its first fetch; SVIDs past the size
//! are evicted least recently used first, from the cache file too; SVIDs of an open stream
//! are never evicted, even past the size (a soft limit).

use std::path::Path;

use futures::StreamExt;
use spiffe::WorkloadApiClient;
use tessera_actors::agent::cache::Cache;

use super::processes::{my_uid, wait_until, AgentProc, ServerProc};
use super::within;

const SIZE: usize = 5;
const OTHERS: u32 = 50;

/// The agent's persisted cache (written atomically, at most a second after a change).
fn stored(dir: &Path) -> Option<Cache> {
    let bytes = std::fs::read(dir.join("agent/cache.bin")).ok()?;
    tessera_eventlog::typed::decode_state::<Cache>(0, &bytes).ok()
}

/// Entry ids of the stored SVIDs, and how many entries the view holds.
fn svids(dir: &Path) -> (Vec<String>, usize) {
    stored(dir).map_or((Vec::new(), 0), |c| {
        (
            c.svids.keys().map(|k| k.as_str().to_owned()).collect(),
            c.entries.len(),
        )
    })
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_cache_size_is_signed_eagerly_and_workloads_get_theirs_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path(), 0);
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("[agent]\nx509_svid_cache_max_size = {SIZE}\n"),
    )
    .unwrap();
    let agent = AgentProc::start_with(
        dir.path(),
        server.port,
        &bundle,
        Some(&token),
        Some(&config),
    );
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });
    let me = format!("unix:uid:{}", my_uid());
    // Entries for workloads of other uids: in the agent's view, never fetched by this test.
    let other_uid = my_uid() + 1_000_000;
    for i in 0..OTHERS {
        let sel = format!("unix:uid:{}", other_uid + i);
        create(&server, &agent_id, &format!("/other/{i}"), &sel);
    }

    // Given 50 entries in view and a cache of 5: 5 SVIDs signed, no more.
    wait_until("50 entries and 5 SVIDs in the cache file", || {
        let (s, n) = svids(dir.path());
        n == OTHERS as usize && s.len() == SIZE
    });

    // When a workload's entry joins the full cache, it is not signed eagerly...
    let mine = create(&server, &agent_id, "/mine/0", &me);
    wait_until("the new entry in the cache file", || {
        stored(dir.path()).is_some_and(|c| c.entries.keys().any(|k| k.as_str() == mine))
    });
    let (s, _) = svids(dir.path());
    assert_eq!(s.len(), SIZE, "the cache was full: {s:?}");
    assert!(!s.contains(&mine), "not signed before a workload asks");

    // ...but the workload's first fetch gets it (signed on demand, one round trip).
    let client = within("the Workload API", async {
        for _ in 0..300 {
            if let Ok(c) = WorkloadApiClient::connect_to(&agent.endpoint()).await {
                return c;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("no Workload API socket");
    })
    .await;
    let svid = within("the first fetch", client.fetch_x509_svid())
        .await
        .expect("the first fetch is answered with the SVID, not NoIdentityIssued");
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/mine/0");

    // Then the cache is back to its size by evicting the least recently used (an eager SVID
    // no workload ever used), not the one just used.
    wait_until("eviction back to 5 SVIDs, ours kept", || {
        let (s, _) = svids(dir.path());
        s.len() == SIZE && s.contains(&mine)
    });

    // An open stream holding 6 entries (more than the size): all 6 are served and kept.
    let mut ours = vec![mine.clone()];
    for i in 1..=SIZE {
        ours.push(create(&server, &agent_id, &format!("/mine/{i}"), &me));
    }
    let mut stream = within("the stream", client.stream_x509_contexts())
        .await
        .unwrap();
    let mut served = 0;
    for _ in 0..50 {
        let ctx = within("the stream's updates", stream.next())
            .await
            .expect("stream open")
            .unwrap();
        served = ctx.svids().len();
        if served == ours.len() {
            break;
        }
    }
    assert_eq!(
        served,
        ours.len(),
        "every held entry is served past the size"
    );
    // A change in the view makes the agent apply its policy again: held SVIDs stay.
    create(
        &server,
        &agent_id,
        "/other/trigger-1",
        &format!("unix:uid:{}", other_uid + 999),
    );
    wait_until("only held SVIDs kept, past the size", || {
        let (mut s, _) = svids(dir.path());
        s.sort();
        let mut want = ours.clone();
        want.sort();
        s == want
    });

    // Once the stream is closed, they are evictable again: back to the size.
    drop(stream);
    drop(client);
    // The release reaches the agent when the connection closes; the policy runs again at
    // the next change in the view: one more entry every half second of polling.
    let mut polls = 0u32;
    wait_until("back to the size once nothing holds the SVIDs", || {
        if polls.is_multiple_of(5) {
            let sel = format!("unix:uid:{}", other_uid + 2_000 + polls);
            create(
                &server,
                &agent_id,
                &format!("/other/trigger-{}", polls + 2),
                &sel,
            );
        }
        polls += 1;
        svids(dir.path()).0.len() == SIZE
    });
    let (s, _) = svids(dir.path());
    assert!(
        s.iter().all(|id| ours.contains(id)),
        "the recently used ones stay: {s:?}"
    );
}
