//! EventLog service: tail (filters, limit, follow), get, verify, head.

use std::time::Duration;

use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::BatchCreateEntryRequest;
use tessera_proto::tessera::eventlog::v1::event_log_client::EventLogClient;
use tessera_proto::tessera::eventlog::v1::{
    GetRequest, HeadRequest, Record, TailRequest, VerifyRequest,
};
use tessera_server::config::ApiLimits;
use tonic::Code;

use crate::support::{entry, Fixture};

async fn create_entries(f: &Fixture, n: usize, offset: usize) {
    let mut client = EntryClient::new(f.channel.clone());
    let results = client
        .batch_create_entry(BatchCreateEntryRequest {
            entries: (0..n)
                .map(|i| entry(&format!("/e{}", i + offset), &["unix:uid:1"]))
                .collect(),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(results.iter().all(|r| r.status.as_ref().unwrap().code == 0));
}

async fn collect(
    client: &mut EventLogClient<tonic::transport::Channel>,
    req: TailRequest,
) -> Vec<Record> {
    let mut stream = client.tail(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        out.push(r);
    }
    out
}

#[tokio::test]
async fn tail_get_head_and_verify() {
    let f = Fixture::start().await;
    create_entries(&f, 5, 0).await;
    let mut client = EventLogClient::new(f.channel.clone());

    let b = f.base;
    let everything = collect(&mut client, TailRequest::default()).await;
    assert_eq!(everything.len() as u64, b + 5);
    assert!(everything[..b as usize]
        .iter()
        .all(|r| r.kind.starts_with("Ca") || r.kind.starts_with("JwtKey")));
    let all = collect(
        &mut client,
        TailRequest {
            kinds: vec!["EntryCreated".into()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (b + 1..=b + 5).collect::<Vec<_>>()
    );
    let json: serde_json::Value = serde_json::from_str(&all[0].payload_json).unwrap();
    assert_eq!(json["EntryCreated"]["spiffe_id"], "spiffe://example.org/e0");
    assert_eq!(all[1].prev_hash, all[0].hash, "chained");

    let some = collect(
        &mut client,
        TailRequest {
            from_seq: b + 2,
            limit: 2,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        some.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![b + 2, b + 3]
    );
    let none = collect(
        &mut client,
        TailRequest {
            kinds: vec!["AgentBanned".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(none.is_empty());

    let got = client
        .get(GetRequest { seq: b + 3 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, all[2]);
    assert_eq!(
        client.get(GetRequest { seq: 0 }).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        client
            .get(GetRequest { seq: b + 99 })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let head = client.head(HeadRequest {}).await.unwrap().into_inner();
    assert_eq!(head.seq, b + 5);
    assert_eq!(head.hash, all[4].hash);
    assert_eq!(head.recorded_at, all[4].recorded_at);

    let full = client
        .verify(VerifyRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(full.ok);
    assert_eq!(full.records_checked, b + 5);
    assert_eq!(full.last_good_hash, all[4].hash);
    let part = client
        .verify(VerifyRequest {
            from_seq: b + 2,
            to_seq: b + 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(part.ok, "{part:?}");
    assert_eq!(part.records_checked, 3);
    assert_eq!(part.last_good_hash, all[3].hash);
    let past = client
        .verify(VerifyRequest {
            from_seq: 1,
            to_seq: b + 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(past.code(), Code::InvalidArgument);
    let backwards = client
        .verify(VerifyRequest {
            from_seq: b + 4,
            to_seq: b + 2,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), Code::InvalidArgument);
    f.stop().await;
}

#[tokio::test]
async fn follow_delivers_new_records_and_streams_are_bounded() {
    let f = Fixture::with_limits(ApiLimits {
        max_tail_streams: 1,
        max_event_kinds: 2,
        ..ApiLimits::default()
    })
    .await;
    create_entries(&f, 1, 0).await;
    let b = f.base;
    let mut client = EventLogClient::new(f.channel.clone());
    let mut follow = client
        .tail(TailRequest {
            from_seq: b + 1,
            follow: true,
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), follow.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.seq, b + 1);

    let busy = client.tail(TailRequest::default()).await.unwrap_err();
    assert_eq!(busy.code(), Code::ResourceExhausted);
    assert!(
        busy.message().contains("limits.max_tail_streams"),
        "{}",
        busy.message()
    );

    create_entries(&f, 2, 1).await;
    let mut seqs = vec![first.seq];
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), follow.message())
        .await
        .unwrap()
        .unwrap()
    {
        seqs.push(r.seq);
    }
    assert_eq!(
        seqs,
        vec![b + 1, b + 2, b + 3],
        "the live records, then the end at the limit"
    );

    // The ended stream gave its slot back.
    let mut again = None;
    for _ in 0..50 {
        match client.tail(TailRequest::default()).await {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(
        again.is_some(),
        "the Tail slot is released when its stream ends"
    );
    drop(again);

    let too_many = client
        .tail(TailRequest {
            kinds: vec!["A".into(), "B".into(), "C".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::ResourceExhausted);
    f.stop().await;
}
