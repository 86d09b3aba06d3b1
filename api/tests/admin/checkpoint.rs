//! EventLog.LatestCheckpoint and Verify's anchor, over gRPC: one checkpoint, made by hand
//! (`checkpoint_once`), signs the fixture's log with the server's own JWT key.

use std::sync::Arc;
use std::time::Duration;

use tessera_actors::server::checkpoint::{
    checkpoint_once, CheckpointSettings, CheckpointerArgs, TickOutcome,
};
use tessera_eventlog::{EventLog, ManualClock, TypedLog};
use tessera_identity::TrustDomain;
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::verify_response::Fault;
use tessera_proto::tessera::eventlog::v1::{LatestCheckpointRequest, VerifyRequest};
use tonic::Code;

use crate::support::{Fixture, TD};

/// Checkpoints the fixture's head once.
async fn checkpoint_fixture(f: &Fixture) -> TickOutcome {
    let args = CheckpointerArgs {
        log: TypedLog::new(f.log.clone()),
        signer: f.server.authority.signer().clone(),
        clock: Arc::new(ManualClock::at_unix_secs(1_700_000_000)),
        trust_domain: TrustDomain::new(TD).unwrap(),
        server_id: None,
        settings: CheckpointSettings {
            every_records: 1,
            interval: Duration::ZERO,
            tick: None,
            lookback: 10,
        },
    };
    checkpoint_once(args).await.unwrap()
}

#[tokio::test]
async fn latest_checkpoint_and_verify_with_an_anchor() {
    let f = Fixture::start().await;
    let mut client = EventLogClient::new(f.channel.clone());
    let none = client
        .latest_checkpoint(LatestCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::NotFound);
    assert!(
        none.message().contains("no signed checkpoint yet"),
        "{none:?}"
    );

    let covered = f.log.head();
    assert_eq!(
        checkpoint_fixture(&f).await,
        TickOutcome::Appended {
            record_seq: covered.seq + 1,
            covers: covered.seq
        }
    );
    let c = client
        .latest_checkpoint(LatestCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((c.record_seq, c.seq), (covered.seq + 1, covered.seq));
    assert_eq!(c.hash, covered.hash.0.to_vec());
    assert_eq!(c.trust_domain, TD);
    assert_eq!(
        Some(c.kid.clone()),
        f.server.authority.signer().active_kid()
    );

    let verify = |anchor_seq, anchor_hash: Vec<u8>| VerifyRequest {
        anchor_seq,
        anchor_hash,
        ..Default::default()
    };
    let good = client
        .verify(verify(c.seq, c.hash.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(good.ok, "{good:?}");
    assert_eq!(good.checkpoints_checked, 1);
    assert_eq!(good.fault(), Fault::Unspecified);

    let past = client
        .verify(verify(c.record_seq + 5, c.hash.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((past.ok, past.fault()), (false, Fault::Truncated));
    assert_eq!(past.first_bad_seq, c.record_seq + 1);
    assert!(
        past.reason.contains(&format!(
            "the anchor covers seq {} but the log ends at seq {}",
            c.record_seq + 5,
            c.record_seq
        )),
        "{past:?}"
    );

    let other = client
        .verify(verify(c.seq - 1, c.hash.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((other.ok, other.fault()), (false, Fault::Rewritten));
    assert_eq!(other.first_bad_seq, c.seq - 1);

    let short = client.verify(verify(c.seq, vec![1; 31])).await.unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    assert!(short.message().contains("anchor_hash"), "{short:?}");

    // An anchor is only proved by re-hashing from seq 1: a narrower range is refused.
    let narrow = client
        .verify(VerifyRequest {
            from_seq: 2,
            ..verify(c.seq, c.hash.clone())
        })
        .await
        .unwrap_err();
    assert_eq!(narrow.code(), Code::InvalidArgument);
    assert!(narrow.message().contains("whole log"), "{narrow:?}");
    f.stop().await;
}
