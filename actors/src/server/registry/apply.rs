//! Folding committed events into the registry.

use std::sync::Arc;

use tessera_identity::RegistrationEntry;

use super::Registry;
use crate::server::events::ServerEvent;

impl Registry {
    /// Folds a created or updated entry (the fold of `EntryCreated` / `EntryUpdated`).
    pub(crate) fn insert_entry(&mut self, e: RegistrationEntry) {
        self.insert(Arc::new(e));
    }

    /// Folds one committed event; events of other aggregates are ignored.
    pub(crate) fn apply_event(&mut self, event: &ServerEvent) {
        match event {
            ServerEvent::EntryCreated(e) | ServerEvent::EntryUpdated(e) => {
                self.insert(Arc::new(e.clone()));
            }
            ServerEvent::EntryDeleted { id } => {
                self.remove(id);
            }
            ServerEvent::EntryExpired { id, expires_at }
                if self.pruned_by(id, *expires_at).is_some() =>
            {
                self.remove(id);
            }
            _ => {}
        }
    }
}
