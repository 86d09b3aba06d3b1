//! Deciding registry commands: validation, SPIRE's uniqueness rule, ids and revisions.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use tessera_identity::{EntryId, RegistrationEntry};

use super::{
    key_of, EntryKey, EntryRejection, NewEntry, Registry, RegistryCommand, RegistryError,
    RegistryReply, RegistrySettings,
};
use crate::server::aggregate::{Context, Decision};
use crate::server::events::ServerEvent;

impl Registry {
    pub(crate) fn decide_command(
        &self,
        command: RegistryCommand,
        ctx: &Context,
    ) -> Result<Decision<RegistryReply>, RegistryError> {
        let settings = self.settings.as_ref().ok_or(RegistryError::NotConfigured)?;
        Ok(match command {
            RegistryCommand::Create(items) => self.decide_create(settings, items, ctx),
            RegistryCommand::Update(items) => self.decide_update(settings, items),
            RegistryCommand::Delete(ids) => self.decide_delete(ids),
            RegistryCommand::PruneExpired => self.decide_prune(ctx.now),
        })
    }

    fn decide_prune(&self, now: i64) -> Decision<RegistryReply> {
        let expired = self.expired_at(now, super::PRUNE_BATCH);
        let events = expired
            .iter()
            .filter_map(|e| {
                e.expires_at.map(|expires_at| ServerEvent::EntryExpired {
                    id: e.id.clone(),
                    expires_at,
                })
            })
            .collect();
        Decision {
            events,
            reply: RegistryReply::Pruned(expired.into_iter().map(|e| e.id.clone()).collect()),
        }
    }

    fn decide_create(
        &self,
        settings: &RegistrySettings,
        items: Vec<NewEntry>,
        ctx: &Context,
    ) -> Decision<RegistryReply> {
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        // Entries created earlier in this batch count for the uniqueness rules too.
        let mut batch_keys: HashMap<EntryKey, EntryId> = HashMap::new();
        let mut batch_ids: HashSet<EntryId> = HashSet::new();
        for (index, item) in items.into_iter().enumerate() {
            let result = (|| {
                if self.len() + batch_ids.len() >= settings.max_entries {
                    return Err(EntryRejection::RegistryFull {
                        limit: settings.max_entries,
                    });
                }
                let mut entry = item.entry;
                entry.id = match item.id {
                    Some(id) => {
                        if self.contains(&id) || batch_ids.contains(&id) {
                            return Err(EntryRejection::IdInUse { id });
                        }
                        id
                    }
                    None => fresh_id(ctx, index),
                };
                entry.created_at = ctx.now;
                entry.revision = 0;
                entry.validate(&settings.trust_domain, &settings.limits)?;
                let key = key_of(&entry);
                if let Some(existing) = self
                    .with_key(&key, |_| false)
                    .or_else(|| batch_keys.get(&key))
                {
                    return Err(EntryRejection::AlreadyExists {
                        existing: existing.clone(),
                    });
                }
                batch_keys.insert(key, entry.id.clone());
                batch_ids.insert(entry.id.clone());
                Ok(entry)
            })();
            if let Ok(entry) = &result {
                events.push(ServerEvent::EntryCreated(entry.clone()));
            }
            results.push(result);
        }
        Decision {
            events,
            reply: RegistryReply::Created(results),
        }
    }

    fn decide_update(
        &self,
        settings: &RegistrySettings,
        items: Vec<RegistrationEntry>,
    ) -> Decision<RegistryReply> {
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        let mut updated: HashMap<EntryId, RegistrationEntry> = HashMap::new();
        for mut entry in items {
            let result = (|| {
                let current = updated
                    .get(&entry.id)
                    .or_else(|| self.get(&entry.id))
                    .ok_or_else(|| EntryRejection::NotFound {
                        id: entry.id.clone(),
                    })?;
                entry.created_at = current.created_at;
                entry.revision = current.revision + 1;
                entry.validate(&settings.trust_domain, &settings.limits)?;
                let key = key_of(&entry);
                let clash = self
                    .with_key(&key, |other| {
                        *other == entry.id || updated.contains_key(other)
                    })
                    .or_else(|| {
                        updated
                            .values()
                            .find(|u| u.id != entry.id && key_of(u) == key)
                            .map(|u| &u.id)
                    });
                if let Some(existing) = clash {
                    return Err(EntryRejection::AlreadyExists {
                        existing: existing.clone(),
                    });
                }
                Ok(entry)
            })();
            if let Ok(entry) = &result {
                updated.insert(entry.id.clone(), entry.clone());
                events.push(ServerEvent::EntryUpdated(entry.clone()));
            }
            results.push(result);
        }
        Decision {
            events,
            reply: RegistryReply::Updated(results),
        }
    }

    fn decide_delete(&self, ids: Vec<EntryId>) -> Decision<RegistryReply> {
        let mut events = Vec::new();
        let mut seen = HashSet::new();
        let results = ids
            .into_iter()
            .map(|id| {
                if !self.contains(&id) || !seen.insert(id.clone()) {
                    return Err(EntryRejection::NotFound { id });
                }
                events.push(ServerEvent::EntryDeleted { id: id.clone() });
                Ok(id)
            })
            .collect();
        Decision {
            events,
            reply: RegistryReply::Deleted(results),
        }
    }
}

/// A fresh entry id: the context's random bytes, diversified per batch item.
fn fresh_id(ctx: &Context, index: usize) -> EntryId {
    let mut h = Sha256::new();
    h.update(ctx.random);
    h.update((index as u64).to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    EntryId::from_random_bytes(bytes)
}
