//! The most recent committed records, kept in memory so that subscriptions and reads on this
//! server rarely go to the database.

use std::collections::VecDeque;

use crate::record::Record;

/// A contiguous run of committed records, at most `capacity` of them, the newest kept.
#[derive(Debug)]
pub(crate) struct RecentRecords {
    records: VecDeque<Record>,
    capacity: usize,
}

impl RecentRecords {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            records: VecDeque::new(),
            capacity,
        }
    }

    /// Adds `batch` (contiguous, committed). Records already held are skipped; a batch that
    /// starts past the end (records this server did not see) replaces the run, so the run
    /// never has a hole.
    pub(crate) fn add(&mut self, batch: &[Record]) {
        if self.capacity == 0 {
            return;
        }
        for record in batch {
            match self.records.back() {
                Some(last) if record.seq <= last.seq => continue,
                Some(last) if record.seq != last.seq + 1 || record.prev_hash != last.hash => {
                    self.records.clear();
                }
                _ => {}
            }
            self.records.push_back(record.clone());
            if self.records.len() > self.capacity {
                self.records.pop_front();
            }
        }
    }

    /// Up to `limit` records from `from` on, if the run holds `from`; otherwise none.
    pub(crate) fn range(&self, from: u64, limit: usize) -> Vec<Record> {
        let Some(first) = self.records.front() else {
            return Vec::new();
        };
        let Some(offset) = from
            .checked_sub(first.seq)
            .and_then(|o| usize::try_from(o).ok())
        else {
            return Vec::new();
        };
        self.records
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Digest32, NewRecord};

    fn chain(n: u64) -> Vec<Record> {
        let mut prev = Digest32::GENESIS;
        (1..=n)
            .map(|seq| {
                let r = Record::seal(
                    NewRecord {
                        kind: "K".into(),
                        schema_version: 1,
                        payload: vec![seq as u8],
                    },
                    seq,
                    0,
                    prev,
                );
                prev = r.hash;
                r
            })
            .collect()
    }

    #[test]
    fn keeps_a_contiguous_bounded_run() {
        let all = chain(10);
        let mut recent = RecentRecords::new(4);
        recent.add(&all[..3]);
        recent.add(&all[1..6]);
        let seqs = |v: Vec<Record>| v.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(recent.range(3, 10)), [3, 4, 5, 6]);
        assert!(recent.range(2, 10).is_empty(), "evicted");
        assert!(recent.range(7, 10).is_empty(), "not yet seen");
        // A jump past the end restarts the run: no hole inside it.
        recent.add(&all[8..]);
        assert_eq!(seqs(recent.range(9, 10)), [9, 10]);
        assert!(recent.range(6, 10).is_empty());
        assert_eq!(seqs(recent.range(9, 1)), [9]);
    }
}
