//! Criterion micro-benchmark of egress policy evaluation ([`tapir::policy::Policy::check`]).
//!
//! What it measures: one `Policy::check` of a TCP flow to 198.51.100.7:443 with 0 rules (the
//! default only) and with 100 rules none of which matches (the worst case: every rule is
//! looked at before the default decides). The 100 rules mix prefix lengths, port ranges and
//! protocols, as a hand-written policy (or `~/.config/tapir/policy`) does.
//!
//! Why it matters: the check runs once per new TCP connection and ICMP echo flow and once per
//! UDP datagram the guest sends to a destination, and it is a linear scan; this shows what a
//! realistic rule count adds to each of those.
//!
//! Run with `cargo bench --bench policy`; the figures are in the README ("Egress policy").

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapir::nat::Proto;
use tapir::policy::{Item, Policy, Rule, Spec};

/// Rule counts to measure at.
const SIZES: [usize; 2] = [0, 100];

/// The `i`-th rule: a deny of a distinct 10.x network, with ports and a protocol on some.
fn rule(i: usize) -> Rule {
    let second = i % 250;
    let line = match i % 4 {
        0 => format!("deny 10.{second}.0.0/16"),
        1 => format!("deny 10.{second}.1.0/24:22/tcp"),
        2 => format!("allow 10.{second}.2.0/24:1000-2000/udp"),
        _ => format!("deny 10.{second}.3.4/icmp"),
    };
    Rule::parse_line(&line).expect("a valid rule")
}

fn check(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_check");
    g.throughput(Throughput::Elements(1));
    let dst: SocketAddr = "198.51.100.7:443".parse().expect("an address");
    for n in SIZES {
        let p = Policy::new(&Spec {
            items: (0..n).map(|i| Item::Rule(rule(i))).collect(),
            ..Spec::default()
        })
        .expect("within MAX_RULES");
        assert_eq!(p.entries().len(), n);
        assert!(p.check(Proto::Tcp, dst, false).is_ok(), "no rule matches");
        g.bench_function(BenchmarkId::new("no_match", n), |b| {
            b.iter(|| p.check(black_box(Proto::Tcp), black_box(dst), black_box(false)))
        });
    }
    g.finish();
}

// Inside a private module because `criterion_group!` generates an undocumented `pub fn`.
mod group {
    use super::*;
    criterion_group!(benches, check);
}
criterion_main!(group::benches);
