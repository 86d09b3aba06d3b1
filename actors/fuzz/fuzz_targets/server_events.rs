//! Fuzzes the decoding of the server's stored events: a payload read back from the log
//! (sled, PostgreSQL or an export) decoded as a `ServerEvent`, with every SPIFFE value in it
//! (IDs, selectors, entries, bundles) checked on the way in. No input may panic; an event that
//! decodes encodes (as its own kind, at the current schema version) and decodes back to
//! itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_actors::server::events::ServerEvent;
use tessera_eventlog::typed::{decode, decode_payload, encode, Event};
use tessera_eventlog::{Digest32, Record};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = decode_payload::<ServerEvent>(1, "Fuzz", ServerEvent::SCHEMA_VERSION, data)
    else {
        return;
    };
    let new = encode(&event).expect("a decoded event encodes");
    assert_eq!(new.kind, event.kind());
    assert_eq!(new.schema_version, ServerEvent::SCHEMA_VERSION);
    let record = Record::seal(new, 1, 0, Digest32::GENESIS);
    assert_eq!(
        decode::<ServerEvent>(&record).ok().as_ref(),
        Some(&event),
        "round trip"
    );
});
