//! The `unix` attestor on this very process, checked against `id` and `sha256sum`, and end to
//! end through the socket.

use tessera_agent::attestor::unix::{UnixAttestor, UnixAttestorConfig, WorkloadSizeLimit};
use tessera_agent::attestor::{PeerCredentials, WorkloadAttestor};
use tessera_agent::workload_api::incoming::PeerStream;
use tessera_identity::{Selector, SelectorSet};
use tessera_proto::workload::X509svidRequest;

use crate::support::*;

/// The credentials the kernel reports for this process over a socket.
fn me() -> PeerCredentials {
    let (a, _b) = tokio::net::UnixStream::pair().unwrap();
    PeerStream::new(a).unwrap().peer()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

#[tokio::test]
async fn selectors_of_the_current_process() {
    let caller = me();
    assert_eq!(caller.uid.to_string(), command_output("id", &["-u"]));
    assert_eq!(caller.gid.to_string(), command_output("id", &["-g"]));
    assert_eq!(caller.pid, Some(std::process::id()));

    let attestor = UnixAttestor::new(UnixAttestorConfig::default());
    assert_eq!(attestor.name(), "unix");
    let got: SelectorSet = within("attestation", attestor.attest(&caller))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        got.contains(&sel(&format!("unix:uid:{}", caller.uid))),
        "{got:?}"
    );
    assert!(
        got.contains(&sel(&format!("unix:gid:{}", caller.gid))),
        "{got:?}"
    );
    // Names come from /etc/passwd and /etc/group: compare with what `id` reads there.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user = command_output("id", &["-un"]);
    if passwd.lines().any(|l| l.starts_with(&format!("{user}:"))) {
        assert!(got.contains(&sel(&format!("unix:user:{user}"))), "{got:?}");
    }
    let group = command_output("id", &["-gn"]);
    let groups_file = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if groups_file
        .lines()
        .any(|l| l.starts_with(&format!("{group}:")))
    {
        assert!(
            got.contains(&sel(&format!("unix:group:{group}"))),
            "{got:?}"
        );
    }
    // `id -G` lists the effective gid first, then the supplementary groups.
    for gid in command_output("id", &["-G"])
        .split_whitespace()
        .filter(|g| *g != caller.gid.to_string())
    {
        assert!(
            got.contains(&sel(&format!("unix:supplementary_gid:{gid}"))),
            "gid {gid} in {got:?}"
        );
    }
    assert!(
        !got.iter()
            .any(|s| s.value().starts_with("path:") || s.value().starts_with("sha256:")),
        "{got:?}"
    );
}

#[tokio::test]
async fn path_and_sha256_of_the_current_binary_when_enabled() {
    let config = UnixAttestorConfig {
        discover_workload_path: true,
        workload_size_limit: WorkloadSizeLimit::Unlimited,
        ..UnixAttestorConfig::default()
    };
    let got: SelectorSet = within("attestation", UnixAttestor::new(config).attest(&me()))
        .await
        .unwrap()
        .into_iter()
        .collect();
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert!(
        got.contains(&sel(&format!("unix:path:{}", exe.display()))),
        "{got:?}"
    );
    let sum = command_output("sha256sum", &[exe.to_str().unwrap()]);
    let digest = sum.split_whitespace().next().unwrap();
    assert!(
        got.contains(&sel(&format!("unix:sha256:{digest}"))),
        "{got:?}"
    );
}

#[tokio::test]
async fn an_entry_keyed_on_the_user_name_is_served_to_this_process() {
    let user = command_output("id", &["-un"]);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let user_selector = if passwd.lines().any(|l| l.starts_with(&format!("{user}:"))) {
        format!("unix:user:{user}")
    } else {
        my_selector()
    };
    let world = World::new();
    world.source.update(|s| {
        s.identities[0].entry = entry("entry-1", WORKLOAD, &[&user_selector, &my_selector()])
    });
    let agent = TestAgent::start(world.source.clone()).await;
    let mut stream = agent
        .client()
        .await
        .fetch_x509svid(X509svidRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = within("the first message", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.svids[0].spiffe_id, WORKLOAD);
}
