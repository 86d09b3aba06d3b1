//! How responses look: SPIRE's CLI layout for people, and JSON with the proto field names for
//! scripts.

use std::io::Write;

use serde_json::{json, Value};
use tessera_proto::spire::api::types;
use tessera_proto::tessera::eventlog::v1 as pb;

use super::common::line;
use crate::timefmt::format_unix;

/// A SPIFFE ID from its halves.
pub fn id_string(id: Option<&types::Spiffeid>) -> String {
    id.map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
        .unwrap_or_default()
}

fn id_json(id: Option<&types::Spiffeid>) -> Value {
    match id {
        Some(i) => json!({ "trust_domain": i.trust_domain, "path": i.path }),
        None => Value::Null,
    }
}

fn selectors_json(s: &[types::Selector]) -> Value {
    s.iter()
        .map(|s| json!({ "type": s.r#type, "value": s.value }))
        .collect()
}

/// An entry as JSON.
pub fn entry_json(e: &types::Entry) -> Value {
    json!({
        "id": e.id,
        "spiffe_id": id_json(e.spiffe_id.as_ref()),
        "parent_id": id_json(e.parent_id.as_ref()),
        "selectors": selectors_json(&e.selectors),
        "x509_svid_ttl": e.x509_svid_ttl,
        "jwt_svid_ttl": e.jwt_svid_ttl,
        "federates_with": e.federates_with,
        "admin": e.admin,
        "downstream": e.downstream,
        "expires_at": e.expires_at,
        "dns_names": e.dns_names,
        "revision_number": e.revision_number,
        "store_svid": e.store_svid,
        "hint": e.hint,
        "created_at": e.created_at,
    })
}

fn ttl_text(ttl: i32) -> String {
    if ttl == 0 {
        "default".into()
    } else {
        ttl.to_string()
    }
}

/// An entry, SPIRE's layout.
pub fn entry_pretty(out: &mut dyn Write, e: &types::Entry) {
    line(out, format!("Entry ID         : {}", e.id));
    line(
        out,
        format!("SPIFFE ID        : {}", id_string(e.spiffe_id.as_ref())),
    );
    line(
        out,
        format!("Parent ID        : {}", id_string(e.parent_id.as_ref())),
    );
    line(out, format!("Revision         : {}", e.revision_number));
    if e.downstream {
        line(out, "Downstream       : true");
    }
    line(
        out,
        format!("X509-SVID TTL    : {}", ttl_text(e.x509_svid_ttl)),
    );
    line(
        out,
        format!("JWT-SVID TTL     : {}", ttl_text(e.jwt_svid_ttl)),
    );
    if e.expires_at == 0 {
        line(out, "Expiration time  : never");
    } else {
        line(
            out,
            format!("Expiration time  : {}", format_unix(e.expires_at)),
        );
    }
    for s in &e.selectors {
        line(out, format!("Selector         : {}:{}", s.r#type, s.value));
    }
    for td in &e.federates_with {
        line(out, format!("FederatesWith    : {td}"));
    }
    for dns in &e.dns_names {
        line(out, format!("DNS name         : {dns}"));
    }
    if e.admin {
        line(out, "Admin            : true");
    }
    if !e.hint.is_empty() {
        line(out, format!("Hint             : {}", e.hint));
    }
    line(out, "");
}

/// An agent as JSON.
pub fn agent_json(a: &types::Agent) -> Value {
    json!({
        "id": id_json(a.id.as_ref()),
        "attestation_type": a.attestation_type,
        "x509svid_serial_number": a.x509svid_serial_number,
        "x509svid_expires_at": a.x509svid_expires_at,
        "selectors": selectors_json(&a.selectors),
        "banned": a.banned,
        "can_reattest": a.can_reattest,
        "agent_version": a.agent_version,
    })
}

/// An agent, SPIRE's layout.
pub fn agent_pretty(out: &mut dyn Write, a: &types::Agent, with_selectors: bool) {
    line(
        out,
        format!("SPIFFE ID         : {}", id_string(a.id.as_ref())),
    );
    line(out, format!("Attestation type  : {}", a.attestation_type));
    line(
        out,
        format!("Expiration time   : {}", format_unix(a.x509svid_expires_at)),
    );
    line(
        out,
        format!("Serial number     : {}", a.x509svid_serial_number),
    );
    line(out, format!("Can re-attest     : {}", a.can_reattest));
    line(out, format!("Banned            : {}", a.banned));
    if with_selectors {
        for s in &a.selectors {
            line(out, format!("Selectors         : {}:{}", s.r#type, s.value));
        }
    }
    line(out, "");
}

/// A log record as JSON (the payload parsed, hashes in hex).
pub fn record_json(r: &pb::Record) -> Value {
    let payload = serde_json::from_str::<Value>(&r.payload_json).unwrap_or(Value::Null);
    json!({
        "seq": r.seq,
        "recorded_at": r.recorded_at.as_ref().map(|t| format_unix(t.seconds)),
        "kind": r.kind,
        "schema_version": r.schema_version,
        "payload": payload,
        "prev_hash": hex::encode(&r.prev_hash),
        "hash": hex::encode(&r.hash),
    })
}

/// A log record on one line.
pub fn record_pretty(out: &mut dyn Write, r: &pb::Record) {
    let at = r
        .recorded_at
        .as_ref()
        .map(|t| format_unix(t.seconds))
        .unwrap_or_default();
    let payload = if r.payload_json.is_empty() {
        "(undecodable payload)"
    } else {
        &r.payload_json
    };
    line(
        out,
        format!("{:>8}  {at}  {:<18}  {payload}", r.seq, r.kind),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_like_spire() {
        let e = types::Entry {
            id: "e1".into(),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/web".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:0".into(),
            }],
            ..types::Entry::default()
        };
        let mut out = Vec::new();
        entry_pretty(&mut out, &e);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Entry ID         : e1\n"), "{text}");
        assert!(
            text.contains("SPIFFE ID        : spiffe://example.org/web\n"),
            "{text}"
        );
        assert!(text.contains("X509-SVID TTL    : default\n"), "{text}");
        assert!(text.contains("Selector         : unix:uid:0\n"), "{text}");
        let j = entry_json(&e);
        assert_eq!(j["spiffe_id"]["path"], "/web");
        assert_eq!(j["selectors"][0]["value"], "uid:0");
    }
}
