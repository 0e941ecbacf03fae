//! The egress policy's hook in the data plane.
//!
//! # Theory of operation
//!
//! [`outbound`] is the one place a guest destination becomes a host destination: it asks the
//! translation rules ([`crate::nat::Rules::outbound`]) where the flow goes, then asks the
//! egress policy ([`crate::policy::Policy`]) whether it may go there, before any host socket is
//! made. TCP SYNs, ICMP echo requests and *every* UDP datagram pass through it (a UDP flow is
//! endpoint-independent: one host socket serves all the remotes of a guest port, so a denied
//! remote must be refused on an existing flow too). A denial is counted, logged at debug level
//! with the 5-tuple at most [`crate::policy::DENIAL_LOGS_PER_SECOND`] times a second, and
//! turned into [`Refusal::Denied`], which the callers answer with a RST (TCP, unless
//! `--deny-icmp-reply`) or ICMP administratively prohibited.
//!
//! Changing the policy at run time ([`Proxy::take_policy`] / [`Proxy::set_policy`], used by
//! the API) affects new flows and later UDP datagrams only; [`Proxy::kill_denied`] (the API's
//! `kill_matching`) closes the open flows the new policy denies: TCP with a RST both ways, UDP
//! and ICMP flows by dropping their host sockets. Port-forward connections are inbound and
//! never subject to the egress policy.

use std::net::SocketAddr;

use log::{debug, warn};

use super::{Env, Flow, Proxy};
use crate::config::Config;
use crate::nat::{Proto, Refusal};
use crate::policy::Policy;

/// The policy the configuration asks for. `app` has validated it at start-up (with the host's
/// addresses for `--deny-private`); should it still not build, everything is denied rather
/// than nothing (fail closed).
pub fn initial(cfg: &Config) -> Policy {
    Policy::new(&cfg.policy).unwrap_or_else(|e| {
        warn!("egress policy: {e}; denying every outbound flow");
        let closed = crate::policy::Spec {
            default_deny: true,
            ..Default::default()
        };
        Policy::new(&closed).unwrap_or_default()
    })
}

/// Where a guest flow of `proto` from `src` to `dst` goes on the host, if the translation rules
/// and the egress policy both allow it.
pub(crate) fn outbound(
    env: &mut Env<'_>,
    proto: Proto,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<SocketAddr, Refusal> {
    let target = env.rules.outbound(proto, dst, &env.ns)?;
    if env.policy.is_open() {
        return Ok(target);
    }
    let dns = env.rules.is_dns(dst.ip());
    if let Err(denial) = env.policy.check(proto, target, dns) {
        if env.policy.note_denial(env.now_ms) {
            let by = match denial.id {
                Some(id) => format!("rule {id}"),
                None => "the default".to_owned(),
            };
            debug!(
                "{} {src} -> {dst} ({target}) denied by the egress policy ({by})",
                proto.name()
            );
        }
        return Err(Refusal::Denied);
    }
    Ok(target)
}

impl Proxy {
    /// Take the policy out (for the API to change it); put it back with [`Proxy::set_policy`].
    /// Meanwhile the proxy holds an open policy, so nothing may run in between.
    pub fn take_policy(&mut self) -> Policy {
        std::mem::take(&mut self.policy)
    }

    /// Install the (changed) policy.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Close every outbound flow the current policy denies: TCP with a RST to both sides, UDP
    /// and ICMP echo flows by dropping them. Returns how many were closed.
    pub fn kill_denied(&mut self) -> usize {
        let mut doomed = Vec::new();
        for (id, e) in self.table.iter() {
            // The denying rule's id (None: the default), if the policy denies it.
            let denied = |target: SocketAddr, guest_dst: SocketAddr| {
                let dns = self.rules.is_dns(guest_dst.ip());
                self.policy
                    .check(e.key.proto, target, dns)
                    .err()
                    .map(|d| d.id)
            };
            let kill = match self.flows.get(id) {
                Some(Some(Flow::Tcp(f))) if f.is_outbound() => denied(e.target, e.key.remote),
                Some(Some(Flow::Udp(f))) => f.peers().iter().find_map(|&(t, d)| denied(t, d)),
                Some(Some(Flow::Icmp(_))) => denied(e.target, e.target),
                _ => None,
            };
            if let Some(rule) = kill {
                doomed.push((id, e.key.proto, rule));
            }
        }
        for &(id, proto, rule) in &doomed {
            let reason = crate::nat::journal::CloseReason::Policy { rule };
            self.table.set_close_reason(id, reason);
            debug!(
                "{} flow {id} closed: the egress policy now denies it",
                proto.name()
            );
            match self.flows.get_mut(id) {
                Some(Some(Flow::Tcp(f))) => {
                    f.abort();
                    self.work.mark(id);
                }
                _ => Proxy::close(&mut self.table, &mut self.flows, &mut self.work, id, reason),
            }
        }
        doomed.len()
    }
}
