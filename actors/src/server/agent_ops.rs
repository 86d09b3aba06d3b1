//! What an attested agent may ask of the server, as domain operations: signing X.509-SVIDs
//! and minting JWT-SVIDs for entries in its view. Shared by the gRPC agent API and the
//! in-process client the simulator uses, so authorisation lives in one place.
//!
//! The server decides what it signs: never for an entry whose `expires_at` has passed (even
//! before the registry's prune has removed it), and for as long as the entry says (else the
//! server default), which an agent's request may only shorten. The signer then caps every
//! lifetime at the configured maximum and at the CA's or key's expiry.
//!
//! Priority: an item whose agent still holds a valid SVID this server signed for the entry is
//! a renewal and is signed as bulk work; any other (a workload waiting on its first SVID) is
//! on demand and goes first ([`Renewals`], [`Priority`]).

mod renewals;

pub use self::renewals::Renewals;

use std::time::Duration;

use tessera_identity::{EntryId, RegistrationEntry, SpiffeId};

use crate::server::aggregate_actor::unix_secs;
use crate::server::authority::signer::priority::Priority;
use crate::server::authority::{
    IssuedX509Svid, JwtSvid, JwtSvidRequest, SignError, SvidRejection, X509SvidRequest,
};
use crate::server::supervisor::Server;
use crate::server::sync_hub::SyncHubError;

/// Why one item of a batch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The entry id does not parse.
    #[error("entry id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// Why.
        reason: String,
    },
    /// The entry is not in the agent's view (or does not exist).
    #[error("entry {entry} is not in the view of agent {agent}")]
    NotAuthorised {
        /// The entry.
        entry: EntryId,
        /// The agent.
        agent: SpiffeId,
    },
    /// The entry's `expires_at` has passed: it issues no more SVIDs (the registry prunes it
    /// and agents' views drop it).
    #[error("entry {entry} expired at {expires_at} (Unix seconds) and issues no more SVIDs; extend it with `entry update --entryExpiry` or create a new one")]
    Expired {
        /// The entry.
        entry: EntryId,
        /// When it expired.
        expires_at: i64,
    },
    /// The signer refused the CSR or request.
    #[error("{0}")]
    Rejected(String),
    /// This part of the batch could not be signed now (the signing queue is full for bulk
    /// renewal); the rest was. Retry later.
    #[error("{0}")]
    Busy(String),
}

/// The error for an expired entry, if `entry` has expired at `now`.
fn expired(entry: &RegistrationEntry, now: i64) -> Option<ItemError> {
    match entry.expires_at {
        Some(at) if at <= now => Some(ItemError::Expired {
            entry: entry.id.clone(),
            expires_at: at,
        }),
        _ => None,
    }
}

/// Why a whole operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    /// Too much in flight: retry later.
    #[error("{0}")]
    Overloaded(String),
    /// Retryable fault.
    #[error("{0}")]
    Unavailable(String),
    /// Bad request (a limit, a malformed field).
    #[error("{0}")]
    Invalid(String),
    /// The agent may not do this.
    #[error("{0}")]
    Denied(String),
}

impl From<SyncHubError> for OpsError {
    fn from(e: SyncHubError) -> Self {
        match e {
            SyncHubError::Overloaded { .. } => OpsError::Overloaded(e.to_string()),
            SyncHubError::Unavailable(_) => OpsError::Unavailable(e.to_string()),
        }
    }
}

impl From<SignError> for OpsError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::Overloaded { .. } => OpsError::Overloaded(e.to_string()),
            SignError::Rejected(r) => OpsError::Invalid(r.to_string()),
            other => OpsError::Unavailable(other.to_string()),
        }
    }
}

/// Signs CSRs for entries in `agent`'s view; one outcome per item, in order.
pub async fn sign_x509_for_agent(
    server: &Server,
    agent: &SpiffeId,
    items: Vec<(String, Vec<u8>)>,
    max_batch: usize,
) -> Result<Vec<Result<(RegistrationEntry, IssuedX509Svid), ItemError>>, OpsError> {
    if items.is_empty() || items.len() > max_batch {
        return Err(OpsError::Overloaded(format!(
            "{} items to sign; 1..={max_batch} allowed per batch (server config `max_sign_batch`)",
            items.len()
        )));
    }
    let mut results: Vec<Option<Result<(RegistrationEntry, IssuedX509Svid), ItemError>>> =
        vec![None; items.len()];
    let mut wanted = Vec::new();
    for (i, (id, _)) in items.iter().enumerate() {
        match EntryId::new(id) {
            Ok(id) => wanted.push((i, id)),
            Err(e) => {
                results[i] = Some(Err(ItemError::InvalidId {
                    id: id.clone(),
                    reason: e.to_string(),
                }))
            }
        }
    }
    let authorised = server
        .sync
        .authorise(
            agent.clone(),
            wanted.iter().map(|(_, id)| id.clone()).collect(),
        )
        .await?;
    // [on demand, bulk]: requests and the slots they answer.
    let mut groups: [Group; 2] = [Group::default(), Group::default()];
    let now = unix_secs(server.clock.as_ref());
    for ((i, _), auth) in wanted.into_iter().zip(authorised) {
        match auth {
            Ok(entry) if entry.is_expired_at(now) => results[i] = expired(&entry, now).map(Err),
            Ok(entry) => {
                let group = match server.renewals.priority(agent, &entry.id, now) {
                    Priority::OnDemand => &mut groups[0],
                    Priority::Bulk => &mut groups[1],
                };
                group.requests.push(X509SvidRequest {
                    csr_der: items[i].1.clone(),
                    spiffe_id: entry.spiffe_id.clone(),
                    dns_names: entry.dns_names.clone(),
                    ttl: entry
                        .x509_svid_ttl
                        .map(|s| Duration::from_secs(u64::from(s))),
                });
                group.slots.push((i, entry));
            }
            Err(entry) => {
                results[i] = Some(Err(ItemError::NotAuthorised {
                    entry,
                    agent: agent.clone(),
                }))
            }
        }
    }
    let [on_demand, bulk] = groups;
    let signer = server.authority.signer();
    let sign = |group: Group, priority| async move {
        if group.requests.is_empty() {
            return None;
        }
        let outcome = signer.sign_x509_batch_as(group.requests, priority).await;
        Some((group.slots, outcome))
    };
    let (first, second) = tokio::join!(
        sign(on_demand, Priority::OnDemand),
        sign(bulk, Priority::Bulk)
    );
    let parts: Vec<_> = [first, second].into_iter().flatten().collect();
    // A whole-batch refusal is the answer only if nothing of the batch was signed.
    if parts.iter().all(|(_, outcome)| outcome.is_err()) {
        if let Some((_, Err(e))) = parts.into_iter().next() {
            return Err(e.into());
        }
        return Ok(Vec::new());
    }
    for (slots, outcome) in parts {
        match outcome {
            Ok(signed) => {
                for ((i, entry), outcome) in slots.into_iter().zip(signed) {
                    if let Ok(svid) = &outcome {
                        server
                            .renewals
                            .record(agent, &entry.id, svid.not_after, now);
                    }
                    results[i] = Some(
                        outcome
                            .map(|svid| (entry, svid))
                            .map_err(|e: SvidRejection| ItemError::Rejected(e.to_string())),
                    );
                }
            }
            Err(e) => {
                for (i, _) in slots {
                    results[i] = Some(Err(ItemError::Busy(e.to_string())));
                }
            }
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ItemError::Rejected("no outcome".into()))))
        .collect())
}

/// Requests of one priority and the result slots they answer.
#[derive(Default)]
struct Group {
    requests: Vec<X509SvidRequest>,
    slots: Vec<(usize, RegistrationEntry)>,
}

/// Mints a JWT-SVID for an entry in `agent`'s view. Its lifetime is the entry's
/// `jwt_svid_ttl`, else the server default; `ttl`, the agent's request, can only shorten it.
pub async fn mint_jwt_for_agent(
    server: &Server,
    agent: &SpiffeId,
    entry_id: &str,
    audience: Vec<String>,
    ttl: Option<Duration>,
    max_audiences: usize,
) -> Result<(RegistrationEntry, JwtSvid), OpsError> {
    // The configured bound (limits.max_audience_len), the same the signer and the agent's
    // Workload API apply.
    let max_len = server.settings.authority.signer.max_audience_len;
    if audience.is_empty()
        || audience.len() > max_audiences
        || audience.iter().any(|a| a.is_empty() || a.len() > max_len)
    {
        return Err(OpsError::Invalid(format!(
            "audience must hold 1..={max_audiences} non-empty values of at most {max_len} bytes (limits.max_audiences, limits.max_audience_len)"
        )));
    }
    let id = EntryId::new(entry_id).map_err(|e| OpsError::Invalid(format!("entry_id: {e}")))?;
    let entry = server
        .sync
        .authorise(agent.clone(), vec![id.clone()])
        .await?
        .pop()
        .and_then(Result::ok)
        .ok_or_else(|| {
            OpsError::Denied(format!("entry {id} is not in the view of agent {agent}"))
        })?;
    let now = unix_secs(server.clock.as_ref());
    if let Some(e) = expired(&entry, now) {
        return Err(OpsError::Denied(e.to_string()));
    }
    let decided = entry
        .jwt_svid_ttl
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(server.settings.authority.signer.jwt_svid_ttl);
    let ttl = Some(match ttl {
        Some(asked) if !asked.is_zero() => asked.min(decided),
        _ => decided,
    });
    let svid = server
        .authority
        .mint_jwt_svid(JwtSvidRequest {
            spiffe_id: entry.spiffe_id.clone(),
            audience,
            ttl,
        })
        .await?;
    Ok((entry, svid))
}
