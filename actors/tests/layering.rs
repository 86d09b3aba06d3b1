//! DESIGN.md's arrows inside this crate: the agent side never reaches into the server side,
//! so the agent's code has no path to CA or registry code. Checked on the source text, since
//! Rust has no module-visibility rule that says "not from there".

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn agent_side_never_imports_server_side() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![src.join("agent.rs")];
    rust_files(&src.join("agent"), &mut files);
    assert!(
        files.len() > 3,
        "agent sources not found under {}",
        src.display()
    );
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("crate::server") || line.contains("super::server") {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "actors/src/agent must not import actors/src/server (move shared code to a crate-root module):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn agent_binary_never_imports_server_side() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 3,
        "agent sources not found under {}",
        src.display()
    );
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, line)| line.contains("tessera_actors::server"))
                .map(|(n, line)| format!("{}:{}: {}", file.display(), n + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "tessera-agent must not use tessera_actors::server:\n{}",
        offenders.join("\n")
    );
}
