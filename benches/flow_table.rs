//! Criterion micro-benchmarks of the NAT flow table ([`tapir::nat::Table`]).
//!
//! What it measures: `Table::lookup` of a TCP flow key that is present (hit) and absent (miss)
//! with 1, 100 and 4000 live flows (4000 is just under `MAX_TCP_FLOWS`), and one
//! `Table::insert` followed by `Table::remove` of a new flow in a table that already holds that
//! many flows (the steady state of a connection that comes and goes: the slot and the hash map
//! capacity are reused).
//!
//! Why it matters: the runtime looks a flow up by its key for every TCP SYN, every UDP datagram
//! and every ICMP echo request the guest sends, and inserts and removes one per connection, so
//! these costs bound the per-packet overhead and the connections-per-second rate; the three
//! table sizes show whether the cost stays flat as flows accumulate (it should: it is a hash
//! map, never a scan).
//!
//! Run with `cargo bench --bench flow_table`; see benches/README.md for figures.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tapir::nat::{Entry, Key, State, Table};

/// Table sizes (live TCP flows) to measure at.
const SIZES: [usize; 3] = [1, 100, 4000];

/// The key of the `i`-th guest TCP flow: the guest 10.0.2.100 with a distinct source port,
/// spread over a few remotes, as a guest that opens many connections looks.
fn tcp_key(i: usize) -> Key {
    let port = 10_000 + u16::try_from(i % 50_000).expect("port fits");
    let remote_host = u8::try_from(i % 7).expect("fits") + 1;
    Key::tcp(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)), port),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, remote_host)), 443),
    )
}

/// A live flow for `key`, as the TCP proxy inserts it.
fn entry(key: Key) -> Entry {
    Entry {
        key,
        target: key.remote,
        host_local: None,
        state: State::Connecting,
        bytes_out: 0,
        bytes_in: 0,
        packets_out: 0,
        packets_in: 0,
        created_ms: 0,
        active_ms: 0,
    }
}

/// A table holding flows `0..n`.
fn table_with(n: usize) -> Table {
    let mut t = Table::new();
    for i in 0..n {
        t.insert(entry(tcp_key(i))).expect("below capacity");
    }
    t
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_lookup");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let t = table_with(n);
        // Hits cycle through every present key; misses through as many absent ones.
        let present: Vec<Key> = (0..n).map(tcp_key).collect();
        let absent: Vec<Key> = (n..2 * n).map(tcp_key).collect();
        assert!(present.iter().all(|k| t.lookup(k).is_some()));
        assert!(absent.iter().all(|k| t.lookup(k).is_none()));

        g.bench_with_input(BenchmarkId::new("hit", n), &present, |b, keys| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                t.lookup(black_box(&keys[i]))
            });
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &absent, |b, keys| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % keys.len();
                t.lookup(black_box(&keys[i]))
            });
        });
    }
    g.finish();
}

fn insert_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat_insert_remove");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut t = table_with(n);
        let new = entry(tcp_key(n));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let id = t.insert(black_box(new.clone())).expect("below capacity");
                t.remove(black_box(id))
            });
        });
        assert_eq!(t.len(), n, "every inserted flow was removed again");
    }
    g.finish();
}

// Inside a private module because `criterion_group!` generates an undocumented `pub fn`.
mod group {
    use super::*;
    criterion_group!(benches, lookup, insert_remove);
}
criterion_main!(group::benches);
