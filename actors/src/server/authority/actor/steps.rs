//! The authority actor's steps: rotation (plan, persist, build off-thread), keeping the signer
//! and the published bundle in line with the aggregate, and loading keys at start.

use std::collections::BTreeSet;
use std::sync::Arc;

use ractor::{ActorProcessingErr, ActorRef};
use tessera_eventlog::AppendCondition;
use tessera_identity::Bundle;

use super::{AuthorityMsg, AuthorityState, Built, TickError};
use crate::random::random_array;
use crate::server::aggregate::{Aggregate, Context};
use crate::server::authority::ca::{build_ca, build_jwt_key};
use crate::server::authority::rotation::{plan, RotationAction};
use crate::server::authority::signer::{SigningCa, SigningJwtKey};
use crate::server::authority::x509::now_secs;
use crate::server::authority::{Authority, AuthorityCommand, SlotStatus};
use crate::server::events::ServerEvent;

/// Plans rotation; carries out activations and retirements; sends builds off-thread.
pub(super) async fn rotate(
    myself: &ActorRef<AuthorityMsg>,
    state: &mut AuthorityState,
) -> Result<(), ActorProcessingErr> {
    let now = now_secs(state.clock.as_ref());
    let actions = plan(
        &state.authority,
        now,
        &state.settings.rotation,
        &state.unusable,
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
            }
        });
        let built = job.await.unwrap_or_else(|e| Built {
            ca: None,
            jwt: None,
            failure: Some(format!("the build job failed: {e}")),
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
            state.loaded.insert(key_ref.clone(), ca.key);
            if !persist(state, AuthorityCommand::RecordPreparedCa(ca.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else if activate {
                persist(state, AuthorityCommand::ActivateCa { authority_id: id }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    match built.jwt {
        Some((Ok(jwt), activate)) => {
            let (kid, key_ref) = (jwt.record.kid.clone(), jwt.record.key_ref.clone());
            state.loaded.insert(key_ref.clone(), jwt.key);
            if !persist(state, AuthorityCommand::RecordPreparedJwtKey(jwt.record)).await? {
                forget_keys(state, vec![key_ref]).await;
            } else if activate {
                persist(state, AuthorityCommand::ActivateJwtKey { kid }).await?;
            }
        }
        Some((Err(e), _)) => state.errors.push(e.to_string()),
        None => {}
    }
    Ok(())
}

/// decide → persist → apply for one command; `Ok(false)` if the aggregate refused it (a bug
/// in planning, reported as a rotation error). A log failure stops the actor.
async fn persist(
    state: &mut AuthorityState,
    command: AuthorityCommand,
) -> Result<bool, ActorProcessingErr> {
    let ctx = Context {
        now: now_secs(state.clock.as_ref()),
        random: random_array(state.random.as_ref()),
    };
    let decision = match state.authority.decide(command, &ctx) {
        Ok(d) => d,
        Err(e) => {
            state.errors.push(e.to_string());
            return Ok(false);
        }
    };
    if decision.events.is_empty() {
        return Ok(true);
    }
    if let Err(e) = state
        .log
        .append(&decision.events, AppendCondition::Any)
        .await
    {
        let error = TickError::Persist(e.to_string());
        for port in state.waiting.drain(..) {
            let _ = port.send(Err(error.clone()));
        }
        return Err(format!("authority: append failed: {e}").into());
    }
    for event in &decision.events {
        state.authority.apply(event);
        if let ServerEvent::CaRetired { authority_id: id }
        | ServerEvent::JwtKeyRetired { kid: id } = event
        {
            state.unusable.remove(id);
        }
    }
    state.report.events.extend(decision.events);
    let retired = sync(state);
    forget_keys(state, retired).await;
    Ok(true)
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
    let wanted: Vec<(String, String)> = state
        .authority
        .cas()
        .iter()
        .filter(|s| s.status != SlotStatus::Old)
        .map(|s| (s.record.authority_id.clone(), s.record.key_ref.clone()))
        .chain(
            state
                .authority
                .jwt_keys()
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
