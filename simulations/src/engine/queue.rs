//! The event queue: events in virtual time, ties broken by insertion order, so a run is a
//! function of the scenario and the seed only.
//!
//! Two timing wheels and a heap: 1-ms slots over the next ~16 s (network deliveries, signing),
//! 1,024-ms blocks over the next ~37 h (renewal timers, expiries, audits), a heap beyond. A
//! slot is a FIFO and a block keeps insertion order, so most events cost no heap sift.
//!
//! Order is exactly (time, insertion). The fine wheel covers whole blocks only, so a block
//! moves into it (sorted by time, stably) before any event of that block can be pushed
//! straight into it; likewise a heap event moves into its block (in heap order) before the
//! block can take direct pushes.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Fine slots (1 ms each); a power of two.
const FINE_MS: u64 = 1 << 14;
/// A block is 2^10 ms.
const BLOCK_BITS: u32 = 10;
/// Coarse blocks; a power of two.
const COARSE_BLOCKS: u64 = 1 << 17;

/// A far event.
struct Slot<E> {
    at_ms: u64,
    order: u64,
    event: E,
}

impl<E> PartialEq for Slot<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.order) == (other.at_ms, other.order)
    }
}

impl<E> Eq for Slot<E> {}

impl<E> PartialOrd for Slot<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Slot<E> {
    /// Reversed: the heap's top is the earliest, then the first inserted.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_ms, other.order).cmp(&(self.at_ms, self.order))
    }
}

/// A priority queue of events by (time, insertion order).
pub struct Queue<E> {
    /// Slot `t % FINE_MS` holds the events at `t`, for blocks below `fine_end`.
    fine: Vec<VecDeque<E>>,
    in_fine: usize,
    /// Block `b % COARSE_BLOCKS` holds (time, event) for blocks in `[fine_end, coarse_end)`.
    coarse: Vec<Vec<(u64, E)>>,
    in_coarse: usize,
    far: BinaryHeap<Slot<E>>,
    now: u64,
    order: u64,
    fine_end: u64,
    coarse_end: u64,
}

impl<E> Queue<E> {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        let fine_end = FINE_MS >> BLOCK_BITS;
        Self {
            fine: (0..FINE_MS).map(|_| VecDeque::new()).collect(),
            in_fine: 0,
            coarse: (0..COARSE_BLOCKS).map(|_| Vec::new()).collect(),
            in_coarse: 0,
            far: BinaryHeap::new(),
            now: 0,
            order: 0,
            fine_end,
            coarse_end: fine_end + COARSE_BLOCKS,
        }
    }

    /// Schedules `event` at `at_ms` (an instant already passed means now).
    pub fn push(&mut self, at_ms: u64, event: E) {
        let at_ms = at_ms.max(self.now);
        self.order += 1;
        let block = at_ms >> BLOCK_BITS;
        if block < self.fine_end {
            self.fine[(at_ms % FINE_MS) as usize].push_back(event);
            self.in_fine += 1;
        } else if block < self.coarse_end {
            self.coarse[(block % COARSE_BLOCKS) as usize].push((at_ms, event));
            self.in_coarse += 1;
        } else {
            self.far.push(Slot {
                at_ms,
                order: self.order,
                event,
            });
        }
    }

    /// The earliest event, if any.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        loop {
            if let Some(event) = self.fine[(self.now % FINE_MS) as usize].pop_front() {
                self.in_fine -= 1;
                return Some((self.now, event));
            }
            if self.in_fine > 0 {
                self.now += 1;
            } else if self.in_coarse > 0 {
                // Nothing near: jump to the first block holding something.
                let mut b = self.fine_end;
                while self.coarse[(b % COARSE_BLOCKS) as usize].is_empty() {
                    b += 1;
                }
                self.now = (b << BLOCK_BITS).max(self.now + 1);
            } else {
                self.now = self.far.peek()?.at_ms.max(self.now + 1);
            }
            self.advance();
        }
    }

    /// Moves what the windows now cover: blocks into slots, then heap events into blocks (or
    /// straight into slots after a jump). A block that takes heap events held nothing before
    /// (it could take direct pushes only once the window covered it), so order holds.
    fn advance(&mut self) {
        let fine_end = (self.now + FINE_MS) >> BLOCK_BITS;
        while self.fine_end < fine_end {
            if self.in_coarse == 0 {
                // Nothing to move: skip the empty blocks (a jump may cross many).
                self.fine_end = fine_end;
                break;
            }
            let b = self.fine_end;
            let mut events = std::mem::take(&mut self.coarse[(b % COARSE_BLOCKS) as usize]);
            self.in_coarse -= events.len();
            events.sort_by_key(|(at, _)| *at); // Stable: insertion order within an instant.
            for (at, event) in events {
                self.fine[(at % FINE_MS) as usize].push_back(event);
                self.in_fine += 1;
            }
            self.fine_end += 1;
        }
        self.coarse_end = self.fine_end + COARSE_BLOCKS;
        while self
            .far
            .peek()
            .is_some_and(|s| (s.at_ms >> BLOCK_BITS) < self.coarse_end)
        {
            if let Some(s) = self.far.pop() {
                let block = s.at_ms >> BLOCK_BITS;
                if block < self.fine_end {
                    self.fine[(s.at_ms % FINE_MS) as usize].push_back(s.event);
                    self.in_fine += 1;
                } else {
                    self.coarse[(block % COARSE_BLOCKS) as usize].push((s.at_ms, s.event));
                    self.in_coarse += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;

    #[test]
    fn earliest_first_then_insertion_order() {
        let mut q = Queue::new();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
    }

    #[test]
    fn the_wheel_orders_as_a_heap_would() {
        // Random pushes near and far, interleaved with pops; compare with a sorted model.
        for seed in 1..=4 {
            compare_with_model(seed);
        }
    }

    fn compare_with_model(seed: u64) {
        let mut rng = Rng::new(seed);
        let mut q = Queue::new();
        let mut model: Vec<(u64, u64)> = Vec::new(); // (at, order)
        let (mut order, mut now) = (0u64, 0u64);
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..6_000 {
            if rng.below(3) > 0 {
                // Near (fine wheel), seconds to hours (coarse), days (heap).
                let at = now
                    + match rng.below(6) {
                        0 => rng.between(0, 400_000_000),
                        1 => rng.between(0, 3_000_000),
                        2 => rng.between(0, 40_000),
                        _ => rng.between(0, 50),
                    };
                order += 1;
                q.push(at, order);
                model.push((at, order));
            } else if let Some((at, o)) = q.pop() {
                now = at;
                popped.push((at, o));
                model.sort_unstable();
                expected.push(model.remove(0));
            }
        }
        while let Some((at, o)) = q.pop() {
            popped.push((at, o));
        }
        model.sort_unstable();
        expected.extend(model);
        assert_eq!(popped, expected);
    }
}
