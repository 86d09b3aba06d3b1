//! Entry service: batches item by item, filters, pagination, masks, limits, codes.

use tessera_proto::spire::api::server::entry::v1::entry_client::EntryClient;
use tessera_proto::spire::api::server::entry::v1::{
    count_entries_request, list_entries_request, BatchCreateEntryRequest, BatchDeleteEntryRequest,
    BatchUpdateEntryRequest, CountEntriesRequest, GetEntryRequest, ListEntriesRequest,
};
use tessera_proto::spire::api::types;
use tessera_server::config::ApiLimits;
use tonic::Code;

use crate::support::{entry, id, selector, Fixture};

async fn create(
    client: &mut EntryClient<tonic::transport::Channel>,
    entries: Vec<types::Entry>,
) -> Vec<types::Entry> {
    client
        .batch_create_entry(BatchCreateEntryRequest {
            entries,
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|r| {
            assert_eq!(r.status.as_ref().unwrap().code, 0, "{:?}", r.status);
            r.entry.unwrap()
        })
        .collect()
}

#[tokio::test]
async fn batch_create_answers_item_by_item() {
    let f = Fixture::start().await;
    let mut client = EntryClient::new(f.channel.clone());
    let mut bad_td = entry("/x", &["unix:uid:1"]);
    bad_td.spiffe_id = Some(types::Spiffeid {
        trust_domain: "Ex.org".into(),
        path: "/x".into(),
    });
    let results = client
        .batch_create_entry(BatchCreateEntryRequest {
            entries: vec![
                entry("/web", &["unix:uid:1"]),
                bad_td,
                entry("/web", &["unix:uid:1"]),
                entry("/no-selectors", &[]),
                entry("/other", &["unix:uid:2"]),
            ],
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<i32> = results
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        vec![
            0,
            Code::InvalidArgument as i32,
            Code::AlreadyExists as i32,
            Code::InvalidArgument as i32,
            0
        ]
    );
    let msg = &results[1].status.as_ref().unwrap().message;
    assert!(
        msg.starts_with("spiffe_id: ") && msg.contains("lowercase"),
        "{msg}"
    );
    let created = results[0].entry.as_ref().unwrap();
    assert_eq!(created.id.len(), 36, "a generated UUID");
    assert_eq!(created.spiffe_id, id("/web"));
    assert!(results[1].entry.is_none());
    f.stop().await;
}

#[tokio::test]
async fn list_filters_and_pages_count_and_get() {
    let f = Fixture::start().await;
    let mut client = EntryClient::new(f.channel.clone());
    let mut entries: Vec<_> = (0..7)
        .map(|i| entry(&format!("/w{i}"), &["unix:uid:1", &format!("unix:gid:{i}")]))
        .collect();
    entries[3].hint = "blue".into();
    entries[4].downstream = true;
    let created = create(&mut client, entries).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = client
            .list_entries(ListEntriesRequest {
                filter: None,
                output_mask: None,
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut want: Vec<_> = created.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(seen, want, "every entry once, in id order");

    let by_selector = |sels: &[&str], how: i32| list_entries_request::Filter {
        by_selectors: Some(types::SelectorMatch {
            selectors: sels.iter().map(|s| selector(s)).collect(),
            r#match: how,
        }),
        ..Default::default()
    };
    let lister = client.clone();
    let list = |filter: list_entries_request::Filter| {
        let mut client = lister.clone();
        async move {
            client
                .list_entries(ListEntriesRequest {
                    filter: Some(filter),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().entries)
        }
    };
    assert_eq!(
        list(by_selector(&["unix:uid:1"], 2)).await.unwrap().len(),
        7,
        "superset"
    );
    assert_eq!(
        list(by_selector(&["unix:uid:1", "unix:gid:2"], 0))
            .await
            .unwrap()
            .len(),
        1,
        "exact"
    );
    assert_eq!(
        list(by_selector(&["unix:gid:2", "unix:gid:5"], 3))
            .await
            .unwrap()
            .len(),
        2,
        "any"
    );
    let hinted = list(list_entries_request::Filter {
        by_hint: Some("blue".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(hinted[0].spiffe_id, id("/w3"));
    let down = list(list_entries_request::Filter {
        by_downstream: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(down[0].spiffe_id, id("/w4"));
    let by_id = list(list_entries_request::Filter {
        by_spiffe_id: id("/w5"),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(by_id.len(), 1);
    let err = list(by_selector(&["unix:uid:1"], 42)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let count = client
        .count_entries(CountEntriesRequest {
            filter: Some(count_entries_request::Filter {
                by_parent_id: crate::support::agent_id(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 7);

    let masked = client
        .get_entry(GetEntryRequest {
            id: created[0].id.clone(),
            output_mask: Some(types::EntryMask {
                selectors: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(masked.id, created[0].id);
    assert_eq!(masked.selectors.len(), 2);
    assert_eq!(masked.spiffe_id, None, "masked out");
    let missing = client
        .get_entry(GetEntryRequest {
            id: "no-such-entry".into(),
            output_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let bad = client
        .get_entry(GetEntryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    f.stop().await;
}

#[tokio::test]
async fn update_honours_the_input_mask_and_delete_reports_per_id() {
    let f = Fixture::start().await;
    let mut client = EntryClient::new(f.channel.clone());
    let mut original = entry("/web", &["unix:uid:1"]);
    original.x509_svid_ttl = 600;
    original.hint = "old".into();
    let created = create(&mut client, vec![original]).await.remove(0);

    let change = types::Entry {
        id: created.id.clone(),
        hint: "new".into(),
        // Not in the mask: must be ignored.
        x509_svid_ttl: 1200,
        ..Default::default()
    };
    let results = client
        .batch_update_entry(BatchUpdateEntryRequest {
            entries: vec![
                change,
                types::Entry {
                    id: "missing".into(),
                    ..Default::default()
                },
            ],
            input_mask: Some(types::EntryMask {
                hint: true,
                ..Default::default()
            }),
            output_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results[0].status.as_ref().unwrap().code, 0);
    let updated = results[0].entry.as_ref().unwrap();
    assert_eq!(updated.hint, "new");
    assert_eq!(updated.x509_svid_ttl, 600);
    assert_eq!(updated.revision_number, created.revision_number + 1);
    assert_eq!(
        results[1].status.as_ref().unwrap().code,
        Code::NotFound as i32
    );

    let deleted = client
        .batch_delete_entry(BatchDeleteEntryRequest {
            ids: vec![created.id.clone(), created.id.clone(), "bad id".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<i32> = deleted
        .iter()
        .map(|r| r.status.as_ref().unwrap().code)
        .collect();
    assert_eq!(
        codes,
        vec![0, Code::NotFound as i32, Code::InvalidArgument as i32]
    );
    assert_eq!(deleted[2].id, "bad id");
    f.stop().await;
}

#[tokio::test]
async fn limits_are_enforced_with_resource_exhausted() {
    let f = Fixture::with_limits(ApiLimits {
        max_batch_size: 2,
        default_page_size: 2,
        max_page_size: 3,
        ..ApiLimits::default()
    })
    .await;
    let mut client = EntryClient::new(f.channel.clone());
    let err = client
        .batch_create_entry(BatchCreateEntryRequest {
            entries: (0..3)
                .map(|i| entry(&format!("/e{i}"), &["unix:uid:1"]))
                .collect(),
            output_mask: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("limits.max_batch_size"),
        "{}",
        err.message()
    );
    for i in 0..2 {
        create(
            &mut client,
            vec![
                entry(&format!("/a{i}"), &["unix:uid:1"]),
                entry(&format!("/b{i}"), &["unix:uid:1"]),
            ],
        )
        .await;
    }
    let pager = client.clone();
    let page = |size: i32| {
        let mut client = pager.clone();
        async move {
            client
                .list_entries(ListEntriesRequest {
                    page_size: size,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let p = page(0).await.unwrap();
    assert_eq!(p.entries.len(), 2, "the default page size");
    assert!(!p.next_page_token.is_empty());
    assert_eq!(
        page(100).await.unwrap().entries.len(),
        3,
        "clamped to the maximum"
    );
    assert_eq!(page(-1).await.unwrap_err().code(), Code::InvalidArgument);
    f.stop().await;
}
