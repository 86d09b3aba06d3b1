//! The authority actor's steps: rotation (plan, persist, build off-thread), keeping the signer
//! and the published bundle in line with the aggregate, and loading keys at start.

use std::collections::BTreeSet;
use std::sync::Arc;

use ractor::{ActorProcessingErr, ActorRef};
use tessera_identity::Bundle;
use tracing::Instrument;

use super::{AuthorityMsg, AuthorityState, Built, TickError};
use crate::random::random_array;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::authority::ca::{build_ca, build_jwt_key};
use crate::server::authority::rotation::{plan, RotationAction};
use crate::server::authority::signer::{SigningCa, SigningJwtKey};
use crate::server::authority::x509::now_secs;
use crate::server::authority::{Authority, AuthorityCommand, AuthorityError, SlotStatus};
use crate::server::events::ServerEvent;
use crate::server::follow::{
    append_at, catch_up, conflict_backoff, Written, DEFAULT_CONFLICT_RETRIES,
};

/// Plans rotation; carries out activations and retirements; sends builds off-thread.
pub(super) async fn rotate(
    myself: &ActorRef<AuthorityMsg>,
    state: &mut AuthorityState,
) -> Result<(), ActorProcessingErr> {
    let now = now_secs(state.clock.as_ref());
    // Rotation plans on this server's own CAs and keys; other servers' expired ones are
    // retired by whichever server sees them first.
    let mut actions = plan(
        &state.authority.scoped(),
        now,
        &state.settings.rotation,
        &state.unusable,
    );
    let (cas, kids) = state.authority.foreign_expired(now);
    actions.extend(
        cas.into_iter()
            .map(|authority_id| RotationAction::RetireCa { authority_id }),
    );
    actions.extend(
        kids.into_iter()
            .map(|kid| RotationAction::RetireJwtKey { kid }),
    );
    let mut build_ca_activate = None;
    let mut build_jwt_activate = None;
    for action in actions {
        let command = match action {
            RotationAction::PrepareCa { activate } => {
                build_ca_activate = Some(activate);
                continue;
            }
            RotationAction::PrepareJwtKey { activate } => {
                build_jwt_activate = Some(activate);
                continue;
            }
            RotationAction::ActivateCa { authority_id } => {
                AuthorityCommand::ActivateCa { authority_id }
            }
            RotationAction::RetireCa { authority_id } => {
                AuthorityCommand::RetireCa { authority_id }
            }
            RotationAction::ActivateJwtKey { kid } => AuthorityCommand::ActivateJwtKey { kid },
            RotationAction::RetireJwtKey { kid } => AuthorityCommand::RetireJwtKey { kid },
        };
        persist(state, command).await?;
    }
    if build_ca_activate.is_none() && build_jwt_activate.is_none() {
        finish_tick(state);
        return Ok(());
    }
    state.building = true;
    let (keys, random) = (state.keys.clone(), state.random.clone());
    let (settings, myself) = (state.settings.clone(), myself.clone());
    tokio::spawn(async move {
        let job = tokio::task::spawn_blocking(move || {
            let td = &settings.trust_domain;
            Built {
                ca: build_ca_activate.map(|a| {
                    (
                        build_ca(td, &settings.ca, keys.as_ref(), random.as_ref(), now),
                        a,
                    )
                }),
                jwt: build_jwt_activate.map(|a| {
                    let (ttl, kt) = (settings.jwt_key_ttl, settings.jwt_key_type);
                    (
                        build_jwt_key(ttl, kt, keys.as_ref(), random.as_ref(), now),
                        a,
                    )
                }),
                failure: None,
                manual: None,
            }
        });
        let built = job.await.unwrap_or_else(|e| Built {
            ca: None,
            jwt: None,
            failure: Some(format!("the build job failed: {e}")),
            manual: None,
        });
        // If the actor is gone, so is the need.
        let _ = myself.send_message(AuthorityMsg::Built(Box::new(built)));
    });
    Ok(())
}

/// Persists what a build produced: prepared (and, if asked, activated at once).
pub(super) async fn record_built(
    state: &mut AuthorityState,
    built: Built,
) -> Result<(), ActorProcessingErr> {
    state.errors.extend(built.failure);
    match built.ca {
        Some((Ok(ca), activate)) => {
            let (id, key_ref) = (ca.record.authority_id.clone(), ca.record.key_ref.clone());
            // The key is loaded once its CA is recorded: a fold in between (catching up
            // after a conflict) would take a loaded key without a CA for a retired one.
            if !persist(state, AuthorityCommand::RecordPreparedCa(ca.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else {
                state.loaded.insert(key_ref, ca.key);
            }
            if activate
                && state
                    .authority
                    .prepared_ca()
                    .is_some_and(|c| c.authority_id == id)
            {
                persist(state, AuthorityCommand::ActivateCa { authority_id: id }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    match built.jwt {
        Some((Ok(jwt), activate)) => {
            let (kid, key_ref) = (jwt.record.kid.clone(), jwt.record.key_ref.clone());
            if !persist(state, AuthorityCommand::RecordPreparedJwtKey(jwt.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else {
                state.loaded.insert(key_ref, jwt.key);
            }
            if activate
                && state
                    .authority
                    .prepared_jwt_key()
                    .is_some_and(|k| k.kid == kid)
            {
                persist(state, AuthorityCommand::ActivateJwtKey { kid }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    Ok(())
}

/// decide → persist → apply for one command, at the seq the state is folded to; on a conflict
/// with another server, catch up and decide again (bounded). `Ok(false)` if the aggregate
/// refused it (a bug in planning, reported as a rotation error) or the log was unavailable
/// (the next tick tries again). A log failure stops the actor.
pub(super) async fn persist(
    state: &mut AuthorityState,
    command: AuthorityCommand,
) -> Result<bool, ActorProcessingErr> {
    let span = span_of(&command);
    let done = persist_untraced(state, command)
        .instrument(span.clone())
        .await;
    if let Ok(true) = done {
        span.in_scope(|| tracing::info!("authority: recorded"));
    }
    done
}

/// The span a command's persistence runs in: `authority.prepare` and `authority.activate`
/// (rotation's and manual), `authority.retire`, `authority.taint`, `authority.revoke`; with
/// the kind and the authority ID or kid, never key material.
fn span_of(command: &AuthorityCommand) -> tracing::Span {
    use tracing::info_span;
    match command {
        AuthorityCommand::RecordPreparedCa(r) => {
            info_span!("authority.prepare", kind = "x509", authority_id = %r.authority_id, not_after = r.not_after)
        }
        AuthorityCommand::RecordPreparedJwtKey(r) => {
            info_span!("authority.prepare", kind = "jwt", authority_id = %r.kid, not_after = r.not_after)
        }
        AuthorityCommand::ActivateCa { authority_id } => {
            info_span!("authority.activate", kind = "x509", authority_id = %authority_id)
        }
        AuthorityCommand::ActivateJwtKey { kid } => {
            info_span!("authority.activate", kind = "jwt", authority_id = %kid)
        }
        AuthorityCommand::RetireCa { authority_id } => {
            info_span!("authority.retire", kind = "x509", authority_id = %authority_id)
        }
        AuthorityCommand::RetireJwtKey { kid } => {
            info_span!("authority.retire", kind = "jwt", authority_id = %kid)
        }
        AuthorityCommand::TaintCa { authority_id } => {
            info_span!("authority.taint", kind = "x509", authority_id = %authority_id)
        }
        AuthorityCommand::TaintJwtKey { kid } => {
            info_span!("authority.taint", kind = "jwt", authority_id = %kid)
        }
        AuthorityCommand::RevokeCa { authority_id } => {
            info_span!("authority.revoke", kind = "x509", authority_id = %authority_id)
        }
        AuthorityCommand::RevokeJwtKey { kid } => {
            info_span!("authority.revoke", kind = "jwt", authority_id = %kid)
        }
        AuthorityCommand::TaintUpstream { subject_key_id } => {
            info_span!("authority.taint", kind = "x509_upstream", authority_id = %subject_key_id)
        }
        AuthorityCommand::RevokeUpstream { subject_key_id } => {
            info_span!("authority.revoke", kind = "x509_upstream", authority_id = %subject_key_id)
        }
    }
}

async fn persist_untraced(
    state: &mut AuthorityState,
    command: AuthorityCommand,
) -> Result<bool, ActorProcessingErr> {
    let mut conflicts = 0;
    loop {
        let ctx = Context {
            now: now_secs(state.clock.as_ref()),
            random: random_array(state.random.as_ref()),
        };
        let decision = match state.authority.decide(command.clone(), &ctx) {
            Ok(d) => d,
            // Another server retired it first (both saw it expire): nothing left to do.
            Err(AuthorityError::Unknown { .. }) if conflicts > 0 && is_retirement(&command) => {
                return Ok(true)
            }
            Err(e) => {
                state.errors.push(e.to_string());
                return Ok(false);
            }
        };
        if decision.events.is_empty() {
            return Ok(true);
        }
        match append_at(&state.log, &decision.events, state.seq).await {
            Written::Committed(receipt) => {
                state.seq = receipt.last_seq;
                fold(state, &decision.events).await;
                state.report.events.extend(decision.events);
                return Ok(true);
            }
            Written::Conflict if conflicts < DEFAULT_CONFLICT_RETRIES => {
                conflicts += 1;
                tokio::time::sleep(conflict_backoff(conflicts, state.random.as_ref())).await;
                let mut seen = Vec::new();
                let caught = catch_up(&state.log, &mut state.seq, |e| seen.push(e.clone())).await;
                fold(state, &seen).await;
                if let Err(e) = caught {
                    return Err(fail(state, format!("catching up after a conflict: {e}")));
                }
            }
            Written::Conflict => {
                state.errors.push(format!(
                    "the log moved under {conflicts} attempts in a row (other servers are writing)"
                ));
                return Ok(false);
            }
            Written::Unavailable(reason) => {
                state.errors.push(reason);
                return Ok(false);
            }
            Written::Failed(reason) => return Err(fail(state, reason)),
        }
    }
}

fn is_retirement(command: &AuthorityCommand) -> bool {
    matches!(
        command,
        AuthorityCommand::RetireCa { .. } | AuthorityCommand::RetireJwtKey { .. }
    )
}

/// Answers the waiting ticks with a persist failure; the error stops the actor.
fn fail(state: &mut AuthorityState, reason: String) -> ActorProcessingErr {
    let error = TickError::Persist(reason.clone());
    for port in state.waiting.drain(..) {
        let _ = port.send(Err(error.clone()));
    }
    format!("authority: append failed: {reason}").into()
}

/// Folds committed events (this server's or another's) and brings the signer, the bundle and
/// the loaded keys in line.
pub(in crate::server::authority) async fn fold(state: &mut AuthorityState, events: &[ServerEvent]) {
    // Keys of this server's CAs and JWT keys that leave the state: deleted whether or not
    // they were loaded (an old one's key is not reloaded after a restart).
    let mut leaving = Vec::new();
    for event in events {
        if let Some(key_ref) = own_key_leaving(&state.authority, event) {
            leaving.push(key_ref);
        }
        state.authority.apply(event);
        if let ServerEvent::CaRetired { authority_id: id }
        | ServerEvent::JwtKeyRetired { kid: id }
        | ServerEvent::ServerCaRetired {
            authority_id: id, ..
        }
        | ServerEvent::ServerJwtKeyRetired { kid: id, .. }
        | ServerEvent::X509AuthorityRevoked {
            authority_id: id, ..
        }
        | ServerEvent::JwtAuthorityRevoked { kid: id, .. } = event
        {
            state.unusable.remove(id);
        }
    }
    let mut retired = sync(state);
    for key_ref in leaving {
        if !retired.contains(&key_ref) {
            retired.push(key_ref);
        }
    }
    forget_keys(state, retired).await;
}

/// The key reference of this server's own CA or JWT key that `event` retires or revokes.
fn own_key_leaving(authority: &Authority, event: &ServerEvent) -> Option<String> {
    match event {
        ServerEvent::CaRetired { authority_id }
        | ServerEvent::ServerCaRetired { authority_id, .. }
        | ServerEvent::X509AuthorityRevoked { authority_id, .. } => authority
            .ca(authority_id)
            .filter(|s| authority.owns(s.server.as_deref()))
            .map(|s| s.record.key_ref.clone()),
        ServerEvent::JwtKeyRetired { kid }
        | ServerEvent::ServerJwtKeyRetired { kid, .. }
        | ServerEvent::JwtAuthorityRevoked { kid, .. } => authority
            .jwt_key(kid)
            .filter(|s| authority.owns(s.server.as_deref()))
            .map(|s| s.record.key_ref.clone()),
        _ => None,
    }
}

/// Brings the signer and the published bundle in line with the aggregate; returns the loaded
/// keys whose CA or JWT key is gone (retired), for [`forget_keys`].
pub(super) fn sync(state: &mut AuthorityState) -> Vec<String> {
    // Keys are deleted when their CA or JWT key is retired (not when it becomes old).
    let live: BTreeSet<&str> = state
        .authority
        .cas()
        .iter()
        .map(|s| s.record.key_ref.as_str())
        .chain(
            state
                .authority
                .jwt_keys()
                .iter()
                .map(|s| s.record.key_ref.as_str()),
        )
        .collect();
    let dead: Vec<String> = state
        .loaded
        .keys()
        .filter(|r| !live.contains(r.as_str()))
        .cloned()
        .collect();

    let ca = state.authority.active_ca().cloned();
    if state.signer.active_authority_id() != ca.as_ref().map(|c| c.authority_id.clone()) {
        let signing = ca.and_then(|record| match state.loaded.get(&record.key_ref) {
            Some(key) => Some(SigningCa::new(record, key.clone())),
            None => {
                state.unusable.insert(record.authority_id);
                None
            }
        });
        state.signer.install_ca(signing);
    }
    let jwt = state.authority.active_jwt_key().cloned();
    if state.signer.active_kid() != jwt.as_ref().map(|k| k.kid.clone()) {
        let signing = jwt.and_then(|record| match state.loaded.get(&record.key_ref) {
            Some(key) => Some(SigningJwtKey::new(record, key.clone())),
            None => {
                state.unusable.insert(record.kid);
                None
            }
        });
        state.signer.install_jwt_key(signing);
    }
    let bundle = published_bundle(&state.authority);
    state.bundle.send_if_modified(|published| {
        let changed = *published != bundle;
        if changed {
            published.clone_from(&bundle);
        }
        changed
    });
    dead
}

/// The bundle to publish: none until the first CA or key is prepared.
pub(super) fn published_bundle(authority: &Authority) -> Option<Bundle> {
    authority.bundle().filter(|b| !b.is_empty()).cloned()
}

/// Drops loaded keys and deletes them from the key manager, on the blocking pool. A failure
/// is logged: the key is then an orphan an operator may remove; nothing refers to it.
pub(super) async fn forget_keys(state: &mut AuthorityState, key_refs: Vec<String>) {
    if key_refs.is_empty() {
        return;
    }
    for key_ref in &key_refs {
        state.loaded.remove(key_ref);
    }
    let keys = state.keys.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        for key_ref in key_refs {
            if let Err(e) = keys.delete(&key_ref) {
                tracing::warn!(key_ref = %key_ref, error = %e, "authority: cannot delete a retired key");
            }
        }
    })
    .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "authority: the key deletion job failed");
    }
}

/// Answers the ticks waiting with what was done (or the errors met).
pub(super) fn finish_tick(state: &mut AuthorityState) {
    let report = std::mem::take(&mut state.report);
    let outcome = if state.errors.is_empty() {
        state.last_error = None;
        Ok(report)
    } else {
        let message = state.errors.drain(..).collect::<Vec<_>>().join("; ");
        tracing::error!(error = %message, "authority: rotation failed; retrying on the next tick");
        state.last_error = Some(message.clone());
        Err(TickError::Build(message))
    };
    for port in state.waiting.drain(..) {
        let _ = port.send(outcome.clone());
    }
}

/// Loads the keys of the prepared and active CAs and JWT keys (blocking I/O, off-thread);
/// a key that cannot be loaded marks its CA or key unusable, so rotation replaces it.
pub(super) async fn load_signing_keys(
    state: &mut AuthorityState,
) -> Result<(), ActorProcessingErr> {
    let own = state.authority.scoped();
    let wanted: Vec<(String, String)> = own
        .cas()
        .iter()
        .filter(|s| s.status != SlotStatus::Old)
        .map(|s| (s.record.authority_id.clone(), s.record.key_ref.clone()))
        .chain(
            own.jwt_keys()
                .iter()
                .filter(|s| s.status != SlotStatus::Old)
                .map(|s| (s.record.kid.clone(), s.record.key_ref.clone())),
        )
        .collect();
    let keys = state.keys.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(id, key_ref)| {
                let key = keys.load(&key_ref);
                (id, key_ref, key)
            })
            .collect::<Vec<_>>()
    })
    .await?;
    for (id, key_ref, key) in loaded {
        match key {
            Ok(key) => {
                state.loaded.insert(key_ref, Arc::new(key));
            }
            Err(e) => {
                tracing::error!(id = %id, error = %e, "authority: key unavailable; it will be replaced");
                state.unusable.insert(id);
            }
        }
    }
    Ok(())
}
