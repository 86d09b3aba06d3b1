//! Folding committed events into the registry.

use super::Registry;
use crate::server::events::ServerEvent;

impl Registry {
    /// Folds one committed event; events of other aggregates are ignored.
    pub(crate) fn apply_event(&mut self, event: &ServerEvent) {
        match event {
            ServerEvent::EntryCreated(e) | ServerEvent::EntryUpdated(e) => self.insert(e.clone()),
            ServerEvent::EntryDeleted { id } => {
                self.remove(id);
            }
            _ => {}
        }
    }
}
