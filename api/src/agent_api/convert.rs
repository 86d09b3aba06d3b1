//! Domain → wire for the agent API's own messages.

use tessera_actors::server::authority::{IssuedX509Svid, JwtSvid};
use tessera_identity::Bundle;
use tessera_proto::spire::api::types;

/// A bundle as `spire.api.types.Bundle`.
pub fn bundle(b: &Bundle) -> types::Bundle {
    types::Bundle {
        trust_domain: b.trust_domain().to_string(),
        x509_authorities: b
            .x509_authorities()
            .iter()
            .map(|a| types::X509Certificate {
                asn1: a.der().to_vec(),
                tainted: b.is_x509_authority_tainted(a.der()),
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities()
            .iter()
            .map(|k| types::JwtKey {
                public_key: k.public_key.to_spki_der(),
                key_id: k.key_id.clone(),
                expires_at: k.expires_at.unwrap_or(0),
                tainted: b.is_jwt_authority_tainted(&k.key_id),
            })
            .collect(),
        refresh_hint: b.refresh_hint().map(|h| h as i64).unwrap_or(0),
        sequence_number: b.sequence_number(),
        wit_authorities: vec![],
    }
}

/// An issued X.509-SVID as `spire.api.types.X509SVID`.
pub fn x509_svid(s: &IssuedX509Svid, hint: &str) -> types::X509svid {
    types::X509svid {
        cert_chain: s.cert_chain.clone(),
        id: Some(crate::convert::spiffe_id_to_proto(&s.spiffe_id)),
        expires_at: s.not_after,
        hint: hint.to_owned(),
    }
}

/// A JWT-SVID as `spire.api.types.JWTSVID`.
pub fn jwt_svid(s: &JwtSvid, hint: &str) -> types::Jwtsvid {
    types::Jwtsvid {
        token: s.token.clone(),
        id: Some(crate::convert::spiffe_id_to_proto(&s.spiffe_id)),
        expires_at: s.expires_at,
        issued_at: s.issued_at,
        hint: hint.to_owned(),
    }
}

/// A per-item status.
pub fn status(code: tonic::Code, message: impl Into<String>) -> types::Status {
    types::Status {
        code: code as i32,
        message: message.into(),
    }
}
