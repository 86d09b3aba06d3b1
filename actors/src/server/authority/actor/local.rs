//! Manual rotation (SPIRE's LocalAuthority API): prepare now, activate a named prepared
//! authority, taint an old one, revoke a tainted one; and this server's own authorities for
//! `Get*AuthorityState`.
//!
//! The steps reuse the rotation tick's: a prepare builds on the blocking pool like a tick's
//! build (and comes back as `Built` carrying the caller's reply port), the others go through
//! the same decide → persist → apply. They do not fight the automatic rotation: a manual
//! prepare is refused while a build is out (and a tick waits while a manual build is out); a
//! manual activation leaves a new active one, from whose validity the next plan starts; a
//! tainted or revoked authority is never activated again (only a prepared one is activated,
//! and only an old one can be tainted).

use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

use super::steps::{persist, rotate};
use super::{AuthorityMsg, AuthorityState, Built};
use crate::server::authority::ca::{build_ca, build_jwt_key};
use crate::server::authority::x509::{now_secs, upstream_authority_id};
use crate::server::authority::{
    Authority, AuthorityCommand, AuthorityError, CaSlot, JwtSlot, SlotStatus, CA, JWT_KEY,
};

/// Which kind of authority a manual step is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthorityKind {
    /// The X.509 CA.
    X509,
    /// The JWT signing key.
    Jwt,
}

/// A manual step on a named authority.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalStep {
    /// Make the prepared one (named) the one that signs.
    Activate,
    /// Mark an old one tainted.
    Taint,
    /// Remove a tainted one.
    Revoke,
    /// X.509 only: taint every old CA the named upstream root signed (the ID is the root's
    /// subject key ID, hex); the root is marked in the bundle.
    TaintUpstream,
    /// X.509 only: remove every tainted CA the named upstream root signed, and the root.
    RevokeUpstream,
}

/// One of this server's own authorities, as the LocalAuthority API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAuthority {
    /// X.509: the CA certificate's subject key ID, hex; JWT: the kid.
    pub id: String,
    /// Prepared, active or old.
    pub status: SlotStatus,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Whether it is tainted.
    pub tainted: bool,
    /// X.509: the subject key ID, hex, of the upstream certificate that signed it (`None`
    /// when self-signed, and for JWT keys).
    pub upstream_authority_id: Option<String>,
}

impl LocalAuthority {
    fn of_ca(slot: &CaSlot) -> Self {
        Self {
            id: slot.record.authority_id.clone(),
            status: slot.status,
            expires_at: slot.record.not_after,
            tainted: slot.tainted,
            upstream_authority_id: upstream_authority_id(&slot.record),
        }
    }

    fn of_jwt(slot: &JwtSlot) -> Self {
        Self {
            id: slot.record.kid.clone(),
            status: slot.status,
            expires_at: slot.record.not_after,
            tainted: slot.tainted,
            upstream_authority_id: None,
        }
    }
}

/// Why a manual step was not done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocalAuthorityError {
    /// The aggregate refused it (unknown ID, wrong status, not tainted, ...).
    #[error(transparent)]
    Rejected(#[from] AuthorityError),
    /// A CA or key is being built (by rotation or another prepare): retry in a moment.
    #[error("a {kind} is being prepared now (by rotation or another request); retry in a moment")]
    Busy {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
    },
    /// The prepared one's private key cannot be loaded, so it cannot sign: rotation
    /// replaces it.
    #[error("{kind} {id} cannot sign: its private key is unavailable; rotation replaces it")]
    KeyUnavailable {
        /// `X.509 CA` or `JWT key`.
        kind: &'static str,
        /// Its ID.
        id: String,
    },
    /// Building the CA or key failed, or the log could not take the event: retry.
    #[error("{0}")]
    Failed(String),
}

/// This server's own authorities of `kind`, in the order they were prepared.
pub(super) fn own(authority: &Authority, kind: AuthorityKind) -> Vec<LocalAuthority> {
    match kind {
        AuthorityKind::X509 => authority
            .cas()
            .iter()
            .filter(|s| authority.owns(s.server.as_deref()))
            .map(LocalAuthority::of_ca)
            .collect(),
        AuthorityKind::Jwt => authority
            .jwt_keys()
            .iter()
            .filter(|s| authority.owns(s.server.as_deref()))
            .map(LocalAuthority::of_jwt)
            .collect(),
    }
}

fn find(authority: &Authority, kind: AuthorityKind, id: &str) -> Option<LocalAuthority> {
    own(authority, kind).into_iter().find(|a| a.id == id)
}

fn kind_name(kind: AuthorityKind) -> &'static str {
    match kind {
        AuthorityKind::X509 => CA,
        AuthorityKind::Jwt => JWT_KEY,
    }
}

/// Starts building a new CA or key to record as prepared (not activated); the reply goes
/// out when it is recorded (see [`finish_prepare`]).
pub(super) fn start_prepare(
    myself: &ActorRef<AuthorityMsg>,
    state: &mut AuthorityState,
    kind: AuthorityKind,
    reply: RpcReplyPort<Result<LocalAuthority, LocalAuthorityError>>,
) {
    let name = kind_name(kind);
    if state.building {
        let _ = reply.send(Err(LocalAuthorityError::Busy { kind: name }));
        return;
    }
    let prepared = match kind {
        AuthorityKind::X509 => state
            .authority
            .prepared_ca()
            .map(|c| c.authority_id.clone()),
        AuthorityKind::Jwt => state.authority.prepared_jwt_key().map(|k| k.kid.clone()),
    };
    if let Some(prepared) = prepared {
        let _ = reply.send(Err(AuthorityError::AlreadyPrepared {
            kind: name,
            prepared,
            id: "a new one".into(),
        }
        .into()));
        return;
    }
    state.building = true;
    let now = now_secs(state.clock.as_ref());
    let (keys, random) = (state.keys.clone(), state.random.clone());
    let (settings, myself) = (state.settings.clone(), myself.clone());
    tokio::spawn(async move {
        let job = tokio::task::spawn_blocking(move || {
            let td = &settings.trust_domain;
            let (ca, jwt) = match kind {
                AuthorityKind::X509 => (
                    Some((
                        build_ca(td, &settings.ca, keys.as_ref(), random.as_ref(), now),
                        false,
                    )),
                    None,
                ),
                AuthorityKind::Jwt => {
                    let (ttl, kt) = (settings.jwt_key_ttl, settings.jwt_key_type);
                    (
                        None,
                        Some((
                            build_jwt_key(ttl, kt, keys.as_ref(), random.as_ref(), now),
                            false,
                        )),
                    )
                }
            };
            (ca, jwt)
        });
        let built = match job.await {
            Ok((ca, jwt)) => Built {
                ca,
                jwt,
                failure: None,
                manual: Some((kind, reply)),
            },
            Err(e) => Built {
                ca: None,
                jwt: None,
                failure: Some(format!("the build job failed: {e}")),
                manual: Some((kind, reply)),
            },
        };
        let _ = myself.send_message(AuthorityMsg::Built(Box::new(built)));
    });
}

/// Answers a manual prepare once what it built is recorded (or not), then runs the ticks
/// that waited for the build.
pub(super) async fn finish_prepare(
    myself: &ActorRef<AuthorityMsg>,
    state: &mut AuthorityState,
    built: Built,
    kind: AuthorityKind,
    reply: RpcReplyPort<Result<LocalAuthority, LocalAuthorityError>>,
) -> Result<(), ActorProcessingErr> {
    let (errors, events) = (state.errors.len(), state.report.events.len());
    let recorded = super::steps::record_built(state, built).await;
    let failures = state.errors.split_off(errors);
    state.report.events.truncate(events);
    recorded?;
    let prepared = match kind {
        AuthorityKind::X509 => state
            .authority
            .prepared_ca()
            .map(|c| c.authority_id.clone()),
        AuthorityKind::Jwt => state.authority.prepared_jwt_key().map(|k| k.kid.clone()),
    };
    let outcome = match prepared.and_then(|id| find(&state.authority, kind, &id)) {
        Some(a) if failures.is_empty() => Ok(a),
        _ if failures.is_empty() => Err(LocalAuthorityError::Failed(
            "the new authority was not recorded".into(),
        )),
        _ => Err(LocalAuthorityError::Failed(failures.join("; "))),
    };
    let _ = reply.send(outcome);
    if !state.waiting.is_empty() {
        rotate(myself, state).await?;
    }
    Ok(())
}

/// Activates, taints or revokes the named authority of this server.
pub(super) async fn step(
    state: &mut AuthorityState,
    kind: AuthorityKind,
    step: LocalStep,
    id: String,
) -> Result<Result<LocalAuthority, LocalAuthorityError>, ActorProcessingErr> {
    let name = kind_name(kind);
    let command = match (kind, step) {
        (AuthorityKind::X509, LocalStep::Activate) => AuthorityCommand::ActivateCa {
            authority_id: id.clone(),
        },
        (AuthorityKind::X509, LocalStep::Taint) => AuthorityCommand::TaintCa {
            authority_id: id.clone(),
        },
        (AuthorityKind::X509, LocalStep::Revoke) => AuthorityCommand::RevokeCa {
            authority_id: id.clone(),
        },
        (AuthorityKind::Jwt, LocalStep::Activate) => {
            AuthorityCommand::ActivateJwtKey { kid: id.clone() }
        }
        (AuthorityKind::Jwt, LocalStep::Taint) => AuthorityCommand::TaintJwtKey { kid: id.clone() },
        (AuthorityKind::Jwt, LocalStep::Revoke) => {
            AuthorityCommand::RevokeJwtKey { kid: id.clone() }
        }
        (_, LocalStep::TaintUpstream) => AuthorityCommand::TaintUpstream {
            subject_key_id: id.to_ascii_lowercase(),
        },
        (_, LocalStep::RevokeUpstream) => AuthorityCommand::RevokeUpstream {
            subject_key_id: id.to_ascii_lowercase(),
        },
    };
    let upstream = matches!(step, LocalStep::TaintUpstream | LocalStep::RevokeUpstream);
    // For an upstream step: the first of this server's CAs the upstream signed.
    let before = if upstream {
        let wanted = id.to_ascii_lowercase();
        own(&state.authority, AuthorityKind::X509)
            .into_iter()
            .find(|a| a.upstream_authority_id.as_deref() == Some(wanted.as_str()))
    } else {
        find(&state.authority, kind, &id)
    };
    if step == LocalStep::Activate {
        // Only this server's own prepared one: the shared aggregate knows other servers'.
        match &before {
            None => {
                let server = match kind {
                    AuthorityKind::X509 => state.authority.ca(&id).map(|s| s.server.clone()),
                    AuthorityKind::Jwt => state.authority.jwt_key(&id).map(|s| s.server.clone()),
                };
                let refusal = match server {
                    Some(server) => AuthorityError::NotOwn {
                        kind: name,
                        id,
                        server: server.unwrap_or_else(|| "-".into()),
                    },
                    None => AuthorityError::Unknown { kind: name, id },
                };
                return Ok(Err(refusal.into()));
            }
            Some(a) if a.status == SlotStatus::Prepared => {
                if state.unusable.contains(&id) {
                    return Ok(Err(LocalAuthorityError::KeyUnavailable { kind: name, id }));
                }
            }
            Some(a) if a.status == SlotStatus::Active => return Ok(Ok(a.clone())),
            Some(_) => {}
        }
    }
    // The aggregate's refusal, as is, before anything is written.
    let ctx = crate::server::aggregate::Context {
        now: now_secs(state.clock.as_ref()),
        random: [0; 16],
    };
    if let Err(e) =
        crate::server::aggregate::Aggregate::decide(&state.authority, command.clone(), &ctx)
    {
        return Ok(Err(e.into()));
    }
    let (errors, events) = (state.errors.len(), state.report.events.len());
    let done = persist(state, command).await;
    let failures = state.errors.split_off(errors);
    state.report.events.truncate(events);
    if !done? {
        return Ok(Err(LocalAuthorityError::Failed(failures.join("; "))));
    }
    let after = match step {
        // Gone from the state: answer with what it was.
        LocalStep::Revoke | LocalStep::RevokeUpstream => before,
        LocalStep::TaintUpstream => before.and_then(|b| find(&state.authority, kind, &b.id)),
        LocalStep::Activate | LocalStep::Taint => find(&state.authority, kind, &id),
    };
    Ok(after.ok_or_else(|| {
        LocalAuthorityError::Failed(format!("{name} {id} is not in the state after the step"))
    }))
}
