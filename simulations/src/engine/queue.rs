//! The event queue: events in virtual time, ties broken by insertion order, so a run is a
//! function of the scenario and the seed only.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A scheduled item.
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
    heap: BinaryHeap<Slot<E>>,
    order: u64,
}

impl<E> Queue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            order: 0,
        }
    }

    /// Schedules `event` at `at_ms`.
    pub fn push(&mut self, at_ms: u64, event: E) {
        self.order += 1;
        self.heap.push(Slot {
            at_ms,
            order: self.order,
            event,
        });
    }

    /// The earliest event, if any.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        self.heap.pop().map(|s| (s.at_ms, s.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
