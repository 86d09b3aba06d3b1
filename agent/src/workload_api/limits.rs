//! Bounds of the Workload API: what one caller, and all callers together, may hold open. The
//! JWT-SVID audience bounds are the ones the server's agent API applies to the agent's mint
//! requests (`tessera_edge::limits`: same keys, same defaults), so a request the agent accepts
//! from a workload is never refused by the server for its audiences.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_edge::limits::AudienceLimits;

use crate::config::file::LimitsSection;

/// Bounds on what workloads control; each is a key of `[limits]` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Streams open at once, all callers.
    pub max_streams: usize,
    /// Streams open at once per caller uid.
    pub max_streams_per_uid: usize,
    /// Concurrent requests (HTTP/2 streams) on one connection.
    pub max_requests_per_connection: u32,
    /// Largest request message, bytes.
    pub max_request_bytes: usize,
    /// Most audiences in one FetchJWTSVID.
    pub max_audiences: usize,
    /// Longest audience, bytes.
    pub max_audience_len: usize,
    /// Longest token ValidateJWTSVID accepts, bytes.
    pub max_jwt_bytes: usize,
    /// Longest workload attestation.
    pub attestation_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let l = LimitsSection::default();
        Self {
            max_streams: l.max_streams,
            max_streams_per_uid: l.max_streams_per_uid,
            max_requests_per_connection: l.max_requests_per_connection,
            max_request_bytes: l.max_request_bytes,
            max_audiences: l.max_audiences,
            max_audience_len: l.max_audience_len,
            max_jwt_bytes: l.max_jwt_bytes,
            attestation_timeout: l.attestation_timeout,
        }
    }
}

impl Limits {
    /// The audience bounds, as the shared definition checks them.
    pub fn audiences(&self) -> AudienceLimits {
        AudienceLimits {
            max_audiences: self.max_audiences,
            max_audience_len: self.max_audience_len,
        }
    }
}

/// A stream refused because a bound is reached. Answered `ResourceExhausted`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamLimitError {
    /// `limits.max_streams` streams are open.
    #[error("the agent serves {max} Workload API streams already (limits.max_streams); close one or retry later")]
    Total {
        /// The limit.
        max: usize,
    },
    /// The caller's uid holds `limits.max_streams_per_uid` streams.
    #[error("uid {uid} holds {max} Workload API streams already (limits.max_streams_per_uid); close one or retry later")]
    PerUid {
        /// The caller's uid.
        uid: u32,
        /// The limit.
        max: usize,
    },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

/// Counts open streams against the limits.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    max_per_uid: usize,
}

/// One open stream; dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl StreamSlots {
    /// Slots for `max_total` streams, at most `max_per_uid` per uid.
    pub fn new(max_total: usize, max_per_uid: usize) -> Self {
        Self {
            counts: Arc::default(),
            max_total,
            max_per_uid,
        }
    }

    /// Takes a slot for `uid`, or says which limit is reached.
    pub fn try_acquire(&self, uid: u32) -> Result<StreamSlot, StreamLimitError> {
        let mut c = lock(&self.counts);
        if c.total >= self.max_total {
            return Err(StreamLimitError::Total {
                max: self.max_total,
            });
        }
        let mine = c.per_uid.entry(uid).or_default();
        if *mine >= self.max_per_uid {
            return Err(StreamLimitError::PerUid {
                uid,
                max: self.max_per_uid,
            });
        }
        *mine += 1;
        c.total += 1;
        Ok(StreamSlot {
            counts: self.counts.clone(),
            uid,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

fn lock(m: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Counts stay consistent across a panic elsewhere: keep using them.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_defaults_are_the_shared_ones() {
        assert_eq!(Limits::default().audiences(), AudienceLimits::default());
    }

    #[test]
    fn per_uid_and_total_bounds_and_release() {
        let slots = StreamSlots::new(3, 2);
        let a1 = slots.try_acquire(1).unwrap();
        let _a2 = slots.try_acquire(1).unwrap();
        assert_eq!(
            slots.try_acquire(1).unwrap_err(),
            StreamLimitError::PerUid { uid: 1, max: 2 }
        );
        let _b1 = slots.try_acquire(2).unwrap();
        assert_eq!(
            slots.try_acquire(3).unwrap_err(),
            StreamLimitError::Total { max: 3 }
        );
        assert_eq!(slots.open(), 3);
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _a3 = slots.try_acquire(1).unwrap();
        assert!(slots
            .try_acquire(3)
            .unwrap_err()
            .to_string()
            .contains("limits.max_streams"));
    }
}
