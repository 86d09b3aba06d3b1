//! `apply` for the authority: folds committed events into the slots, and keeps the bundle and
//! its sequence number in step. Total: an event that does not fit the state (which `decide`
//! would not have emitted) changes nothing rather than panic.

use tessera_identity::{Bundle, JwtAuthority, PublicKey, X509Authority};

use super::x509::{subject_key_id, upstream_authority_id};
use super::{Authority, CaSlot, JwtSlot, SlotStatus};
use crate::server::events::{CaRecord, JwtKeyRecord, ServerEvent};

/// What the bundle holds, independent of the trust domain: compared before and after an
/// event to decide whether the sequence number moves.
#[derive(PartialEq, Eq)]
struct Content {
    x509: Vec<Vec<u8>>,
    jwt: Vec<(String, Vec<u8>, i64)>,
    /// Certificates of tainted self-signed CAs (each one of `x509`).
    tainted_x509: Vec<Vec<u8>>,
    /// Kids of tainted JWT keys.
    tainted_jwt: Vec<String>,
}

impl Authority {
    pub(super) fn apply_event(&mut self, event: &ServerEvent) {
        let before = self.content();
        match event {
            ServerEvent::CaPrepared(record) => self.prepare_ca(record, None),
            ServerEvent::ServerCaPrepared { server_id, record } => {
                self.prepare_ca(record, Some(server_id));
            }
            ServerEvent::CaActivated { authority_id }
            | ServerEvent::ServerCaActivated { authority_id, .. } => {
                if let Some(group) = self.ca(authority_id).map(|s| s.server.clone()) {
                    for slot in &mut self.cas {
                        slot.status = next_status(
                            slot.status,
                            slot.record.authority_id == *authority_id,
                            same_group(&slot.server, &group),
                        );
                    }
                }
            }
            ServerEvent::CaRetired { authority_id }
            | ServerEvent::ServerCaRetired { authority_id, .. } => {
                self.cas.retain(|s| s.record.authority_id != *authority_id);
            }
            ServerEvent::JwtKeyPrepared(record) => self.prepare_jwt(record, None),
            ServerEvent::ServerJwtKeyPrepared { server_id, record } => {
                self.prepare_jwt(record, Some(server_id));
            }
            ServerEvent::JwtKeyActivated { kid }
            | ServerEvent::ServerJwtKeyActivated { kid, .. } => {
                if let Some(group) = self.jwt_key(kid).map(|s| s.server.clone()) {
                    for slot in &mut self.jwt_keys {
                        slot.status = next_status(
                            slot.status,
                            slot.record.kid == *kid,
                            same_group(&slot.server, &group),
                        );
                    }
                }
            }
            ServerEvent::JwtKeyRetired { kid } | ServerEvent::ServerJwtKeyRetired { kid, .. } => {
                self.jwt_keys.retain(|s| s.record.kid != *kid);
            }
            ServerEvent::X509AuthorityTainted { authority_id, .. } => {
                for slot in &mut self.cas {
                    if slot.record.authority_id == *authority_id {
                        slot.tainted = true;
                    }
                }
            }
            ServerEvent::X509AuthorityRevoked { authority_id, .. } => {
                self.cas.retain(|s| s.record.authority_id != *authority_id);
            }
            ServerEvent::JwtAuthorityTainted { kid, .. } => {
                for slot in &mut self.jwt_keys {
                    if slot.record.kid == *kid {
                        slot.tainted = true;
                    }
                }
            }
            ServerEvent::JwtAuthorityRevoked { kid, .. } => {
                self.jwt_keys.retain(|s| s.record.kid != *kid);
            }
            _ => return,
        }
        if self.content() != before {
            self.bundle_sequence += 1;
        }
        self.rebuild_bundle();
    }

    fn prepare_ca(&mut self, record: &CaRecord, server: Option<&String>) {
        if self.ca(&record.authority_id).is_none() {
            self.cas.push(CaSlot {
                record: record.clone(),
                status: SlotStatus::Prepared,
                server: server.cloned(),
                tainted: false,
            });
        }
    }

    fn prepare_jwt(&mut self, record: &JwtKeyRecord, server: Option<&String>) {
        if self.jwt_key(&record.kid).is_none() {
            self.jwt_keys.push(JwtSlot {
                record: record.clone(),
                status: SlotStatus::Prepared,
                server: server.cloned(),
                tainted: false,
            });
        }
    }

    fn content(&self) -> Content {
        let mut x509: Vec<Vec<u8>> = Vec::new();
        for der in self.cas.iter().flat_map(|s| &s.record.trust_anchors) {
            if !x509.contains(der) {
                x509.push(der.clone());
            }
        }
        let jwt = self
            .jwt_keys
            .iter()
            .map(|s| {
                (
                    s.record.kid.clone(),
                    s.record.public_key_der.clone(),
                    s.record.not_after,
                )
            })
            .collect();
        // A self-signed CA marks its own certificate; a CA an upstream root signed marks that
        // root (decide taints such CAs only through their upstream, all of them at once).
        let mut tainted_x509: Vec<Vec<u8>> = Vec::new();
        for slot in self.cas.iter().filter(|s| s.tainted) {
            let marked = match upstream_authority_id(&slot.record) {
                None => Some(slot.record.cert_der.clone()),
                Some(upstream) => slot
                    .record
                    .trust_anchors
                    .iter()
                    .find(|a| subject_key_id(a).as_deref() == Some(upstream.as_str()))
                    .cloned(),
            };
            if let Some(der) = marked.filter(|d| !tainted_x509.contains(d)) {
                tainted_x509.push(der);
            }
        }
        let tainted_jwt = self
            .jwt_keys
            .iter()
            .filter(|s| s.tainted)
            .map(|s| s.record.kid.clone())
            .collect();
        Content {
            x509,
            jwt,
            tainted_x509,
            tainted_jwt,
        }
    }

    /// Rebuilds the bundle from the slots (when the trust domain is known). Records that do
    /// not convert were refused by `decide`; should one come from elsewhere, it is left out
    /// of the bundle and reported rather than poisoning it.
    pub(super) fn rebuild_bundle(&mut self) {
        let Some(td) = self.trust_domain.clone() else {
            return;
        };
        let content = self.content();
        let mut bundle = Bundle::new(td);
        bundle.set_sequence_number(self.bundle_sequence);
        for der in content.x509.iter().cloned() {
            match X509Authority::from_der(der) {
                Ok(a) => {
                    bundle.add_x509_authority(a);
                }
                Err(e) => {
                    tracing::error!(error = %e, "authority: trust anchor left out of the bundle")
                }
            }
        }
        for (kid, spki, not_after) in content.jwt.iter().cloned() {
            let added = PublicKey::from_spki_der(&spki)
                .map_err(|e| e.to_string())
                .and_then(|public_key| {
                    bundle
                        .add_jwt_authority(JwtAuthority {
                            key_id: kid.clone(),
                            public_key,
                            expires_at: Some(not_after),
                        })
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = added {
                tracing::error!(kid = %kid, error = %e, "authority: JWT key left out of the bundle");
            }
        }
        for der in &content.tainted_x509 {
            bundle.taint_x509_authority(der);
        }
        for kid in &content.tainted_jwt {
            bundle.taint_jwt_authority(kid);
        }
        self.bundle = Some(bundle);
    }
}

/// The status of a slot when `target` (is_target) is activated: the target becomes active,
/// the previously active one of the same server old, the rest unchanged.
fn next_status(status: SlotStatus, is_target: bool, same_group: bool) -> SlotStatus {
    match (is_target, status) {
        (true, _) => SlotStatus::Active,
        (false, SlotStatus::Active) if same_group => SlotStatus::Old,
        (false, other) => other,
    }
}

/// Whether a slot of `server` is superseded when a slot of `target` (the activated one's
/// server) becomes active: slots of the same server, and untagged slots (from before several
/// servers), which any server's activation supersedes, so that a single server upgraded in
/// place, or the first server on a copied log, does not keep two active CAs.
fn same_group(server: &Option<String>, target: &Option<String>) -> bool {
    server.is_none() || server == target
}
