//! The flow journal: new and closed flows, for `watch_flows` subscribers.
//!
//! # Theory of operation
//!
//! The [`super::Table`] records an [`Event`] here whenever a flow is inserted or removed, but
//! only while the journal is enabled (the API server enables it while it has at least one
//! watcher; with none, recording costs one branch). The runtime drains the journal once per
//! wake-up ([`Journal::take`]) and hands the events to the API server, which renders them for
//! its watchers.
//!
//! The journal is bounded ([`MAX_JOURNAL_EVENTS`]): events beyond the bound between two drains
//! are not kept but counted ([`Journal::take`] returns how many were lost), so a flood of new
//! flows can never make the journal grow without limit. Pure data: no I/O, no clock reads.

use super::{Entry, FlowId};

/// Events kept between two drains at most. A drain happens every wake-up of the event loop,
/// which handles at most 64 guest frames and a batch of host events, so a few thousand is far
/// more than one wake-up creates; beyond it events are counted as lost, never queued.
pub const MAX_JOURNAL_EVENTS: usize = 4096;

/// Why a flow left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The protocol finished it: TCP closed or reset by either side, a UDP or ICMP socket error.
    Done,
    /// Idle past its lifetime (UDP, ICMP echo, a spliced connect).
    Expired,
    /// Reclaimed to make room for a new flow while the table was under pressure.
    EarlyDrop,
    /// The host connect failed (the flow never reached `open`).
    ConnectFailed,
    /// Setting up the flow's host side failed, before it carried traffic.
    SetupFailed,
    /// A change of the egress policy denied it (`kill_matching`): the rule that denies it,
    /// or `None` for the policy's default.
    Policy {
        /// Id of the denying rule.
        rule: Option<u64>,
    },
}

impl CloseReason {
    /// Lower-case name for the API.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Done => "done",
            CloseReason::Expired => "expired",
            CloseReason::EarlyDrop => "early_drop",
            CloseReason::ConnectFailed => "connect_failed",
            CloseReason::SetupFailed => "setup_failed",
            CloseReason::Policy { .. } => "policy",
        }
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A flow was inserted (its entry as it was then).
    New(FlowId, Entry),
    /// A flow was removed (its entry with its final counters).
    Closed(FlowId, Entry, CloseReason),
}

/// The bounded event log. See the module documentation.
#[derive(Debug, Default)]
pub struct Journal {
    enabled: bool,
    events: Vec<Event>,
    lost: u64,
}

impl Journal {
    /// Start or stop recording; stopping discards what was recorded.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.events = Vec::new();
            self.lost = 0;
        }
    }

    /// Whether events are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Record `ev` if enabled and there is room (else count it lost). `ev` is built only when
    /// it will be kept.
    pub fn record(&mut self, ev: impl FnOnce() -> Event) {
        if !self.enabled {
            return;
        }
        if self.events.len() >= MAX_JOURNAL_EVENTS {
            self.lost += 1;
            return;
        }
        self.events.push(ev());
    }

    /// Whether events wait to be taken.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.lost == 0
    }

    /// Take the recorded events and the number lost since the last call.
    pub fn take(&mut self) -> (Vec<Event>, u64) {
        (
            std::mem::take(&mut self.events),
            std::mem::replace(&mut self.lost, 0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{Key, State};

    fn entry() -> Entry {
        let k = Key::udp("10.0.2.100:5000".parse().unwrap());
        Entry {
            key: k,
            target: k.remote,
            host_local: None,
            state: State::Active,
            bytes_out: 0,
            bytes_in: 0,
            packets_out: 0,
            packets_in: 0,
            created_ms: 0,
            active_ms: 0,
        }
    }

    #[test]
    fn disabled_records_nothing() {
        let mut j = Journal::default();
        j.record(|| Event::New(1, entry()));
        assert!(j.is_empty());
        assert_eq!(j.take(), (vec![], 0));
    }

    #[test]
    fn bounded_and_counts_losses() {
        let mut j = Journal::default();
        j.set_enabled(true);
        for i in 0..MAX_JOURNAL_EVENTS + 5 {
            j.record(|| Event::New(i, entry()));
        }
        let (evs, lost) = j.take();
        assert_eq!(evs.len(), MAX_JOURNAL_EVENTS);
        assert_eq!(lost, 5);
        assert!(j.is_empty());
        j.record(|| Event::Closed(3, entry(), CloseReason::Expired));
        assert!(!j.is_empty());
        j.set_enabled(false);
        assert!(j.is_empty());
    }

    #[test]
    fn reason_names() {
        assert_eq!(CloseReason::EarlyDrop.name(), "early_drop");
        assert_eq!(CloseReason::ConnectFailed.name(), "connect_failed");
    }
}
