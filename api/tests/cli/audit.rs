//! Audit from the log (issue 14 §3): `events tail` filters and summary lines, and `events who`
//! replaying the log, against a `tessera-server` process whose log holds entries created,
//! updated and deleted, a node alias, agents attested (seeded, and one over the real agent
//! API with a join token), banned and evicted.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tessera_identity::{Bundle, TrustDomain};

use crate::support::{cli, fails, ok, ok_json, Deadline, ServerProc, Workspace, BIN};

// A join-token attestation over the real agent API, as the hostile tests do it.
#[path = "../hostile/support.rs"]
mod agent_api;

/// (entry, agent, from seq, until seq, until kind).
type Grant = (String, String, u64, Option<u64>, Option<String>);

const WEB: &str = "spiffe://example.org/web";
const N1: &str = "spiffe://example.org/spire/agent/x509pop/n1";
const N2: &str = "spiffe://example.org/spire/agent/x509pop/n2";

fn create(s: &Path, id: &str, spiffe: &str, parent: &str, selector: &str) {
    ok(
        s,
        &[
            "entry",
            "create",
            "--entryID",
            id,
            "--spiffeID",
            spiffe,
            "--parentID",
            parent,
            "--selector",
            selector,
        ],
    );
}

/// Every record of the log, as `events tail --output json` lines.
fn all_records(s: &Path) -> Vec<Value> {
    json_lines(&ok(s, &["events", "tail", "--output", "json"]))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The seq of the only record of `kind` whose summary contains `needle`.
fn seq_of(records: &[Value], kind: &str, needle: &str) -> u64 {
    let found: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == kind && r["summary"].as_str().unwrap().contains(needle))
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{kind} {needle}: {found:?}");
    found[0]
}

/// The seqs printed by a pretty `events tail`.
fn seqs(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// The agent API's address, from the server's log.
fn agent_api_addr(log: &str) -> SocketAddr {
    let line = log
        .lines()
        .find(|l| l.contains("agent API listening"))
        .unwrap_or_else(|| panic!("no agent API address in the log:\n{log}"));
    let addr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next();
    addr.unwrap().parse().unwrap()
}

/// Attests an agent with a fresh join token aliased to `alias`; returns the agent's ID.
fn attest_with_join_token(server: &ServerProc, alias: &str) -> String {
    let s = server.socket.as_path();
    let token = ok(s, &["token", "generate", "--spiffeID", alias]);
    let token = token.trim().strip_prefix("Token: ").unwrap().to_owned();
    let pem = ok(s, &["bundle", "show"]);
    let bundle = Bundle::from_x509_pem(TrustDomain::new("example.org").unwrap(), &pem).unwrap();
    let addr = agent_api_addr(&server.log_text());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let svid = runtime
        .block_on(agent_api::attest(addr, &bundle, &token))
        .unwrap();
    svid.id.to_string()
}

#[test]
fn tail_filters_summaries_and_who_answers_from_the_log() {
    let ws = Workspace::new();
    ws.seed_agents(&["n1", "n2"]);
    let server = ws.start();
    let s = server.socket.as_path();

    // What the log will have to tell.
    create(s, "web-direct", WEB, N1, "unix:uid:1000");
    ok(
        s,
        &[
            "entry",
            "create",
            "--entryID",
            "alias-n2",
            "--node",
            "--spiffeID",
            "spiffe://example.org/nodes/cn-n2",
            "--selector",
            "x509pop:subject:cn:n2",
        ],
    );
    create(
        s,
        "web-alias",
        WEB,
        "spiffe://example.org/nodes/cn-n2",
        "unix:uid:1001",
    );
    create(s, "db", "spiffe://example.org/db", N1, "unix:uid:2");
    ok(
        s,
        &["entry", "update", "--entryID", "db", "--hint", "backend"],
    );
    ok(s, &["entry", "delete", "--entryID", "web-direct"]);
    let jt = attest_with_join_token(&server, "spiffe://example.org/nodes/jt");
    create(
        s,
        "web-jt",
        WEB,
        "spiffe://example.org/nodes/jt",
        "unix:uid:1002",
    );
    create(s, "web-n1b", WEB, N1, "unix:uid:1003");
    ok(s, &["agent", "ban", "--spiffeID", N2]);
    ok(s, &["agent", "evict", "--spiffeID", N1]);

    // --- JSON lines: each parses, with the envelope and a summary.
    let records = all_records(s);
    let head = records.len() as u64;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(r["hash"].as_str().unwrap().len(), 64, "{r}");
        assert!(r["recorded_at"].as_str().unwrap().ends_with('Z'), "{r}");
        assert!(!r["summary"].as_str().unwrap().is_empty(), "{r}");
        assert!(
            r["payload"].get(r["kind"].as_str().unwrap()).is_some(),
            "{r}"
        );
    }
    let created_direct = seq_of(&records, "EntryCreated", "entry web-direct ");
    let deleted_direct = seq_of(&records, "EntryDeleted", "entry web-direct ");
    let created_alias = seq_of(&records, "EntryCreated", "entry web-alias ");
    let created_jt = seq_of(&records, "EntryCreated", "entry web-jt ");
    let created_n1b = seq_of(&records, "EntryCreated", "entry web-n1b ");
    let banned = seq_of(&records, "AgentBanned", N2);
    let evicted = seq_of(&records, "AgentEvicted", N1);
    seq_of(&records, "AgentAttested", &jt);
    seq_of(&records, "JoinTokenConsumed", &jt);

    // --- The readable lines: `seq time kind summary`.
    let pretty = ok(s, &["events", "tail"]);
    let lines: Vec<&str> = pretty.lines().collect();
    assert_eq!(lines.len() as u64, head, "{pretty}");
    let at = |seq: u64| records[seq as usize - 1]["recorded_at"].as_str().unwrap();
    assert_eq!(
        lines[created_direct as usize - 1],
        format!(
            "{created_direct} {} EntryCreated entry web-direct {WEB} parent {N1} selectors \
             unix:uid:1000",
            at(created_direct)
        )
    );
    assert_eq!(
        lines[deleted_direct as usize - 1],
        format!(
            "{deleted_direct} {} EntryDeleted entry web-direct {WEB}",
            at(deleted_direct)
        )
    );
    assert!(
        lines[banned as usize - 1].ends_with(&format!("AgentBanned agent {N2}")),
        "{pretty}"
    );
    let alias_line = lines
        .iter()
        .find(|l| l.contains("entry alias-n2 "))
        .unwrap();
    assert!(
        alias_line.ends_with(
            "entry alias-n2 spiffe://example.org/nodes/cn-n2 parent \
             spiffe://example.org/spire/server selectors x509pop:subject:cn:n2 (node alias)"
        ),
        "{alias_line}"
    );
    let attested = lines[seq_of(&records, "AgentAttested", &jt) as usize - 1];
    assert!(
        attested.contains(&format!("AgentAttested agent {jt} attested by join_token")),
        "{attested}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("CaPrepared server ") && l.contains(" self-signed valid ")),
        "{pretty}"
    );

    // --- Filters.
    let kinds = ok(
        s,
        &[
            "events",
            "tail",
            "--kind",
            "EntryDeleted",
            "--kind",
            "AgentBanned",
        ],
    );
    assert_eq!(seqs(&kinds), vec![deleted_direct, banned], "{kinds}");

    let db = ok(s, &["events", "tail", "--entryID", "db"]);
    let db_lines: Vec<&str> = db.lines().collect();
    assert_eq!(db_lines.len(), 2, "{db}");
    assert!(db_lines[0].contains(" EntryCreated entry db "), "{db}");
    assert!(
        db_lines[1].contains(" EntryUpdated entry db ") && db_lines[1].contains("revision 1"),
        "{db}"
    );

    // The deletion names only an id: found by replaying from seq 1, even after --since.
    let web = ok(s, &["events", "tail", "--spiffeID", WEB]);
    assert_eq!(
        seqs(&web),
        vec![
            created_direct,
            created_alias,
            deleted_direct,
            created_jt,
            created_n1b
        ],
        "{web}"
    );
    let web_late = ok(
        s,
        &[
            "events",
            "tail",
            "--spiffeID",
            WEB,
            "--since",
            &deleted_direct.to_string(),
            "--kind",
            "EntryDeleted",
        ],
    );
    assert_eq!(seqs(&web_late), vec![deleted_direct], "{web_late}");

    let n2 = ok(s, &["events", "tail", "--agentID", N2, "--output", "json"]);
    let n2: Vec<String> = json_lines(&n2)
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(n2, vec!["AgentAttested", "AgentBanned"]);

    // --since/--until by seq, inclusive.
    let window = ok(s, &["events", "tail", "--since", "3", "--until", "5"]);
    assert_eq!(seqs(&window), vec![3, 4, 5], "{window}");
    // By time: exactly the records committed in that second or later / earlier.
    let t = at(created_jt).to_owned();
    let expect = |keep: &dyn Fn(&str) -> bool| -> Vec<u64> {
        records
            .iter()
            .filter(|r| keep(r["recorded_at"].as_str().unwrap()))
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    // RFC 3339 in UTC with a fixed width compares as text.
    let since = ok(s, &["events", "tail", "--since", &t]);
    assert_eq!(seqs(&since), expect(&|at| at >= t.as_str()), "{since}");
    let until = ok(s, &["events", "tail", "--until", &t]);
    assert_eq!(seqs(&until), expect(&|at| at <= t.as_str()), "{until}");
    let err = fails(s, &["events", "tail", "--since", "last tuesday"]);
    assert!(
        err.starts_with("events tail: --since \"last tuesday\": expected a seq number"),
        "{err}"
    );

    // --follow ends by itself at an --until seq already in the log.
    let bounded = ok(
        s,
        &[
            "events",
            "tail",
            "--follow",
            "--until",
            &created_alias.to_string(),
        ],
    );
    assert_eq!(seqs(&bounded).last(), Some(&created_alias), "{bounded}");

    // --- `events who`: grants with the seqs that opened and closed them.
    let who = ok_json(s, &["events", "who", "--spiffeID", WEB]);
    assert_eq!(who["spiffe_id"], WEB);
    assert_eq!(who["replayed_to_seq"], head);
    let grants: BTreeSet<Grant> = who["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["entry_id"].as_str().unwrap().to_owned(),
                g["agent_id"].as_str().unwrap().to_owned(),
                g["from"]["seq"].as_u64().unwrap(),
                g["until"]["seq"].as_u64(),
                g["until"]["kind"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let grant = |e: &str, a: &str, from, until: Option<(u64, &str)>| {
        (
            e.to_owned(),
            a.to_owned(),
            from,
            until.map(|u| u.0),
            until.map(|u| u.1.to_owned()),
        )
    };
    let expected: BTreeSet<_> = [
        // Parented to the agent; the entry deleted.
        grant(
            "web-direct",
            N1,
            created_direct,
            Some((deleted_direct, "EntryDeleted")),
        ),
        // Under a node alias whose selectors the agent has; the agent banned.
        grant(
            "web-alias",
            N2,
            created_alias,
            Some((banned, "AgentBanned")),
        ),
        // Under a join token's alias; still granted.
        grant("web-jt", &jt, created_jt, None),
        // Parented to the agent; the agent evicted.
        grant("web-n1b", N1, created_n1b, Some((evicted, "AgentEvicted"))),
    ]
    .into_iter()
    .collect();
    assert_eq!(grants, expected);

    // --at: only what held then (a deletion's seq already excludes the entry).
    let at_ids = |args: &[&str]| -> BTreeSet<String> {
        let mut all = vec!["events", "who", "--spiffeID", WEB];
        all.extend(args);
        ok_json(s, &all)["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["entry_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let names = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        at_ids(&["--at", &(deleted_direct - 1).to_string()]),
        names(&["web-direct", "web-alias"])
    );
    assert_eq!(
        at_ids(&["--at", &deleted_direct.to_string()]),
        names(&["web-alias"])
    );
    assert_eq!(at_ids(&["--at", &head.to_string()]), names(&["web-jt"]));
    assert_eq!(
        at_ids(&["--since", &banned.to_string(), "--until", &head.to_string()]),
        names(&["web-jt", "web-n1b"])
    );
    assert_eq!(
        at_ids(&["--until", &created_alias.to_string()]),
        names(&["web-direct", "web-alias"])
    );
    // By time: at the last record's second, the join token's entry holds.
    assert!(at_ids(&["--at", at(head)]).contains("web-jt"));

    let table = ok(s, &["events", "who", "--spiffeID", WEB]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(
        rows[0],
        format!("Found 4 grants of {WEB} (log replayed to seq {head}):")
    );
    assert!(
        rows[1].starts_with("ENTRY ID") && rows[1].contains("UNTIL"),
        "{table}"
    );
    let direct = rows.iter().find(|r| r.starts_with("web-direct ")).unwrap();
    assert!(
        direct.contains(&format!("seq {created_direct} "))
            && direct.ends_with(&format!(
                "seq {deleted_direct} {} EntryDeleted",
                at(deleted_direct)
            )),
        "{table}"
    );
    let open = rows.iter().find(|r| r.starts_with("web-jt ")).unwrap();
    assert!(
        open.ends_with(&format!("(still granted at seq {head})")),
        "{table}"
    );
    let none = ok(
        s,
        &["events", "who", "--spiffeID", "spiffe://example.org/nobody"],
    );
    assert_eq!(
        none.trim(),
        format!("No entry granted spiffe://example.org/nobody (log replayed to seq {head})")
    );
    // A usage error (clap's exit code 2): --at is one point, --since/--until a range.
    let both = cli(
        s,
        &[
            "events",
            "who",
            "--spiffeID",
            WEB,
            "--at",
            "1",
            "--since",
            "1",
        ],
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&both.stderr).contains("--at"));

    // --- --follow with a filter: the five past records about WEB, then, once they are out
    // (so the stream is open), a record committed after it started.
    let mut follower = Command::new(BIN)
        .args([
            "events",
            "tail",
            "--follow",
            "--spiffeID",
            WEB,
            "--limit",
            "6",
            "--output",
            "json",
            "--socketPath",
        ])
        .arg(s)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |what: &str| -> Value {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => serde_json::from_str(&line).unwrap(),
            Err(e) => panic!("the follower printed no {what}: {e}"),
        }
    };
    let past: Vec<u64> = (0..5)
        .map(|_| next("past record")["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        past,
        vec![
            created_direct,
            created_alias,
            deleted_direct,
            created_jt,
            created_n1b
        ]
    );
    create(s, "web-late", WEB, N1, "unix:uid:7");
    let late = next("new record");
    assert_eq!(late["seq"], head + 1);
    assert_eq!(late["kind"], "EntryCreated");
    assert_eq!(late["payload"]["EntryCreated"]["id"], "web-late");
    // --limit reached: it exits by itself.
    let deadline = Deadline::after(Duration::from_secs(30));
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        if deadline.passed() {
            let _ = follower.kill();
            panic!("the follower did not exit at --limit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    reader.join().unwrap();
    server.stop();
}
