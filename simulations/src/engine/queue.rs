//! The event queue: events in virtual time, ties broken by insertion order, so a run is a
//! function of the scenario and the seed only.
//!
//! A timing wheel of 1-ms slots over the next [`WINDOW_MS`], with a heap for later events:
//! most events (network deliveries, signing) land within seconds, and a slot is a FIFO, so
//! they cost no heap sift. Order is exactly (time, insertion): a far event moves into its slot
//! as soon as the window reaches it, which is before any event for that slot can be pushed
//! directly (a direct push needs the window to cover the slot already), and far events move
//! in heap order.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// Width of the wheel, ms (a power of two).
const WINDOW_MS: u64 = 1 << 14;

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
    /// Slot `t % WINDOW_MS` holds the events at `t`, for `t` in `[now, now + WINDOW_MS)`.
    wheel: Vec<VecDeque<E>>,
    in_wheel: usize,
    far: BinaryHeap<Slot<E>>,
    now: u64,
    order: u64,
}

impl<E> Queue<E> {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        Self {
            wheel: (0..WINDOW_MS).map(|_| VecDeque::new()).collect(),
            in_wheel: 0,
            far: BinaryHeap::new(),
            now: 0,
            order: 0,
        }
    }

    /// Schedules `event` at `at_ms` (an instant already passed means now).
    pub fn push(&mut self, at_ms: u64, event: E) {
        let at_ms = at_ms.max(self.now);
        self.order += 1;
        if at_ms < self.now + WINDOW_MS {
            self.wheel[(at_ms % WINDOW_MS) as usize].push_back(event);
            self.in_wheel += 1;
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
            if let Some(event) = self.wheel[(self.now % WINDOW_MS) as usize].pop_front() {
                self.in_wheel -= 1;
                return Some((self.now, event));
            }
            if self.in_wheel == 0 {
                // Nothing near: jump to the first far event.
                self.now = self.far.peek()?.at_ms;
            } else {
                self.now += 1;
            }
            while self
                .far
                .peek()
                .is_some_and(|s| s.at_ms < self.now + WINDOW_MS)
            {
                if let Some(s) = self.far.pop() {
                    self.wheel[(s.at_ms % WINDOW_MS) as usize].push_back(s.event);
                    self.in_wheel += 1;
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
        let mut rng = Rng::new(3);
        let mut q = Queue::new();
        let mut model: Vec<(u64, u64)> = Vec::new(); // (at, order)
        let (mut order, mut now) = (0u64, 0u64);
        let mut popped = Vec::new();
        let mut expected = Vec::new();
        for _ in 0..5_000 {
            if rng.below(3) > 0 {
                let at = now
                    + if rng.below(4) == 0 {
                        rng.between(0, 100_000)
                    } else {
                        rng.between(0, 50)
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
