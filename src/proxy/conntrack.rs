//! The proxy's side of the conntrack view and statistics: its counters and flow table as a
//! [`Stats`] snapshot, and the flow journal for `watch_flows`.
//!
//! # Theory of operation
//!
//! Nothing is counted here. [`Proxy::fill_stats`] copies the proxy's own counters
//! ([`super::Counters`]), the flow table's refusals and live flows (by protocol and state, one
//! pass over the table, only when asked) and the reassembler's drops into a [`Stats`] that the
//! runtime completes with the device's and virtual hosts' counters. The flow journal
//! ([`crate::nat::journal`]) records only while [`Proxy::set_flow_journal`] says someone
//! watches; the runtime drains it with [`Proxy::take_flow_events`] once per wake-up.

use std::collections::BTreeMap;

use super::Proxy;
use crate::nat::journal::Event;
use crate::nat::{Proto, State};
use crate::stats::Stats;

/// The states each protocol's flows can be in (so a gauge exists for each, zero or not).
const STATES: [(Proto, &[State]); 3] = [
    (
        Proto::Tcp,
        &[State::Connecting, State::Open, State::HalfClosed],
    ),
    (Proto::Udp, &[State::Active]),
    (Proto::Icmp, &[State::Active]),
];

impl Proxy {
    /// Fill in the proxy's part of `s`: flows, refusals, drops it counts, host errors, DNS
    /// queries.
    pub fn fill_stats(&self, s: &mut Stats) {
        let c = &self.counters;
        let mut flows: BTreeMap<String, BTreeMap<String, u64>> = STATES
            .iter()
            .map(|(p, states)| {
                (
                    p.name().to_owned(),
                    states.iter().map(|st| (st.name().to_owned(), 0)).collect(),
                )
            })
            .collect();
        for (_, e) in self.table.iter() {
            *flows
                .entry(e.key.proto.name().to_owned())
                .or_default()
                .entry(e.state.name().to_owned())
                .or_default() += 1;
        }
        s.flows = flows;
        for (p, n) in [Proto::Tcp, Proto::Udp, Proto::Icmp].iter().zip(c.created) {
            s.flows_created.insert(p.name().to_owned(), n);
        }
        s.flows_created.insert("tcp_spliced".to_owned(), c.spliced);
        s.refused_full = self.table.refused();
        s.refused_rules = c.refused;
        s.refused_policy = self.policy.denied();
        for (reason, n) in [
            ("martian_source", c.martians),
            ("datagram", c.dropped),
            ("early_drop", c.early_drops),
            ("reassembly", self.reassembler.dropped()),
        ] {
            s.drops.insert(reason.to_owned(), n);
        }
        s.host_errors = c.host_errors.to_map();
        s.dns_queries = c.dns_queries;
        s.icmp_too_big_sent = c.too_big_sent;
    }

    /// Record new and closed flows from now on (`true`) or stop and forget them (`false`).
    pub fn set_flow_journal(&mut self, on: bool) {
        let j = self.table.journal_mut();
        if j.enabled() != on {
            j.set_enabled(on);
        }
    }

    /// The flow events since the last call, and how many were lost to the journal's bound.
    pub fn take_flow_events(&mut self) -> (Vec<Event>, u64) {
        let j = self.table.journal_mut();
        if j.is_empty() {
            return (Vec::new(), 0);
        }
        j.take()
    }
}
