//! Which flows need a pass, and when their smoltcp sockets next need the clock.
//!
//! # Theory of operation
//!
//! A pass over a flow (move bytes between its host socket and its smoltcp socket, let smoltcp
//! transmit) is only useful after news: a guest segment for it, an event on its host socket, or
//! a smoltcp deadline (retransmission, keep-alive, the stall timeout). [`Work`] collects the
//! flows with news since the last pass, each once (a mark per flow id), and keeps every flow's
//! next smoltcp deadline in an ordered set, so that finding the due ones and the earliest one
//! costs O(log n) instead of a scan of every flow. Idle flows therefore cost nothing per wake-up
//! (a thousand idle connections used to halve throughput).
//!
//! Flow ids are slots reused after a flow closes; [`Work::forget`] clears a slot's mark and
//! deadline when its flow goes, so a new flow in the slot starts clean. A stale mark would only
//! cost one needless pass.

use std::collections::BTreeSet;

use smoltcp::time::Instant;

use crate::nat::FlowId;

/// Flows with news, and smoltcp deadlines.
#[derive(Debug, Default)]
pub struct Work {
    /// Flows to pass over, in the order their news came.
    dirty: Vec<FlowId>,
    /// `marked[id]`: `id` is in `dirty`.
    marked: Vec<bool>,
    /// (deadline in microseconds, flow).
    timers: BTreeSet<(i64, FlowId)>,
    /// `deadline[id]`: the entry of `id` in `timers`.
    deadline: Vec<Option<i64>>,
}

impl Work {
    /// `id` has news: pass over it at the next [`Work::take_dirty`].
    pub fn mark(&mut self, id: FlowId) {
        if self.marked.len() <= id {
            self.marked.resize(id + 1, false);
        }
        if !self.marked[id] {
            self.marked[id] = true;
            self.dirty.push(id);
        }
    }

    /// Mark every flow whose deadline has come (and drop those deadlines).
    pub fn mark_due(&mut self, now: Instant) {
        let now = now.total_micros();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(d) = self.deadline.get_mut(id) {
                *d = None;
            }
            self.mark(id);
        }
    }

    /// Move the flows marked since the last call into `out` (emptied first), each once, in
    /// marking order. The two vectors swap, so neither allocates once they have grown.
    pub fn take_dirty(&mut self, out: &mut Vec<FlowId>) {
        out.clear();
        std::mem::swap(&mut self.dirty, out);
        for &id in out.iter() {
            self.marked[id] = false;
        }
    }

    /// `id`'s smoltcp socket next needs the clock at `at` (`None`: only news will wake it).
    pub fn set_deadline(&mut self, id: FlowId, at: Option<Instant>) {
        if self.deadline.len() <= id {
            self.deadline.resize(id + 1, None);
        }
        let at = at.map(|t| t.total_micros());
        if self.deadline[id] == at {
            return;
        }
        if let Some(old) = self.deadline[id].take() {
            self.timers.remove(&(old, id));
        }
        if let Some(at) = at {
            self.timers.insert((at, id));
            self.deadline[id] = Some(at);
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| Instant::from_micros(at))
    }

    /// Flow `id` is gone: drop its mark and deadline.
    pub fn forget(&mut self, id: FlowId) {
        self.set_deadline(id, None);
        if self.marked.get(id) == Some(&true) {
            self.marked[id] = false;
            self.dirty.retain(|&d| d != id);
        }
    }

    /// Number of flows with a deadline (for tests and diagnostics).
    pub fn timers(&self) -> usize {
        self.timers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut Work) -> Vec<FlowId> {
        let mut out = vec![99];
        w.take_dirty(&mut out);
        out
    }

    #[test]
    fn marks_are_taken_once_in_order() {
        let mut w = Work::default();
        w.mark(3);
        w.mark(1);
        w.mark(3);
        assert_eq!(take(&mut w), vec![3, 1]);
        assert!(take(&mut w).is_empty());
        w.mark(3);
        assert_eq!(take(&mut w), vec![3]);
    }

    #[test]
    fn due_deadlines_mark_their_flows() {
        let mut w = Work::default();
        w.set_deadline(1, Some(Instant::from_millis(30)));
        w.set_deadline(2, Some(Instant::from_millis(10)));
        w.set_deadline(4, Some(Instant::from_millis(20)));
        assert_eq!(w.next_deadline(), Some(Instant::from_millis(10)));
        w.mark_due(Instant::from_millis(20));
        assert_eq!(take(&mut w), vec![2, 4]);
        assert_eq!(w.next_deadline(), Some(Instant::from_millis(30)));
        // Moving a deadline replaces it.
        w.set_deadline(1, Some(Instant::from_millis(5)));
        assert_eq!(w.timers(), 1);
        w.mark_due(Instant::from_millis(5));
        assert_eq!(take(&mut w), vec![1]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn forgotten_flows_leave_nothing_behind() {
        let mut w = Work::default();
        w.set_deadline(7, Some(Instant::from_millis(1)));
        w.mark(7);
        w.mark(8);
        w.forget(7);
        assert_eq!(w.timers(), 0);
        assert_eq!(take(&mut w), vec![8]);
        w.mark_due(Instant::from_millis(100));
        assert!(take(&mut w).is_empty());
        // A new flow in slot 7 starts clean and can be marked again.
        w.mark(7);
        assert_eq!(take(&mut w), vec![7]);
    }
}
