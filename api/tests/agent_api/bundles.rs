//! Bundles on the sync stream: federated bundles in snapshots, changes and resumptions, within
//! the agent's message budget; a tainted authority marked, a revoked one gone.

use tessera_actors::server::federation::{FederationCommand, PutMode};

use super::*;

/// A bundle of `td` with one self-signed CA made here.
fn foreign_bundle(td: &str) -> Bundle {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut b = Bundle::new(TrustDomain::new(td).unwrap());
    b.add_x509_authority(tessera_identity::X509Authority::from_der(cert.der().to_vec()).unwrap());
    b
}

async fn put_federated(server: &Server, bundle: Bundle) {
    server
        .federation
        .command(FederationCommand::PutBundle {
            bundle,
            mode: PutMode::Set,
        })
        .await
        .unwrap();
}

/// Reads a whole snapshot; returns its seq and the trust domains of its bundles.
async fn read_snapshot(
    sync: &mut tonic::Streaming<tessera_proto::tessera::agent::v1::SyncResponse>,
) -> (u64, Vec<String>) {
    let mut tds = Vec::new();
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::SnapshotBegin(_) => {}
            Event::SnapshotChunk(c) => tds.extend(c.bundles.into_iter().map(|b| b.trust_domain)),
            Event::SnapshotEnd(end) => return (end.seq, tds),
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_reach_agents_in_snapshots_changes_and_resumptions() {
    let r = start().await;
    put_federated(&r.server, foreign_bundle("partner.example")).await;
    token(&r.server, "tok-fed", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-fed").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let open = |cursor| SyncRequest {
        cursor,
        max_message_bytes: 0,
    };

    // Given a federated bundle, the snapshot carries it beside the trust domain's own.
    let mut sync = within(client.sync_events(open(0)))
        .await
        .unwrap()
        .into_inner();
    let (_, mut tds) = read_snapshot(&mut sync).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "partner.example"]);

    // A new one, then a deletion, reach the open stream.
    let other = foreign_bundle("other.example");
    put_federated(&r.server, other.clone()).await;
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u)
                if u.bundle.as_ref().unwrap().trust_domain == "other.example" =>
            {
                let got = &u.bundle.unwrap().x509_authorities[0].asn1;
                assert_eq!(got, other.x509_authorities()[0].der());
                break;
            }
            Event::Checkpoint(_) | Event::BundleUpdated(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    let cursor = r.server.sync.seq().await.unwrap();
    r.server
        .federation
        .command(FederationCommand::DeleteBundle {
            trust_domain: TrustDomain::new("partner.example").unwrap(),
        })
        .await
        .unwrap();
    loop {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleRemoved(b) => {
                assert_eq!(b.trust_domain, "partner.example");
                break;
            }
            Event::Checkpoint(_) | Event::BundleUpdated(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    drop(sync);

    // An agent whose cursor predates the deletion gets a snapshot (it may hold the bundle)...
    let mut again = within(client.sync_events(open(cursor)))
        .await
        .unwrap()
        .into_inner();
    let (seq, mut tds) = read_snapshot(&mut again).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "other.example"]);
    drop(again);

    // ...and one after it resumes, with every bundle sent again.
    let mut resumed = within(client.sync_events(open(seq)))
        .await
        .unwrap()
        .into_inner();
    let mut tds = Vec::new();
    match within(resumed.next())
        .await
        .unwrap()
        .unwrap()
        .event
        .unwrap()
    {
        Event::Resumed(r) => assert_eq!(r.cursor, seq),
        e => panic!("expected Resumed, got {e:?}"),
    }
    while tds.len() < 2 {
        match within(resumed.next())
            .await
            .unwrap()
            .unwrap()
            .event
            .unwrap()
        {
            Event::BundleUpdated(u) => tds.push(u.bundle.unwrap().trust_domain),
            e => panic!("unexpected {e:?}"),
        }
    }
    tds.sort();
    assert_eq!(tds, ["example.org", "other.example"]);
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_bundles_are_spread_over_snapshot_chunks_within_the_agents_budget() {
    let r = start().await;
    for i in 0..60 {
        put_federated(&r.server, foreign_bundle(&format!("partner{i}.example"))).await;
    }
    token(&r.server, "tok-chunks", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-chunks").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    // The smallest budget an agent may ask for (16 KiB); 61 bundles are about twice that.
    let budget = 16 * 1024;
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: budget,
    }))
    .await
    .unwrap()
    .into_inner();
    let (mut chunks, mut bundles) = (0, 0);
    loop {
        let message = within(sync.next()).await.unwrap().unwrap();
        assert!(
            prost::Message::encoded_len(&message) <= budget as usize,
            "a sync message of {} bytes exceeds the agent's budget",
            prost::Message::encoded_len(&message)
        );
        match message.event.unwrap() {
            Event::SnapshotBegin(b) => assert_eq!(b.bundle_count, 61),
            Event::SnapshotChunk(c) => {
                assert_eq!(c.index, chunks);
                chunks += 1;
                bundles += c.bundles.len();
            }
            Event::SnapshotEnd(end) => {
                assert_eq!(end.chunk_count, chunks);
                break;
            }
            other => panic!("unexpected {other:?} in the snapshot"),
        }
    }
    assert_eq!(bundles, 61);
    assert!(chunks > 1, "bundles spread over {chunks} chunk(s)");
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_too_large_for_the_agents_budget_is_left_out_not_sent() {
    let r = start().await;
    // About 60 certificates: well over the 16 KiB budget the agent asks for below.
    let mut big = foreign_bundle("big.example");
    for _ in 0..60 {
        let one = foreign_bundle("big.example");
        big.add_x509_authority(one.x509_authorities()[0].clone());
    }
    put_federated(&r.server, big).await;
    put_federated(&r.server, foreign_bundle("small.example")).await;
    token(&r.server, "tok-big", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-big").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: 16 * 1024,
    }))
    .await
    .unwrap()
    .into_inner();
    let (_, mut tds) = read_snapshot(&mut sync).await;
    tds.sort();
    assert_eq!(tds, ["example.org", "small.example"]);
    let _ = r.stop.send(());
    r.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_authority_reaches_the_agents_stream_marked_and_a_revoked_one_leaves_it() {
    use tessera_actors::server::authority::{AuthorityKind, LocalStep};

    let r = start().await;
    token(&r.server, "tok-taint", None).await;
    let (chain, key, _) = attest(r.addr, &r.bundle, "tok-taint").await.unwrap();
    let mut client = AgentServerClient::new(channel(r.addr, &r.bundle, Some((&chain, &key))).await);
    let mut sync = within(client.sync_events(SyncRequest {
        cursor: 0,
        max_message_bytes: 0,
    }))
    .await
    .unwrap()
    .into_inner();
    read_snapshot(&mut sync).await;

    // Rotate by hand: the first CA and JWT key become old, then tainted.
    let authority = &r.server.authority;
    let (old_ca, old_kid) = (
        authority.signer().active_authority_id().unwrap(),
        authority.signer().active_kid().unwrap(),
    );
    for kind in [AuthorityKind::X509, AuthorityKind::Jwt] {
        let next = authority.prepare(kind).await.unwrap().unwrap();
        authority
            .local_step(kind, LocalStep::Activate, next.id)
            .await
            .unwrap()
            .unwrap();
    }
    authority
        .local_step(AuthorityKind::X509, LocalStep::Taint, old_ca.clone())
        .await
        .unwrap()
        .unwrap();
    authority
        .local_step(AuthorityKind::Jwt, LocalStep::Taint, old_kid.clone())
        .await
        .unwrap()
        .unwrap();
    let old_root = r.bundle.x509_authorities()[0].der().to_vec();

    // The open stream gets the bundle with both marks (bounded: one update per step at most).
    let mut marked = false;
    for _ in 0..20 {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u) => {
                let b = u.bundle.unwrap();
                let x509 = b.x509_authorities.iter().find(|a| a.asn1 == old_root);
                let jwt = b.jwt_authorities.iter().find(|k| k.key_id == old_kid);
                if x509.is_some_and(|a| a.tainted) && jwt.is_some_and(|k| k.tainted) {
                    assert!(
                        b.x509_authorities
                            .iter()
                            .filter(|a| a.asn1 != old_root)
                            .all(|a| !a.tainted),
                        "only the old root is marked"
                    );
                    marked = true;
                    break;
                }
            }
            Event::Checkpoint(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(marked, "no BundleUpdated with the taint marks");

    // Revoked: the old root leaves the agent's bundle.
    authority
        .local_step(AuthorityKind::X509, LocalStep::Revoke, old_ca)
        .await
        .unwrap()
        .unwrap();
    let mut gone = false;
    for _ in 0..20 {
        match within(sync.next()).await.unwrap().unwrap().event.unwrap() {
            Event::BundleUpdated(u) => {
                let b = u.bundle.unwrap();
                if !b.x509_authorities.iter().any(|a| a.asn1 == old_root) {
                    gone = true;
                    break;
                }
            }
            Event::Checkpoint(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(gone, "the revoked root is still sent");
    let _ = r.stop.send(());
}
