//! `[audit]`: signed checkpoints of the event log. A checkpoint is due after
//! `checkpoint_every_records` records or `checkpoint_interval`, whichever comes first; either
//! trigger is off at 0.
//!
//! ```toml
//! [audit]
//! checkpoint_every_records = 1000   # 0: never by count
//! checkpoint_interval = "10m"       # "0s": never by time
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{duration, invalid, ConfigError};

/// Records between checkpoints by default.
pub const DEFAULT_CHECKPOINT_EVERY_RECORDS: u64 = 1000;
/// Time between checkpoints by default.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(600);
/// Shortest `checkpoint_interval` other than 0: each checkpoint is a signature and a record.
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// `[audit]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Records appended between two checkpoints; 0: never by count.
    pub checkpoint_every_records: u64,
    /// Longest time between two checkpoints; `"0s"`: never by time.
    #[serde(deserialize_with = "duration::deserialize")]
    pub checkpoint_interval: Duration,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_every_records: DEFAULT_CHECKPOINT_EVERY_RECORDS,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

/// The validated `[audit]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditConfig {
    /// Records appended between two checkpoints; 0: never by count.
    pub checkpoint_every_records: u64,
    /// Longest time between two checkpoints; zero: never by time.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_records: DEFAULT_CHECKPOINT_EVERY_RECORDS,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

impl AuditSection {
    /// Checks the section.
    pub fn config(&self) -> Result<AuditConfig, ConfigError> {
        let i = self.checkpoint_interval;
        if !i.is_zero() && i < MIN_CHECKPOINT_INTERVAL {
            return Err(invalid(
                "audit.checkpoint_interval",
                duration::format_duration(i),
                "must be \"0s\" (no checkpoint by time) or at least \"1s\", e.g. \"10m\"",
            ));
        }
        Ok(AuditConfig {
            checkpoint_every_records: self.checkpoint_every_records,
            checkpoint_interval: i,
        })
    }
}
