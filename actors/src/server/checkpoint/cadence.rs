//! [`Cadence`]: when a checkpoint is due. Pure: it is told the records the log committed
//! and the time, and answers; the [actor](super::actor) reads the log and signs.
//!
//! A checkpoint is due when there are new records since the last checkpoint (any server's:
//! several servers on one log share the count, so one checkpoint resets every server's and
//! they do not each add their own) and either `every_records` of them have accumulated or
//! `interval` has passed since that checkpoint was signed (or, with none in sight, since the
//! checkpointer started). Checkpoint records do not count, so a checkpoint never covers only
//! another checkpoint and an idle log gets none.

use std::time::Duration;

/// How often checkpoints are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// A checkpoint once this many records followed the last one (0: no count rule).
    pub every_records: u64,
    /// A checkpoint once this long has passed since the last one, if any record followed it
    /// (zero: no time rule). Both rules off: no checkpoints.
    pub interval: Duration,
    /// How often the checkpointer looks at the log (default 1 s); `None`: only when sent a
    /// tick (tests, simulation).
    pub tick: Option<Duration>,
    /// Records read back from the head at start to find the last checkpoint, when the count
    /// rule is off (with it on, `every_records` back is enough).
    pub lookback: u64,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            every_records: 1_000,
            interval: Duration::from_secs(600),
            tick: Some(Duration::from_secs(1)),
            lookback: 10_000,
        }
    }
}

impl CheckpointSettings {
    /// Whether checkpoints are made at all.
    pub fn enabled(&self) -> bool {
        self.every_records > 0 || !self.interval.is_zero()
    }

    /// How far back from the head the last checkpoint is looked for at start.
    pub fn start_window(&self) -> u64 {
        if self.every_records > 0 {
            self.every_records
        } else {
            self.lookback
        }
    }
}

/// What the checkpointer knows of the log: how far it has read, and the records since the
/// last checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cadence {
    settings: CheckpointSettings,
    /// The last seq observed.
    seen_to: u64,
    /// Records observed after the last checkpoint, checkpoints excluded.
    since_last: u64,
    /// When the last checkpoint was signed, or (none seen) when counting started; Unix secs.
    last_at: i64,
}

impl Cadence {
    /// Counting from the record after `seen_to`, at `now` (Unix seconds).
    pub fn new(settings: CheckpointSettings, seen_to: u64, now: i64) -> Self {
        Self {
            settings,
            seen_to,
            since_last: 0,
            last_at: now,
        }
    }

    /// The last seq observed.
    pub fn seen_to(&self) -> u64 {
        self.seen_to
    }

    /// Records since the last checkpoint.
    pub fn since_last(&self) -> u64 {
        self.since_last
    }

    /// Record `seq` committed; `checkpoint_signed_at` is `Some` if it is a checkpoint (any
    /// server's). Seqs at or below the last one observed are ignored.
    pub fn observe(&mut self, seq: u64, checkpoint_signed_at: Option<i64>) {
        if seq <= self.seen_to {
            return;
        }
        self.seen_to = seq;
        match checkpoint_signed_at {
            Some(at) => {
                self.since_last = 0;
                self.last_at = at;
            }
            None => self.since_last += 1,
        }
    }

    /// Whether a checkpoint of the head is due at `now` (Unix seconds).
    pub fn due(&self, now: i64) -> bool {
        if self.since_last == 0 || !self.settings.enabled() {
            return false;
        }
        let by_count =
            self.settings.every_records > 0 && self.since_last >= self.settings.every_records;
        let interval = i64::try_from(self.settings.interval.as_secs()).unwrap_or(i64::MAX);
        let by_time =
            !self.settings.interval.is_zero() && now.saturating_sub(self.last_at) >= interval;
        by_count || by_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn settings(every: u64, interval_secs: u64) -> CheckpointSettings {
        CheckpointSettings {
            every_records: every,
            interval: Duration::from_secs(interval_secs),
            tick: None,
            lookback: 100,
        }
    }

    #[test]
    fn n_records_make_one_checkpoint_due_and_the_checkpoint_resets_the_count() {
        let mut c = Cadence::new(settings(3, 0), 0, T0);
        c.observe(1, None);
        c.observe(2, None);
        assert!(!c.due(T0), "two of three records");
        c.observe(3, None);
        assert!(c.due(T0));
        // The checkpoint (any server's) lands: nothing is due until three more records.
        c.observe(4, Some(T0));
        assert!(!c.due(T0 + 1_000_000));
        assert_eq!(c.since_last(), 0);
        for seq in 5..=7 {
            assert!(!c.due(T0), "before seq {seq}");
            c.observe(seq, None);
        }
        assert!(c.due(T0));
    }

    #[test]
    fn the_interval_makes_a_checkpoint_due_only_with_new_records() {
        let mut c = Cadence::new(settings(0, 60), 10, T0);
        assert!(!c.due(T0 + 3_600), "idle: no records, no checkpoint");
        c.observe(11, None);
        assert!(!c.due(T0 + 59));
        assert!(c.due(T0 + 60));
        c.observe(12, Some(T0 + 60));
        assert!(!c.due(T0 + 500), "idle after the checkpoint");
        c.observe(13, None);
        assert!(!c.due(T0 + 119));
        assert!(c.due(T0 + 120), "measured from the checkpoint's signed_at");
    }

    #[test]
    fn replays_and_checkpoints_alone_change_nothing() {
        let mut c = Cadence::new(settings(2, 60), 0, T0);
        c.observe(1, None);
        c.observe(1, None);
        c.observe(0, None);
        assert_eq!((c.seen_to(), c.since_last()), (1, 1));
        // Another server's checkpoint of seq 1, then only checkpoints: never due.
        c.observe(2, Some(T0));
        c.observe(3, Some(T0 + 10));
        assert!(!c.due(T0 + 10_000));
    }

    #[test]
    fn both_rules_off_means_no_checkpoints() {
        let s = settings(0, 0);
        assert!(!s.enabled());
        let mut c = Cadence::new(s, 0, T0);
        for seq in 1..=50 {
            c.observe(seq, None);
        }
        assert!(!c.due(T0 + 1_000_000));
        assert_eq!(settings(5, 0).start_window(), 5);
        assert_eq!(settings(0, 5).start_window(), 100);
    }
}
