//! Conversions between the wire (protobuf types of `tessera_proto`) and the domain
//! (`tessera_identity`, `tessera_actors`). Inbound conversions parse: they either give a valid
//! domain value or a [`ConvertError`] naming the field and the rule; outbound ones are total.

mod agent;
mod bundle;
mod csr;
mod entry;
mod error;
mod eventlog;
mod federation;
mod filter;
mod ids;

pub use self::agent::{agent_to_proto, AgentFilter};
pub use self::bundle::{bundle_from_proto, bundle_to_proto, merge_bundle, FULL_BUNDLE_MASK};
pub use self::csr::{csr_names, CsrNames};
pub use self::entry::{apply_entry_fields, entry_to_proto, new_entry_from_proto, FULL_MASK};
pub use self::error::{shown as shown_value, ConvertError};
pub use self::eventlog::{record_to_proto, timestamp};
pub use self::federation::{
    apply_relationship_fields, relationship_from_proto, relationship_to_proto,
    relationship_trust_domain, FULL_RELATIONSHIP_MASK,
};
pub use self::filter::{entry_filter, match_behavior, set_matches};
pub use self::ids::{
    entry_id, selector_from_proto, selector_to_proto, spiffe_id, spiffe_id_to_proto, trust_domain,
};
