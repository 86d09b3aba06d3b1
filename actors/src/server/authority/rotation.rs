//! When to prepare, activate and retire CAs and JWT keys: [`plan`], pure, with SPIRE's timing.
//!
//! For a CA (or JWT key) with validity `[nb, na]` and lifetime `L = na - nb`:
//! - no usable active one: activate the prepared one if there is a usable one, else prepare a
//!   new one and activate it at once;
//! - at `nb + L/2` (`prepare_at`), with nothing prepared: prepare the next one; its trust
//!   anchor (or public key) joins the bundle right away, so relying parties learn it before it
//!   signs anything;
//! - at `nb + 5L/6` (`activate_at`): activate the prepared one; the old one stays in the
//!   bundle, since what it signed is still valid;
//! - a non-active one past its `na`: retire it (it leaves the bundle).
//!
//! The thresholds come from each CA's own validity, so a CA shortened by its upstream's
//! expiry rotates earlier. "Usable" means the key manager could load its key: a CA whose key
//! is lost is replaced as if it had expired (it stays in the bundle until it does).

use std::collections::BTreeSet;

use super::{Authority, SlotStatus};

/// A point in a validity period, as `num/den` of the lifetime (exact, no floats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    /// Numerator.
    pub num: u32,
    /// Denominator (not 0).
    pub den: u32,
}

impl Fraction {
    /// `num/den`.
    pub const fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    /// The instant `num/den` of the way from `not_before` to `not_after` (Unix seconds).
    pub fn point(self, not_before: i64, not_after: i64) -> i64 {
        let lifetime = i128::from(not_after) - i128::from(not_before);
        let offset = lifetime * i128::from(self.num) / i128::from(self.den.max(1));
        i64::try_from(i128::from(not_before) + offset).unwrap_or(i64::MAX)
    }

    /// Whether it is strictly between 0 and 1.
    pub fn is_proper(self) -> bool {
        self.den > 0 && self.num > 0 && self.num < self.den
    }

    fn le(self, other: Fraction) -> bool {
        u64::from(self.num) * u64::from(other.den) <= u64::from(other.num) * u64::from(self.den)
    }
}

/// Rotation timing. Defaults are SPIRE's: prepare at 1/2, activate at 5/6 of the lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationSettings {
    /// When the next CA or key is prepared.
    pub prepare_at: Fraction,
    /// When the prepared one becomes active.
    pub activate_at: Fraction,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            prepare_at: Fraction::new(1, 2),
            activate_at: Fraction::new(5, 6),
        }
    }
}

impl RotationSettings {
    /// Checks `0 < prepare_at <= activate_at < 1`.
    ///
    /// # Errors
    /// A message naming the setting and the rule.
    pub fn validate(&self) -> Result<(), String> {
        for (name, f) in [
            ("prepare_at", self.prepare_at),
            ("activate_at", self.activate_at),
        ] {
            if !f.is_proper() {
                return Err(format!(
                    "rotation {name} = {}/{}: must be a fraction strictly between 0 and 1",
                    f.num, f.den
                ));
            }
        }
        if !self.prepare_at.le(self.activate_at) {
            return Err("rotation prepare_at must not come after activate_at".into());
        }
        Ok(())
    }
}

/// One step of rotation, for the actor to carry out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationAction {
    /// Build a new X.509 CA and record it as prepared; if `activate`, activate it at once.
    PrepareCa {
        /// Whether to activate it right away (no usable active CA, or past `activate_at`).
        activate: bool,
    },
    /// Activate the prepared CA.
    ActivateCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Retire an expired (or unusable prepared) CA.
    RetireCa {
        /// Its authority ID.
        authority_id: String,
    },
    /// Build a new JWT key and record it as prepared; if `activate`, activate it at once.
    PrepareJwtKey {
        /// Whether to activate it right away.
        activate: bool,
    },
    /// Activate the prepared JWT key.
    ActivateJwtKey {
        /// Its kid.
        kid: String,
    },
    /// Retire an expired (or unusable prepared) JWT key.
    RetireJwtKey {
        /// Its kid.
        kid: String,
    },
}

impl RotationAction {
    /// Whether carrying it out needs a new key and certificate (I/O, off the actor thread).
    pub fn needs_build(&self) -> bool {
        matches!(self, Self::PrepareCa { .. } | Self::PrepareJwtKey { .. })
    }
}

/// What to do now: retirements first, then preparation and activation, CAs before JWT keys.
/// `unusable` holds the authority IDs and kids whose private keys cannot be loaded.
pub fn plan(
    state: &Authority,
    now: i64,
    settings: &RotationSettings,
    unusable: &BTreeSet<String>,
) -> Vec<RotationAction> {
    let cas: Vec<View<'_>> = state
        .cas()
        .iter()
        .map(|s| View {
            id: &s.record.authority_id,
            status: s.status,
            not_before: s.record.not_before,
            not_after: s.record.not_after,
        })
        .collect();
    let jwt: Vec<View<'_>> = state
        .jwt_keys()
        .iter()
        .map(|s| View {
            id: &s.record.kid,
            status: s.status,
            not_before: s.record.not_before,
            not_after: s.record.not_after,
        })
        .collect();
    let mut actions: Vec<RotationAction> = steps(&cas, now, settings, unusable)
        .into_iter()
        .map(|step| match step {
            Step::Retire(id) => RotationAction::RetireCa { authority_id: id },
            Step::Prepare { activate } => RotationAction::PrepareCa { activate },
            Step::Activate(id) => RotationAction::ActivateCa { authority_id: id },
        })
        .collect();
    actions.extend(
        steps(&jwt, now, settings, unusable)
            .into_iter()
            .map(|step| match step {
                Step::Retire(kid) => RotationAction::RetireJwtKey { kid },
                Step::Prepare { activate } => RotationAction::PrepareJwtKey { activate },
                Step::Activate(kid) => RotationAction::ActivateJwtKey { kid },
            }),
    );
    actions
}

/// A CA or a JWT key, as far as timing goes.
struct View<'a> {
    id: &'a str,
    status: SlotStatus,
    not_before: i64,
    not_after: i64,
}

enum Step {
    Retire(String),
    Prepare { activate: bool },
    Activate(String),
}

fn steps(
    slots: &[View<'_>],
    now: i64,
    settings: &RotationSettings,
    unusable: &BTreeSet<String>,
) -> Vec<Step> {
    let expired = |v: &View<'_>| now > v.not_after;
    let usable = |v: &View<'_>| !unusable.contains(v.id);
    let mut steps = Vec::new();

    // A prepared one that can never sign (expired or keyless) is dropped, like an expired old.
    for v in slots {
        let dead = match v.status {
            SlotStatus::Active => false,
            SlotStatus::Old => expired(v),
            SlotStatus::Prepared => expired(v) || !usable(v),
        };
        if dead {
            steps.push(Step::Retire(v.id.to_owned()));
        }
    }
    let prepared = slots
        .iter()
        .find(|v| v.status == SlotStatus::Prepared && !expired(v) && usable(v));
    let active = slots
        .iter()
        .find(|v| v.status == SlotStatus::Active && !expired(v) && usable(v));

    match (active, prepared) {
        (None, Some(next)) => steps.push(Step::Activate(next.id.to_owned())),
        (None, None) => steps.push(Step::Prepare { activate: true }),
        (Some(current), next) => {
            let activate_at = settings
                .activate_at
                .point(current.not_before, current.not_after);
            let prepare_at = settings
                .prepare_at
                .point(current.not_before, current.not_after);
            match next {
                Some(next) if now >= activate_at => steps.push(Step::Activate(next.id.to_owned())),
                Some(_) => {}
                None if now >= prepare_at => steps.push(Step::Prepare {
                    activate: now >= activate_at,
                }),
                None => {}
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests;
