//! `dashboards/` against what the processes export (issue 14 §2): a real `tessera-server` and
//! `tessera-agent` with `[health_checks]` on, driven until every family the boards use has a
//! series (an SVID fetched over the Workload API, a federation relationship whose refresh
//! fails), then both `/metrics` scraped. Every PromQL expression of `dashboards/*.json`
//! (panel targets and template variable queries) and `dashboards/alerts.yml` is parsed with
//! `promql-parser`; the test fails naming the file, the panel or alert and the metric when a
//! selector names a metric neither process exports, a matcher names a label that metric does
//! not have, or a `by (...)` / `on (...)` names a label no selector under it has. Prometheus'
//! own target labels (`instance`, `job`) are allowed everywhere. It also fails when a board
//! does not parse or has no panel with a query.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

#[allow(dead_code)] // Shared with the e2e tests; this one uses part of it.
#[path = "e2e/processes.rs"]
mod processes;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use processes::{my_uid, wait_until, AgentProc, ServerProc};
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, LabelModifier, VectorSelector};

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// Metric name → the label names of its series.
type Exported = BTreeMap<String, BTreeSet<String>>;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("dashboards")
}

/// A port free on loopback now (the agent does not log its health address).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One HTTP/1.1 GET on loopback; the body of a 200 answer.
fn get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.take(16 << 20)
        .read_to_string(&mut out)
        .map_err(|e| e.to_string())?;
    let (head, body) = out.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("not 200: {head}"));
    }
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked /metrics: decode it here"
    );
    Ok(body.to_owned())
}

/// The health port the server logged (`health and metrics endpoint listening addr=...`).
fn server_health_port(dir: &Path) -> u16 {
    let mut port = None;
    wait_until("the server's health listener in its log", || {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        port = log
            .lines()
            .filter_map(|l| {
                l.split("health and metrics endpoint listening addr=")
                    .nth(1)
            })
            .filter_map(|a| {
                a.split_whitespace()
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .next();
        port.is_some()
    });
    port.unwrap()
}

/// Metric names and label names of a Prometheus text exposition.
fn parse_exposition(text: &str, into: &mut Exported) {
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = into.entry(line[..end].to_owned()).or_default();
        let Some(rest) = line[end..].strip_prefix('{') else {
            continue;
        };
        // name="value" pairs; values may hold escaped quotes, commas and braces.
        let mut chars = rest.chars().peekable();
        loop {
            let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
            let name = name.trim_start_matches(',').trim();
            if name.is_empty() || name.starts_with('}') {
                break;
            }
            labels.insert(name.to_owned());
            assert_eq!(chars.next(), Some('"'), "label value of {name} in {line}");
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => break,
                    _ => escaped = false,
                }
            }
            if chars.peek() == Some(&'}') {
                break;
            }
        }
    }
}

/// Grafana's interval variables, which are not PromQL, as a duration.
fn substitute(expr: &str) -> String {
    ["$__rate_interval", "$__interval", "$__range"]
        .iter()
        .fold(expr.to_owned(), |e, v| e.replace(v, "5m"))
}

/// Problems of one expression, each naming the metric or label.
fn check_expr(expr: &str, exported: &Exported) -> Vec<String> {
    let ast = match parser::parse(&substitute(expr)) {
        Ok(ast) => ast,
        Err(e) => return vec![format!("does not parse ({e}): {expr}")],
    };
    let mut problems = Vec::new();
    walk(&ast, exported, &mut problems);
    problems
}

/// Checks every selector under `e`; returns the label names those selectors may carry.
fn walk(e: &Expr, exported: &Exported, problems: &mut Vec<String>) -> BTreeSet<String> {
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    match e {
        Expr::VectorSelector(vs) => labels.extend(selector(vs, exported, problems)),
        Expr::MatrixSelector(ms) => labels.extend(selector(&ms.vs, exported, problems)),
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, exported, problems);
            }
            let inner = walk(&a.expr, exported, problems);
            if let Some(LabelModifier::Include(by)) = &a.modifier {
                for l in &by.labels {
                    if !inner.contains(l) {
                        problems.push(format!("by ({l}): no selector under `{a}` has it"));
                    }
                }
                labels.extend(by.labels.iter().cloned());
            } else {
                labels.extend(inner);
            }
        }
        Expr::Binary(b) => {
            let both: BTreeSet<String> = walk(&b.lhs, exported, problems)
                .into_iter()
                .chain(walk(&b.rhs, exported, problems))
                .collect();
            if let Some(LabelModifier::Include(on)) =
                b.modifier.as_ref().and_then(|m| m.matching.as_ref())
            {
                for l in on.labels.iter().filter(|l| !both.contains(*l)) {
                    problems.push(format!("on ({l}): neither side of `{b}` has it"));
                }
            }
            labels.extend(both);
        }
        Expr::Unary(u) => labels.extend(walk(&u.expr, exported, problems)),
        Expr::Paren(p) => labels.extend(walk(&p.expr, exported, problems)),
        Expr::Subquery(s) => labels.extend(walk(&s.expr, exported, problems)),
        Expr::Call(c) => {
            for arg in &c.args.args {
                labels.extend(walk(arg, exported, problems));
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
    labels
}

/// Checks one selector's metric and matchers; returns its metric's labels.
fn selector(vs: &VectorSelector, exported: &Exported, problems: &mut Vec<String>) -> Vec<String> {
    let by_matcher = vs
        .matchers
        .matchers
        .iter()
        .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
        .map(|m| m.value.clone());
    let Some(name) = vs.name.clone().or(by_matcher) else {
        problems.push(format!("`{vs}` names no metric"));
        return Vec::new();
    };
    let Some(have) = exported.get(&name) else {
        problems.push(format!("metric {name} is exported by neither process"));
        return Vec::new();
    };
    let all = vs
        .matchers
        .matchers
        .iter()
        .chain(vs.matchers.or_matchers.iter().flatten());
    for m in all.filter(|m| m.name != "__name__") {
        if !have.contains(&m.name) && !TARGET_LABELS.contains(&m.name.as_str()) {
            problems.push(format!(
                "metric {name} has no label {} (it has: {have:?})",
                m.name
            ));
        }
    }
    have.iter().cloned().collect()
}

/// `label_values(selector, label)`, Grafana's variable query.
fn check_label_values(query: &str, exported: &Exported) -> Vec<String> {
    let Some(inner) = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
    else {
        return vec![format!("unsupported variable query: {query}")];
    };
    let Some((sel, label)) = inner.rsplit_once(',') else {
        return vec![format!("label_values without a label: {query}")];
    };
    let label = label.trim();
    let mut problems = check_expr(sel.trim(), exported);
    let name = sel.trim().split('{').next().unwrap_or_default().trim();
    let has = exported.get(name).is_some_and(|l| l.contains(label));
    if !has && !TARGET_LABELS.contains(&label) {
        problems.push(format!("metric {name} has no label {label}"));
    }
    problems
}

/// Every query of `board` as (where, query, is a variable query); panics when it has none.
fn board_queries(file: &str, board: &serde_json::Value) -> Vec<(String, String, bool)> {
    fn panels<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            out.push(p);
            panels(p, out);
        }
    }
    let mut all = Vec::new();
    panels(board, &mut all);
    let mut queries = Vec::new();
    for p in all {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                !expr.is_empty(),
                "{file}: panel {title:?}: a target with no expr"
            );
            queries.push((format!("panel {title:?}"), expr.to_owned(), false));
        }
    }
    assert!(!queries.is_empty(), "{file}: no panel with a query");
    for v in board["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            let name = v["name"].as_str().unwrap_or("?");
            queries.push((format!("variable ${name}"), q.to_owned(), true));
        }
    }
    queries
}

/// Every rule expression of an alerts file as (where, expr).
fn rule_queries(file: &str, text: &str) -> Vec<(String, String)> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("(unnamed)");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: rule {name} has no expr"));
            out.push((format!("rule {name}"), expr.to_owned()));
        }
    }
    assert!(!out.is_empty(), "{file}: no rules");
    out
}

/// Every problem of every file under `dir`, each naming the file and the panel or rule.
fn check_dir(dir: &Path, exported: &Exported) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let queries: Vec<(String, String, bool)> = if file.ends_with(".json") {
            let board: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
            board_queries(&file, &board)
        } else if file.ends_with(".yml") || file.ends_with(".yaml") {
            rule_queries(&file, &text)
                .into_iter()
                .map(|(w, q)| (w, q, false))
                .collect()
        } else {
            continue;
        };
        for (place, query, variable) in queries {
            checked += 1;
            let found = if variable {
                check_label_values(&query, exported)
            } else {
                check_expr(&query, exported)
            };
            problems.extend(found.into_iter().map(|p| format!("{file}: {place}: {p}")));
        }
    }
    (problems, checked)
}

/// The value of the unlabelled series `name`.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_query_names_exported_metrics_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.toml");
    std::fs::write(
        &conf,
        "[health_checks]\nlistener_enabled = true\nbind_address = \"127.0.0.1\"\nbind_port = 0\n",
    )
    .unwrap();
    let server = ServerProc::start_with(dir.path(), 0, Some(&conf));
    let server_health = server_health_port(dir.path());
    let bundle = server.bundle_file();
    let token = server.token();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    let agent_health = free_port();
    let agent_conf = dir.path().join("agent.toml");
    std::fs::write(
        &agent_conf,
        format!(
            "[health_checks]\nlistener_enabled = true\nbind_address = \"127.0.0.1\"\nbind_port = {agent_health}\n"
        ),
    )
    .unwrap();
    let agent = AgentProc::start_with(
        dir.path(),
        server.port,
        &bundle,
        Some(&token),
        Some(&agent_conf),
    );
    wait_until("the agent's attestation", || {
        String::from_utf8_lossy(&server.cli(&["agent", "list"]).stdout).contains(&agent_id)
    });

    // A workload identity, fetched: Workload API call series and a cached SVID.
    let uid = format!("unix:uid:{}", my_uid());
    server.ok(&[
        "entry",
        "create",
        "--spiffeID",
        "spiffe://example.org/dashboards",
        "--parentID",
        &agent_id,
        "--selector",
        &uid,
    ]);
    let client = {
        let endpoint = agent.endpoint();
        let mut found = None;
        for _ in 0..300 {
            if let Ok(c) = spiffe::WorkloadApiClient::connect_to(&endpoint).await {
                found = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("the Workload API socket within 30 s")
    };
    let svid = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = client.fetch_x509_svid().await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("an X509-SVID within 30 s");
    assert_eq!(
        svid.spiffe_id().to_string(),
        "spiffe://example.org/dashboards"
    );

    // A federation relationship to a closed port: its refresh fails and is counted.
    let closed = free_port();
    server.ok(&[
        "federation",
        "create",
        "--trustDomain",
        "partner.example",
        "--bundleEndpointURL",
        &format!("https://127.0.0.1:{closed}"),
        "--bundleEndpointProfile",
        "https_web",
    ]);
    let refused = server.cli(&["federation", "refresh", "--id", "partner.example"]);
    assert!(!refused.status.success(), "nothing listens on {closed}");

    let mut agent_text = String::new();
    wait_until("the agent's /metrics with its cache and sync", || {
        agent_text = get(agent_health, "/metrics").unwrap_or_default();
        agent_text.contains("tessera_agent_cached_x509_svids 1")
            && agent_text.contains("tessera_agent_sync_starts_total{")
            && agent_text.contains("tessera_agent_workload_api_calls_total{")
    });
    let mut server_text = String::new();
    wait_until("the server's /metrics with the federation refresh", || {
        server_text = get(server_health, "/metrics").unwrap_or_default();
        server_text.contains("tessera_server_federation_refresh_total{")
    });

    // The families added for the boards carry real values.
    #[allow(clippy::disallowed_methods)] // Compares with Unix times the processes exported.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let earliest = value(
        &agent_text,
        "tessera_agent_earliest_x509_svid_not_after_seconds",
    );
    assert_eq!(
        earliest,
        not_after(&svid),
        "the only SVID held is the one fetched"
    );
    // The agent synced (a snapshot or a resumption at least, and the entry created above):
    // the time of its last sync is within the last minute, its cursor past 0.
    let last_sync = value(&agent_text, "tessera_agent_last_sync_seconds");
    assert!(
        last_sync <= now + 1.0 && now - last_sync < 60.0,
        "last sync at {last_sync}, now {now}"
    );
    assert!(value(&agent_text, "tessera_agent_sync_cursor") > 0.0);
    assert!(value(&server_text, "tessera_server_signing_queue_capacity") > 0.0);
    assert!(
        value(
            &server_text,
            "tessera_server_active_jwt_key_not_after_seconds"
        ) > now
    );
    assert!(value(&server_text, "tessera_server_active_ca_not_after_seconds") > now);

    let mut exported = Exported::new();
    parse_exposition(&server_text, &mut exported);
    parse_exposition(&agent_text, &mut exported);

    // The checker itself catches what it is for.
    assert_eq!(
        check_expr("tessera_server_no_such_metric", &exported),
        vec!["metric tessera_server_no_such_metric is exported by neither process"]
    );
    let wrong_label = check_expr(
        "sum by (kind) (rate(tessera_server_svids_signed_total{method=\"x\"}[$__rate_interval]))",
        &exported,
    );
    assert!(
        wrong_label.len() == 1 && wrong_label[0].contains("has no label method"),
        "{wrong_label:?}"
    );
    let wrong_by = check_expr("sum by (method) (tessera_server_entries)", &exported);
    assert!(
        wrong_by.len() == 1 && wrong_by[0].starts_with("by (method)"),
        "{wrong_by:?}"
    );
    assert!(check_expr("tessera_server_info{server_id!=\"\"}", &exported).is_empty());

    let (problems, checked) = check_dir(&dashboards_dir(), &exported);
    assert!(
        problems.is_empty(),
        "{} problem(s) in dashboards/ against the exported families {:?}:\n{}",
        problems.len(),
        exported.keys().collect::<Vec<_>>(),
        problems.join("\n")
    );
    assert!(checked >= 40, "only {checked} queries checked");
}

/// The fetched SVID's expiry, Unix seconds.
fn not_after(svid: &spiffe::X509Svid) -> f64 {
    let (_, cert) = x509_parser::parse_x509_certificate(svid.leaf().as_ref()).expect("leaf parses");
    cert.validity().not_after.timestamp() as f64
}
