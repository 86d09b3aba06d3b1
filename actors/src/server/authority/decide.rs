//! `decide` for the authority: checks a command against the slots and says which event it
//! means. Pure.

use tessera_identity::{PublicKey, X509Authority, MAX_KEY_ID_LEN};
use x509_parser::parse_x509_certificate;

use super::x509::{subject_key_id as subject_key_id_of, upstream_authority_id};
use super::{Authority, AuthorityCommand, AuthorityError, AuthorityReply, SlotStatus, CA, JWT_KEY};
use crate::server::aggregate::Decision;
use crate::server::events::{CaRecord, JwtKeyRecord, ServerEvent};

/// What an upstream root is called in messages.
const UPSTREAM: &str = "upstream authority";

/// Longest authority ID or key reference accepted, in bytes.
const MAX_ID_LEN: usize = 256;

impl Authority {
    pub(super) fn decide_command(
        &self,
        command: AuthorityCommand,
    ) -> Result<Decision<AuthorityReply>, AuthorityError> {
        match command {
            AuthorityCommand::RecordPreparedCa(record) => self.decide_prepare_ca(record),
            AuthorityCommand::ActivateCa { authority_id } => {
                let status = self.ca(&authority_id).map(|s| s.status);
                let server = self.emitter();
                activate(CA, authority_id, status, |authority_id| match server {
                    Some(server_id) => ServerEvent::ServerCaActivated {
                        server_id,
                        authority_id,
                    },
                    None => ServerEvent::CaActivated { authority_id },
                })
            }
            AuthorityCommand::RetireCa { authority_id } => {
                let slot = self.ca(&authority_id);
                let status = slot.map(|s| self.retirable_status(s.status, s.server.as_deref()));
                let server = self.emitter();
                retire(CA, authority_id, status, |authority_id| match server {
                    Some(server_id) => ServerEvent::ServerCaRetired {
                        server_id,
                        authority_id,
                    },
                    None => ServerEvent::CaRetired { authority_id },
                })
            }
            AuthorityCommand::RecordPreparedJwtKey(record) => self.decide_prepare_jwt(record),
            AuthorityCommand::ActivateJwtKey { kid } => {
                let status = self.jwt_key(&kid).map(|s| s.status);
                let server = self.emitter();
                activate(JWT_KEY, kid, status, |kid| match server {
                    Some(server_id) => ServerEvent::ServerJwtKeyActivated { server_id, kid },
                    None => ServerEvent::JwtKeyActivated { kid },
                })
            }
            AuthorityCommand::RetireJwtKey { kid } => {
                let slot = self.jwt_key(&kid);
                let status = slot.map(|s| self.retirable_status(s.status, s.server.as_deref()));
                let server = self.emitter();
                retire(JWT_KEY, kid, status, |kid| match server {
                    Some(server_id) => ServerEvent::ServerJwtKeyRetired { server_id, kid },
                    None => ServerEvent::JwtKeyRetired { kid },
                })
            }
            AuthorityCommand::TaintCa { authority_id } => {
                let slot = self.own_slot_of(CA, &authority_id, self.ca(&authority_id), |s| {
                    (s.status, s.tainted, s.server.as_deref())
                })?;
                self.check_local_ca(&authority_id)?;
                let server_id = self.emitter();
                taint(CA, authority_id, slot, |authority_id| {
                    ServerEvent::X509AuthorityTainted {
                        server_id,
                        authority_id,
                    }
                })
            }
            AuthorityCommand::RevokeCa { authority_id } => {
                let slot = self.own_slot_of(CA, &authority_id, self.ca(&authority_id), |s| {
                    (s.status, s.tainted, s.server.as_deref())
                })?;
                self.check_local_ca(&authority_id)?;
                let server_id = self.emitter();
                revoke(CA, authority_id, slot, |authority_id| {
                    ServerEvent::X509AuthorityRevoked {
                        server_id,
                        authority_id,
                    }
                })
            }
            AuthorityCommand::TaintUpstream { subject_key_id } => {
                self.decide_upstream(subject_key_id, true)
            }
            AuthorityCommand::RevokeUpstream { subject_key_id } => {
                self.decide_upstream(subject_key_id, false)
            }
            AuthorityCommand::TaintJwtKey { kid } => {
                let slot = self.own_slot_of(JWT_KEY, &kid, self.jwt_key(&kid), |s| {
                    (s.status, s.tainted, s.server.as_deref())
                })?;
                let server_id = self.emitter();
                taint(JWT_KEY, kid, slot, |kid| ServerEvent::JwtAuthorityTainted {
                    server_id,
                    kid,
                })
            }
            AuthorityCommand::RevokeJwtKey { kid } => {
                let slot = self.own_slot_of(JWT_KEY, &kid, self.jwt_key(&kid), |s| {
                    (s.status, s.tainted, s.server.as_deref())
                })?;
                let server_id = self.emitter();
                revoke(JWT_KEY, kid, slot, |kid| ServerEvent::JwtAuthorityRevoked {
                    server_id,
                    kid,
                })
            }
        }
    }

    /// A slot's status and taint, for tainting and revoking: it must exist and be this
    /// server's own (each server manages its own authorities, as SPIRE's are local).
    fn own_slot_of<S>(
        &self,
        kind: &'static str,
        id: &str,
        slot: Option<&S>,
        view: impl Fn(&S) -> (SlotStatus, bool, Option<&str>),
    ) -> Result<(SlotStatus, bool), AuthorityError> {
        let Some((status, tainted, server)) = slot.map(view) else {
            return Err(AuthorityError::Unknown {
                kind,
                id: shown(id),
            });
        };
        if !self.owns(server) {
            return Err(AuthorityError::NotOwn {
                kind,
                id: shown(id),
                server: server.unwrap_or("-").to_owned(),
            });
        }
        Ok((status, tainted))
    }

    /// Taints (or revokes) every old CA of this server that the upstream root
    /// `subject_key_id` signed: one `X509AuthorityTainted` (`X509AuthorityRevoked`) each.
    fn decide_upstream(
        &self,
        subject_key_id: String,
        taint: bool,
    ) -> Result<Decision<AuthorityReply>, AuthorityError> {
        let id = shown(&subject_key_id.to_ascii_lowercase());
        let by_root: Vec<&super::CaSlot> = self
            .cas()
            .iter()
            .filter(|s| upstream_authority_id(&s.record).as_deref() == Some(id.as_str()))
            .collect();
        let signed: Vec<&super::CaSlot> = by_root
            .iter()
            .copied()
            .filter(|s| self.owns(s.server.as_deref()))
            .collect();
        if signed.is_empty() {
            return Err(AuthorityError::UnknownUpstream { id });
        }
        // Every server's CAs count here, not only this one's: the bundle marks the root for
        // all, so tainting it while another server still signs under it would make agents
        // re-sign that server's fresh SVIDs forever.
        if let Some(live) = by_root.iter().find(|s| s.status != SlotStatus::Old) {
            return Err(AuthorityError::UpstreamInUse {
                id,
                status: live.status.name(),
                ca: live.record.authority_id.clone(),
            });
        }
        let is_root = signed.iter().any(|s| {
            s.record
                .trust_anchors
                .iter()
                .any(|a| subject_key_id_of(a).as_deref() == Some(id.as_str()))
        });
        if !is_root {
            return Err(AuthorityError::UpstreamNotRoot { id });
        }
        let server_id = self.emitter();
        let events: Vec<ServerEvent> = if taint {
            if signed.iter().all(|s| s.tainted) {
                return Err(AuthorityError::AlreadyTainted { kind: UPSTREAM, id });
            }
            signed
                .iter()
                .filter(|s| !s.tainted)
                .map(|s| ServerEvent::X509AuthorityTainted {
                    server_id: server_id.clone(),
                    authority_id: s.record.authority_id.clone(),
                })
                .collect()
        } else {
            if signed.iter().any(|s| !s.tainted) {
                return Err(AuthorityError::NotTainted { kind: UPSTREAM, id });
            }
            signed
                .iter()
                .map(|s| ServerEvent::X509AuthorityRevoked {
                    server_id: server_id.clone(),
                    authority_id: s.record.authority_id.clone(),
                })
                .collect()
        };
        Ok(Decision {
            events,
            reply: AuthorityReply::Recorded,
        })
    }

    /// A CA that an upstream authority signed cannot be tainted or revoked on its own.
    fn check_local_ca(&self, authority_id: &str) -> Result<(), AuthorityError> {
        match self.ca(authority_id).map(|s| &s.record) {
            Some(record) if !is_self_signed(record) => Err(AuthorityError::UpstreamSigned {
                id: shown(authority_id),
                upstream: upstream_authority_id(record).unwrap_or_default(),
            }),
            _ => Ok(()),
        }
    }

    /// The server new events name: the owner's, once one is set.
    fn emitter(&self) -> Option<String> {
        self.owner().map(|o| o.server_id.clone())
    }

    /// A slot's status as far as retiring goes: another server's active CA or key is not
    /// this server's to protect (the caller retires it only once it has expired).
    fn retirable_status(&self, status: SlotStatus, server: Option<&str>) -> SlotStatus {
        match status {
            SlotStatus::Active if !self.owns(server) => SlotStatus::Old,
            other => other,
        }
    }

    fn decide_prepare_ca(
        &self,
        record: CaRecord,
    ) -> Result<Decision<AuthorityReply>, AuthorityError> {
        let id = record.authority_id.clone();
        let invalid = |reason: String| AuthorityError::InvalidRecord {
            kind: CA,
            id: shown(&id),
            reason,
        };
        check_id(&id).map_err(|r| invalid(format!("its authority ID {r}")))?;
        check_id(&record.key_ref).map_err(|r| invalid(format!("its key reference {r}")))?;
        check_validity(record.not_before, record.not_after).map_err(invalid)?;
        check_ca_cert(&record.cert_der).map_err(|r| invalid(format!("its certificate {r}")))?;
        for (i, der) in record.upstream_chain.iter().enumerate() {
            check_ca_cert(der)
                .map_err(|r| invalid(format!("upstream chain certificate {i} {r}")))?;
        }
        if record.trust_anchors.is_empty() {
            return Err(invalid("it has no trust anchor".into()));
        }
        for (i, der) in record.trust_anchors.iter().enumerate() {
            X509Authority::from_der(der.clone())
                .map_err(|e| invalid(format!("trust anchor {i}: {e}")))?;
        }
        if self.ca(&id).is_some() {
            return Err(AuthorityError::Duplicate { kind: CA, id });
        }
        if let Some(prepared) = self.prepared_ca() {
            return Err(AuthorityError::AlreadyPrepared {
                kind: CA,
                prepared: prepared.authority_id.clone(),
                id,
            });
        }
        let event = match self.emitter() {
            Some(server_id) => ServerEvent::ServerCaPrepared { server_id, record },
            None => ServerEvent::CaPrepared(record),
        };
        Ok(Decision {
            events: vec![event],
            reply: AuthorityReply::Recorded,
        })
    }

    fn decide_prepare_jwt(
        &self,
        record: JwtKeyRecord,
    ) -> Result<Decision<AuthorityReply>, AuthorityError> {
        let kid = record.kid.clone();
        let invalid = |reason: String| AuthorityError::InvalidRecord {
            kind: JWT_KEY,
            id: shown(&kid),
            reason,
        };
        if kid.is_empty() || kid.len() > MAX_KEY_ID_LEN || kid.chars().any(char::is_control) {
            return Err(invalid(format!(
                "its kid must be 1 to {MAX_KEY_ID_LEN} bytes without control characters"
            )));
        }
        check_id(&record.key_ref).map_err(|r| invalid(format!("its key reference {r}")))?;
        check_validity(record.not_before, record.not_after).map_err(invalid)?;
        PublicKey::from_spki_der(&record.public_key_der)
            .map_err(|e| invalid(format!("its public key: {e}")))?;
        if self.jwt_key(&kid).is_some() {
            return Err(AuthorityError::Duplicate {
                kind: JWT_KEY,
                id: kid,
            });
        }
        if let Some(prepared) = self.prepared_jwt_key() {
            return Err(AuthorityError::AlreadyPrepared {
                kind: JWT_KEY,
                prepared: prepared.kid.clone(),
                id: kid,
            });
        }
        let event = match self.emitter() {
            Some(server_id) => ServerEvent::ServerJwtKeyPrepared { server_id, record },
            None => ServerEvent::JwtKeyPrepared(record),
        };
        Ok(Decision {
            events: vec![event],
            reply: AuthorityReply::Recorded,
        })
    }
}

fn activate(
    kind: &'static str,
    id: String,
    status: Option<SlotStatus>,
    event: impl FnOnce(String) -> ServerEvent,
) -> Result<Decision<AuthorityReply>, AuthorityError> {
    match status {
        None => Err(AuthorityError::Unknown { kind, id }),
        Some(SlotStatus::Active) => Ok(Decision::no_change(AuthorityReply::Unchanged)),
        Some(SlotStatus::Old) => Err(AuthorityError::NotPrepared {
            kind,
            id,
            status: SlotStatus::Old.name(),
        }),
        Some(SlotStatus::Prepared) => Ok(Decision {
            events: vec![event(id)],
            reply: AuthorityReply::Recorded,
        }),
    }
}

fn retire(
    kind: &'static str,
    id: String,
    status: Option<SlotStatus>,
    event: impl FnOnce(String) -> ServerEvent,
) -> Result<Decision<AuthorityReply>, AuthorityError> {
    match status {
        None => Err(AuthorityError::Unknown { kind, id }),
        Some(SlotStatus::Active) => Err(AuthorityError::RetireActive { kind, id }),
        Some(SlotStatus::Prepared | SlotStatus::Old) => Ok(Decision {
            events: vec![event(id)],
            reply: AuthorityReply::Recorded,
        }),
    }
}

fn taint(
    kind: &'static str,
    id: String,
    (status, tainted): (SlotStatus, bool),
    event: impl FnOnce(String) -> ServerEvent,
) -> Result<Decision<AuthorityReply>, AuthorityError> {
    match status {
        SlotStatus::Active | SlotStatus::Prepared => Err(AuthorityError::TaintNotOld {
            kind,
            id,
            status: status.name(),
        }),
        SlotStatus::Old if tainted => Err(AuthorityError::AlreadyTainted { kind, id }),
        SlotStatus::Old => Ok(Decision {
            events: vec![event(id)],
            reply: AuthorityReply::Recorded,
        }),
    }
}

fn revoke(
    kind: &'static str,
    id: String,
    (status, tainted): (SlotStatus, bool),
    event: impl FnOnce(String) -> ServerEvent,
) -> Result<Decision<AuthorityReply>, AuthorityError> {
    // Only an old one can be tainted, so a tainted one is old.
    if !tainted || status != SlotStatus::Old {
        return Err(AuthorityError::NotTainted { kind, id });
    }
    Ok(Decision {
        events: vec![event(id)],
        reply: AuthorityReply::Recorded,
    })
}

/// Whether a CA is its own trust anchor (no upstream authority signed it).
pub(super) fn is_self_signed(record: &CaRecord) -> bool {
    upstream_authority_id(record).is_none()
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if id.len() > MAX_ID_LEN {
        return Err(format!("is longer than {MAX_ID_LEN} bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err("has control characters".into());
    }
    Ok(())
}

fn check_validity(not_before: i64, not_after: i64) -> Result<(), String> {
    if not_before >= not_after {
        return Err(format!(
            "its validity is empty (not_before {not_before} is not before not_after {not_after})"
        ));
    }
    Ok(())
}

/// A CA certificate: one well-formed certificate with basicConstraints CA:true.
fn check_ca_cert(der: &[u8]) -> Result<(), String> {
    match parse_x509_certificate(der) {
        Ok(([], cert)) => match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => Ok(()),
            Ok(_) => Err("is not a CA certificate (basicConstraints CA:true missing)".into()),
            Err(e) => Err(format!("has bad basicConstraints: {e}")),
        },
        Ok((rest, _)) => Err(format!("has {} bytes of trailing data", rest.len())),
        Err(e) => Err(format!("does not parse: {e}")),
    }
}

/// At most 64 characters of an ID, for messages.
fn shown(id: &str) -> String {
    id.chars().take(64).collect()
}
