//! [`Admission`]: room reserved in the signer's queue before work is accepted, by priority
//! (see [`super::priority`]).

use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::monotonic_now;
use super::priority::Priority;
use super::{SignError, Signer, SignerSettings};

/// A reservation of queue room; released when dropped.
#[derive(Debug)]
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
    _bulk_permit: Option<OwnedSemaphorePermit>,
    pub(super) priority: Priority,
    units: usize,
    /// When it was admitted: signing latency counts from here, so queueing shows.
    pub(super) admitted_at: Instant,
}

impl Signer {
    /// Reserves queue room for `units` items, or says the queue is full. Synchronous, so an
    /// actor can admit in its handler and sign in a task. A refusal here is not counted in
    /// [`Signer::metrics`] (the kind of SVID is not known here); the `sign_*`/`mint_*` methods
    /// that admit for themselves count theirs.
    ///
    /// # Errors
    /// [`SignError::Overloaded`] naming the limit.
    pub fn admit(&self, units: usize) -> Result<Admission, SignError> {
        self.admit_as(units, Priority::OnDemand)
    }

    /// [`Signer::admit`] at a priority: bulk work is refused once the queue holds
    /// `max_queued - on_demand_reserve`, on-demand work only at `max_queued`.
    ///
    /// # Errors
    /// [`SignError::Overloaded`] naming the limit that applies.
    pub fn admit_as(&self, units: usize, priority: Priority) -> Result<Admission, SignError> {
        if units == 0 {
            return Ok(Admission {
                _permit: None,
                _bulk_permit: None,
                priority,
                units,
                admitted_at: monotonic_now(),
            });
        }
        let overloaded = |limit| SignError::Overloaded {
            requested: units,
            limit,
        };
        let n = u32::try_from(units).map_err(|_| overloaded(self.limit()))?;
        let bulk_permit = match priority {
            Priority::OnDemand => None,
            Priority::Bulk => Some(
                self.inner
                    .bulk_queue
                    .clone()
                    .try_acquire_many_owned(n)
                    .map_err(|_| overloaded(bulk_limit(&self.inner.settings)))?,
            ),
        };
        let permit = self
            .inner
            .queue
            .clone()
            .try_acquire_many_owned(n)
            .map_err(|_| overloaded(self.limit()))?;
        Ok(Admission {
            _permit: Some(permit),
            _bulk_permit: bulk_permit,
            priority,
            units,
            admitted_at: monotonic_now(),
        })
    }

    /// [`Signer::admit`] for a batch of `len` CSRs, refusing one over `max_batch` first.
    ///
    /// # Errors
    /// [`SignError::BatchTooLarge`] or [`SignError::Overloaded`].
    pub fn admit_batch(&self, len: usize) -> Result<Admission, SignError> {
        self.check_batch(len)?;
        self.admit(len)
    }
}

impl Admission {
    /// Items it reserves room for.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        self.priority
    }
}

/// How many items bulk work may have queued: the queue less the on-demand reserve, the
/// reserve being at most half the queue (so a small `max_queued` does not starve renewals).
pub(super) fn bulk_limit(settings: &SignerSettings) -> usize {
    let reserve = settings.on_demand_reserve.min(settings.max_queued / 2);
    settings
        .max_queued
        .saturating_sub(reserve)
        .clamp(1, Semaphore::MAX_PERMITS)
}
