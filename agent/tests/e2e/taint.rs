//! Forced rotation with real processes, driven through the CLI as an SRE would: `tessera-server
//! localauthority x509 prepare` → `activate` → `taint` the old CA, and every open X.509
//! stream of the agent receives SVIDs signed by the new CA, with no restart of anything;
//! `revoke` → every stream's bundle lacks the old root. The same for JWT: after `jwt taint`
//! the agent's cached JWT-SVID of the old key is not served again.

use std::time::Duration;

use futures::StreamExt;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::processes::ServerProc;
use super::{client, create, open_stream, pair, within};

const WORKLOADS: usize = 3;

/// The authority ID `localauthority <kind> <step>` prints under `field` (JSON output).
fn authority_id(server: &ServerProc, args: &[&str], field: &str) -> String {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let out = server.ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[field]["authority_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{field}.authority_id in {out}"))
        .to_owned()
}

/// The X.509 authorities of the server's bundle, DER.
fn roots(server: &ServerProc) -> Vec<Vec<u8>> {
    pem::parse_many(server.ok(&["bundle", "show", "--format", "pem"]))
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

/// Whether `leaf` (DER) is signed by the CA `ca` (DER).
fn signed_by(leaf: &[u8], ca: &[u8]) -> bool {
    let (_, leaf) = X509Certificate::from_der(leaf).unwrap();
    let (_, ca) = X509Certificate::from_der(ca).unwrap();
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

fn example_org() -> spiffe::TrustDomain {
    spiffe::TrustDomain::new("example.org").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tainting_the_old_ca_re_signs_every_open_streams_svids_and_revoking_it_leaves_the_bundles()
{
    let p = pair();
    for i in 0..WORKLOADS {
        create(&p, &format!("/w{i}"), &[]);
    }
    let roots_before = roots(&p.server);
    assert_eq!(roots_before.len(), 1, "one CA before the rotation");
    let first_ca = roots_before[0].clone();

    // Several workloads, each with its own client and open stream, each holding every SVID
    // (all entries select this test's uid).
    let mut clients = Vec::new();
    for _ in 0..WORKLOADS {
        clients.push(client(&p).await);
    }
    let mut streams = Vec::new();
    for c in &clients {
        let mut s = Box::pin(open_stream(c).await);
        within("every SVID on the stream", async {
            loop {
                if let Some(Ok(ctx)) = s.next().await {
                    if ctx.svids().len() == WORKLOADS {
                        assert!(ctx
                            .svids()
                            .iter()
                            .all(|s| signed_by(s.leaf().as_ref(), &first_ca)));
                        return;
                    }
                }
            }
        })
        .await;
        streams.push(s);
    }

    // Twice: the second rotation starts from a CA that was itself prepared by hand.
    let mut old = first_ca;
    for round in 0..2 {
        let old_id = authority_id(&p.server, &["localauthority", "x509", "show"], "active");
        // The rotation, as an SRE would run it.
        let new_id = authority_id(
            &p.server,
            &["localauthority", "x509", "prepare"],
            "prepared_authority",
        );
        assert_ne!(new_id, old_id);
        let new = roots(&p.server)
            .into_iter()
            .find(|r| *r != old)
            .expect("the prepared CA is in the bundle");
        p.server.ok(&[
            "localauthority",
            "x509",
            "activate",
            "--authorityID",
            &new_id,
        ]);
        p.server
            .ok(&["localauthority", "x509", "taint", "--authorityID", &old_id]);

        // Every stream gets every SVID signed by the new CA, on the stream it already had
        // open.
        for s in &mut streams {
            within(
                &format!("round {round}: SVIDs re-signed by the new CA"),
                async {
                    loop {
                        let ctx = s.next().await.expect("the stream stays open").unwrap();
                        let leaves: Vec<&[u8]> =
                            ctx.svids().iter().map(|s| s.leaf().as_ref()).collect();
                        if leaves.len() == WORKLOADS && leaves.iter().all(|l| signed_by(l, &new)) {
                            assert!(leaves.iter().all(|l| !signed_by(l, &old)));
                            return;
                        }
                    }
                },
            )
            .await;
        }

        // Revoke: the old root leaves every stream's bundle; the new one is there.
        p.server
            .ok(&["localauthority", "x509", "revoke", "--authorityID", &old_id]);
        assert_eq!(roots(&p.server), vec![new.clone()]);
        for s in &mut streams {
            within(
                &format!("round {round}: the bundle without the old root"),
                async {
                    loop {
                        let ctx = s.next().await.expect("the stream stays open").unwrap();
                        let bundle = ctx.bundle_set().get(&example_org()).expect("own bundle");
                        let ders: Vec<&[u8]> =
                            bundle.authorities().iter().map(|a| a.as_ref()).collect();
                        if !ders.contains(&old.as_slice()) {
                            assert!(ders.contains(&new.as_slice()), "the new root stays");
                            return;
                        }
                    }
                },
            )
            .await;
        }
        old = new;
    }
    let mut agent = p.agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent ran throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tainting_the_old_jwt_key_drops_the_agents_cached_jwt_svid() {
    let p = pair();
    create(&p, "/jwt", &[]);
    let c = client(&p).await;
    let fetch = || async {
        within("a JWT-SVID", async {
            loop {
                if let Ok(j) = c.fetch_jwt_svid(&["aud"], None).await {
                    return j;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    };
    let first = fetch().await;
    let old_kid = authority_id(&p.server, &["localauthority", "jwt", "show"], "active");
    assert_eq!(first.key_id(), old_kid);

    let new_kid = authority_id(
        &p.server,
        &["localauthority", "jwt", "prepare"],
        "prepared_authority",
    );
    p.server.ok(&[
        "localauthority",
        "jwt",
        "activate",
        "--authorityID",
        &new_kid,
    ]);
    // Activated but not tainted: the agent still serves its cached JWT-SVID (5 min TTL,
    // refreshed at half of it).
    assert_eq!(fetch().await.token(), first.token());

    p.server
        .ok(&["localauthority", "jwt", "taint", "--authorityID", &old_kid]);
    within("a JWT-SVID of the new key", async {
        loop {
            let j = fetch().await;
            if j.key_id() == new_kid {
                assert_ne!(j.token(), first.token());
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
