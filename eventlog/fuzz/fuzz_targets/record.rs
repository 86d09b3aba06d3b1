//! Fuzzes what the log reads back from storage: the record envelope (sled values, PostgreSQL
//! rows and export files all hold `Record::encode` bytes), the snapshot header, the export
//! file, the chain check over what an export decodes to, and the payload/snapshot codec
//! (bincode) on a representative event type, from a slice and from a stream.
//!
//! Properties: nothing panics or allocates without bound; what decodes re-encodes to exactly
//! the input (the layouts are canonical); the chain check agrees with each record's hash.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use tessera_eventlog::export::{read_export, write_export};
use tessera_eventlog::record::{Record, MAX_KIND_LEN};
use tessera_eventlog::typed::{decode_payload, decode_state, decode_state_stream};
use tessera_eventlog::{verify_records, Snapshot, SnapshotStream};

/// Shaped like the server's events: strings, byte strings, lists, maps, options, variants
/// (not recursive: no stored event type is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Event {
    Created {
        id: String,
        selectors: Vec<String>,
        ttl: Option<u32>,
        at: i64,
    },
    Keyed {
        der: Vec<u8>,
        tags: BTreeMap<String, u64>,
    },
    Batch(Vec<(String, Option<Vec<u8>>)>),
    Unit,
}

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(record.encode(), data, "the record layout is canonical");
        assert!(!record.kind.is_empty() && record.kind.len() <= MAX_KIND_LEN);
        assert_eq!(record.is_intact(), record.expected_hash() == record.hash);
    }

    if let Ok(snapshot) = Snapshot::decode(data) {
        assert_eq!(snapshot.encode(), data, "the snapshot layout is canonical");
        let (header, rest) = data.split_at(Snapshot::HEADER_LEN);
        assert_eq!(
            Snapshot::from_header(header, rest.to_vec()).ok(),
            Some(snapshot)
        );
    }

    match read_export(&mut &data[..]) {
        Ok(records) => {
            let mut again = Vec::new();
            write_export(&mut again, &records).unwrap();
            assert_eq!(again, data, "the export layout is canonical");
            let report = verify_records(&records);
            assert!(report.records_checked as usize <= records.len());
            // A chain that verifies whole is made of intact records, seq 1, 2, ...
            if report.fault.is_none() {
                for (i, r) in records.iter().enumerate() {
                    assert!(r.is_intact());
                    assert_eq!(r.seq, i as u64 + 1);
                }
            }
        }
        Err(_) => {}
    }

    // The payload codec, as a record's payload and as a snapshot's data.
    let from_slice = decode_payload::<Event>(1, "Fuzz", 1, data);
    assert_eq!(
        decode_state::<Event>(1, data).ok(),
        from_slice.as_ref().ok().cloned()
    );
    let stream = SnapshotStream::from(Snapshot {
        seq: 1,
        hash: Default::default(),
        data: data.to_vec(),
    });
    let from_stream = decode_state_stream::<Event>(stream);
    assert_eq!(
        from_stream.ok(),
        from_slice.ok(),
        "stream and slice decoders agree"
    );
});
