//! LocalAuthority service: forced rotation of the X.509 CA and the JWT key, step by step, each
//! step an event in the log and visible in GetBundle; the refusals, with SPIRE's codes.

use std::time::Duration;

use tessera_proto::spire::api::server::bundle::v1::bundle_client::BundleClient;
use tessera_proto::spire::api::server::bundle::v1::GetBundleRequest;
use tessera_proto::spire::api::server::localauthority::v1::local_authority_client::LocalAuthorityClient;
use tessera_proto::spire::api::server::localauthority::v1::{
    ActivateJwtAuthorityRequest, ActivateX509AuthorityRequest, GetJwtAuthorityStateRequest,
    GetX509AuthorityStateRequest, PrepareJwtAuthorityRequest, PrepareX509AuthorityRequest,
    RevokeJwtAuthorityRequest, RevokeX509AuthorityRequest, TaintJwtAuthorityRequest,
    TaintX509AuthorityRequest,
};
use tessera_proto::spire::api::types;
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::TailRequest;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::Fixture;

async fn bundle(f: &Fixture) -> types::Bundle {
    BundleClient::new(f.channel.clone())
        .get_bundle(GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// The kinds of the records after the fixture's first CA and key.
async fn kinds_after_base(f: &Fixture) -> Vec<String> {
    let mut stream = EventLogClient::new(f.channel.clone())
        .tail(TailRequest {
            from_seq: f.base + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    for _ in 0..1000 {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
        {
            Some(r) => kinds.push(r.kind),
            None => break,
        }
    }
    kinds
}

fn refused(e: &tonic::Status, code: Code, words: &str) {
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(words),
        "{:?} lacks {words:?}",
        e.message()
    );
}

async fn x509_state(
    c: &mut LocalAuthorityClient<Channel>,
) -> (Option<String>, Option<String>, Option<String>) {
    let s = c
        .get_x509_authority_state(GetX509AuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    let id = |a: Option<_>| {
        a.map(
            |a: tessera_proto::spire::api::server::localauthority::v1::AuthorityState| {
                a.authority_id
            },
        )
    };
    (id(s.active), id(s.prepared), id(s.old))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_prepare_activate_taint_revoke_with_events_and_bundle() {
    let f = Fixture::start().await;
    let mut c = LocalAuthorityClient::new(f.channel.clone());

    // Given the first CA, active.
    let (first, prepared, old) = x509_state(&mut c).await;
    let first = first.expect("an active CA");
    assert_eq!((prepared, old), (None, None));
    let active = f.server.authority.bundle().unwrap();
    assert_eq!(active.x509_authorities().len(), 1);

    // Prepare: a new CA joins the bundle; a second prepare is refused.
    let next = c
        .prepare_x509_authority(PrepareX509AuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .unwrap();
    assert_ne!(next.authority_id, first);
    assert!(next.expires_at > 1_700_000_000);
    assert!(next.upstream_authority_subject_key_id.is_empty());
    assert_eq!(
        x509_state(&mut c).await,
        (Some(first.clone()), Some(next.authority_id.clone()), None)
    );
    assert_eq!(bundle(&f).await.x509_authorities.len(), 2);
    let e = c
        .prepare_x509_authority(PrepareX509AuthorityRequest {})
        .await
        .unwrap_err();
    refused(&e, Code::FailedPrecondition, "already prepared");

    // Taint before activation: the active and the prepared ones are refused.
    let taint = |id: &str| TaintX509AuthorityRequest {
        authority_id: id.into(),
    };
    let e = c.taint_x509_authority(taint(&first)).await.unwrap_err();
    refused(
        &e,
        Code::FailedPrecondition,
        "only the old authority can be tainted; activate the prepared one first",
    );
    let e = c
        .taint_x509_authority(taint(&next.authority_id))
        .await
        .unwrap_err();
    refused(&e, Code::FailedPrecondition, "is the prepared one");

    // Activate: an empty or unknown ID is an invalid argument; the prepared one activates.
    let activate = |id: &str| ActivateX509AuthorityRequest {
        authority_id: id.into(),
    };
    let e = c.activate_x509_authority(activate("")).await.unwrap_err();
    refused(&e, Code::InvalidArgument, "authority_id is required");
    let e = c
        .activate_x509_authority(activate("0123abcd"))
        .await
        .unwrap_err();
    refused(&e, Code::InvalidArgument, "0123abcd");
    let activated = c
        .activate_x509_authority(activate(&next.authority_id))
        .await
        .unwrap()
        .into_inner()
        .activated_authority
        .unwrap();
    assert_eq!(activated.authority_id, next.authority_id);
    assert_eq!(
        x509_state(&mut c).await,
        (Some(next.authority_id.clone()), None, Some(first.clone()))
    );
    // The new CA signs.
    assert_eq!(
        f.server.authority.signer().active_authority_id(),
        Some(next.authority_id.clone())
    );

    // Revoke before taint is refused; taint the old one: the bundle marks it.
    let revoke = |id: &str| RevokeX509AuthorityRequest {
        authority_id: id.into(),
    };
    let e = c.revoke_x509_authority(revoke(&first)).await.unwrap_err();
    refused(&e, Code::FailedPrecondition, "taint it first");
    let tainted = c
        .taint_x509_authority(taint(&first))
        .await
        .unwrap()
        .into_inner()
        .tainted_authority
        .unwrap();
    assert_eq!(tainted.authority_id, first);
    let b = bundle(&f).await;
    assert_eq!(b.x509_authorities.len(), 2);
    let old_root = active.x509_authorities()[0].der().to_vec();
    for a in &b.x509_authorities {
        assert_eq!(
            a.tainted,
            a.asn1 == old_root,
            "only the old root is tainted"
        );
    }
    let e = c.taint_x509_authority(taint(&first)).await.unwrap_err();
    refused(&e, Code::FailedPrecondition, "already tainted");

    // Revoke: the old root leaves the bundle.
    let revoked = c
        .revoke_x509_authority(revoke(&first))
        .await
        .unwrap()
        .into_inner()
        .revoked_authority
        .unwrap();
    assert_eq!(revoked.authority_id, first);
    let b = bundle(&f).await;
    assert_eq!(b.x509_authorities.len(), 1);
    assert_ne!(b.x509_authorities[0].asn1, old_root);
    assert!(!b.x509_authorities[0].tainted);
    assert_eq!(
        x509_state(&mut c).await,
        (Some(next.authority_id), None, None)
    );
    let e = c.revoke_x509_authority(revoke(&first)).await.unwrap_err();
    refused(&e, Code::InvalidArgument, &first);

    // Each step is one event, in order.
    assert_eq!(
        kinds_after_base(&f).await,
        [
            "CaPrepared",
            "CaActivated",
            "X509AuthorityTainted",
            "X509AuthorityRevoked"
        ]
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_prepare_activate_taint_revoke_with_events_and_bundle() {
    let f = Fixture::start().await;
    let mut c = LocalAuthorityClient::new(f.channel.clone());
    let state = c
        .get_jwt_authority_state(GetJwtAuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = state.active.unwrap().authority_id;
    assert!(state.prepared.is_none() && state.old.is_none());

    let next = c
        .prepare_jwt_authority(PrepareJwtAuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .unwrap()
        .authority_id;
    let e = c
        .taint_jwt_authority(TaintJwtAuthorityRequest {
            authority_id: first.clone(),
        })
        .await
        .unwrap_err();
    refused(&e, Code::FailedPrecondition, "only the old authority");
    c.activate_jwt_authority(ActivateJwtAuthorityRequest {
        authority_id: next.clone(),
    })
    .await
    .unwrap();
    let state = c
        .get_jwt_authority_state(GetJwtAuthorityStateRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.active.unwrap().authority_id, next);
    assert_eq!(state.old.unwrap().authority_id, first);
    assert_eq!(f.server.authority.signer().active_kid(), Some(next.clone()));

    let e = c
        .revoke_jwt_authority(RevokeJwtAuthorityRequest {
            authority_id: first.clone(),
        })
        .await
        .unwrap_err();
    refused(&e, Code::FailedPrecondition, "not tainted");
    c.taint_jwt_authority(TaintJwtAuthorityRequest {
        authority_id: first.clone(),
    })
    .await
    .unwrap();
    let b = bundle(&f).await;
    let tainted: Vec<(&str, bool)> = b
        .jwt_authorities
        .iter()
        .map(|k| (k.key_id.as_str(), k.tainted))
        .collect();
    assert!(tainted.contains(&(first.as_str(), true)), "{tainted:?}");
    assert!(tainted.contains(&(next.as_str(), false)), "{tainted:?}");

    c.revoke_jwt_authority(RevokeJwtAuthorityRequest {
        authority_id: first.clone(),
    })
    .await
    .unwrap();
    let b = bundle(&f).await;
    assert_eq!(b.jwt_authorities.len(), 1);
    assert_eq!(b.jwt_authorities[0].key_id, next);
    assert_eq!(
        kinds_after_base(&f).await,
        [
            "JwtKeyPrepared",
            "JwtKeyActivated",
            "JwtAuthorityTainted",
            "JwtAuthorityRevoked"
        ]
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_after_a_manual_activation_does_not_undo_it() {
    let f = Fixture::start().await;
    let mut c = LocalAuthorityClient::new(f.channel.clone());
    let next = c
        .prepare_x509_authority(PrepareX509AuthorityRequest {})
        .await
        .unwrap()
        .into_inner()
        .prepared_authority
        .unwrap()
        .authority_id;
    c.activate_x509_authority(ActivateX509AuthorityRequest {
        authority_id: next.clone(),
    })
    .await
    .unwrap();
    // A rotation tick at the same instant: nothing to prepare, activate or retire.
    let report = f.server.authority.tick().await.unwrap();
    assert_eq!(report.events, vec![]);
    let (active, prepared, old) = x509_state(&mut c).await;
    assert_eq!(active, Some(next));
    assert_eq!(prepared, None);
    assert!(old.is_some());
    f.stop().await;
}
