//! Connection counts, all callers and per uid, against the caps of a [`super::PeerPolicy`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// All callers together hold the most connections allowed.
    Total,
    /// This uid holds the most connections allowed per uid.
    PerUid,
}

/// Open connections, counted against the caps.
#[derive(Debug, Clone)]
pub struct Slots {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_uid: usize,
}

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Slots {
    /// Slots for `max_total` connections, at most `max_per_uid` per uid.
    pub fn new(max_total: usize, max_per_uid: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_uid,
        }
    }

    /// Takes a slot for `uid`, or says which cap is reached.
    pub fn try_acquire(&self, uid: u32) -> Result<Slot, Full> {
        let mut c = lock(&self.counts);
        if c.total >= self.max_total {
            return Err(Full::Total);
        }
        let mine = c.per_uid.entry(uid).or_default();
        if *mine >= self.max_per_uid {
            return Err(Full::PerUid);
        }
        *mine += 1;
        c.total += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            uid,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // The counts stay consistent across a panic elsewhere: keep using them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_and_total_caps_and_release() {
        let slots = Slots::new(3, 2);
        let a1 = slots.try_acquire(1).unwrap();
        let _a2 = slots.try_acquire(1).unwrap();
        assert_eq!(slots.try_acquire(1).unwrap_err(), Full::PerUid);
        let _b1 = slots.try_acquire(2).unwrap();
        assert_eq!(slots.try_acquire(3).unwrap_err(), Full::Total);
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _a3 = slots.try_acquire(1).unwrap();
    }
}
