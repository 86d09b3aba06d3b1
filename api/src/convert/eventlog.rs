//! Log records → `tessera.eventlog.v1.Record`, with the payload rendered as JSON.

use tessera_actors::server::events::ServerEvent;
use tessera_eventlog::Record;
use tessera_proto::tessera::eventlog::v1 as pb;

/// A committed record for the wire. `payload_json` is the decoded [`ServerEvent`] as JSON, or
/// empty if this build cannot decode the record (it is not covered by the hash anyway).
pub fn record_to_proto(r: &Record) -> pb::Record {
    let payload_json = tessera_eventlog::typed::decode::<ServerEvent>(r)
        .ok()
        .and_then(|e| serde_json::to_string(&e).ok())
        .unwrap_or_default();
    pb::Record {
        seq: r.seq,
        recorded_at: Some(timestamp(r.recorded_at)),
        kind: r.kind.clone(),
        schema_version: r.schema_version,
        payload: r.payload.clone(),
        payload_json,
        prev_hash: r.prev_hash.0.to_vec(),
        hash: r.hash.0.to_vec(),
    }
}

/// Nanoseconds since the epoch as a protobuf timestamp.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        // Below 1e9, fits.
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use tessera_eventlog::typed::encode;
    use tessera_eventlog::Digest32;
    use tessera_identity::EntryId;

    use super::*;

    #[test]
    fn payload_is_rendered_as_json() {
        let event = ServerEvent::EntryDeleted {
            id: EntryId::new("e1").unwrap(),
        };
        let r = Record::seal(encode(&event).unwrap(), 1, 1_500_000_000, Digest32::GENESIS);
        let p = record_to_proto(&r);
        assert_eq!(p.kind, "EntryDeleted");
        assert_eq!(
            p.recorded_at,
            Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let json: serde_json::Value = serde_json::from_str(&p.payload_json).unwrap();
        assert_eq!(json["EntryDeleted"]["id"], "e1");
        assert_eq!(p.hash, r.hash.0.to_vec());

        let mut garbage = r.clone();
        garbage.payload = vec![0xff; 3];
        assert_eq!(record_to_proto(&garbage).payload_json, "");
    }
}
