//! Replays the fuzz corpus (`fuzz/corpus/<target>/`), the crash reproducers
//! (`fuzz/regressions/<target>/`) and the built-in seeds through the same entry points the
//! fuzz targets call (`tapir::fuzzing`), as an ordinary test: a panic in an entry point fails
//! it. See `fuzz/README.md`.
//!
//! The frame and API entry points open real sockets, so they run in a private network
//! namespace (`tapir::fuzzing::confine`): as root the test thread unshares one; otherwise the
//! test runs itself again under `unshare -rn`, and without either it prints `SKIP: <reason>`
//! and passes (fails with `CI=true`), as the other integration suites do.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the copy of this test that runs under `unshare -rn`.
const REEXEC_ENV: &str = "TAPIR_FUZZ_CORPUS_IN_NETNS";

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every input for `target`: seeds, corpus, regressions.
fn inputs(target: &str, dirs: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = tapir::fuzzing::seeds()
        .into_iter()
        .filter(|(t, _)| *t == target)
        .enumerate()
        .map(|(i, (_, d))| (format!("seed {i}"), d))
        .collect();
    for sub in dirs {
        let dir = fuzz_dir().join(sub).join(target);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            out.push((f.display().to_string(), data));
        }
    }
    out
}

/// What every replay reads.
const REPLAYED: &[&str] = &["corpus", "regressions"];

fn replay(target: &str, run: fn(&[u8])) -> usize {
    replay_dirs(target, REPLAYED, run)
}

fn replay_dirs(target: &str, dirs: &[&str], run: fn(&[u8])) -> usize {
    let inputs = inputs(target, dirs);
    for (name, data) in &inputs {
        let r = std::panic::catch_unwind(|| run(data));
        assert!(r.is_ok(), "{target}: input {name} panicked");
    }
    inputs.len()
}

/// Replay `target` in a private network namespace, or explain why not.
fn replay_confined(test_name: &str, target: &str, run: fn(&[u8])) {
    replay_confined_dirs(test_name, target, REPLAYED, run);
}

fn replay_confined_dirs(test_name: &str, target: &str, dirs: &[&str], run: fn(&[u8])) {
    match tapir::fuzzing::confine() {
        Ok(()) => {
            let n = replay_dirs(target, dirs, run);
            eprintln!("{target}: {n} inputs replayed");
        }
        Err(e) if std::env::var_os(REEXEC_ENV).is_none() => {
            // Not root: run this one test again inside `unshare -rn` (its own user and network
            // namespace, where it is single-purpose and only lo exists).
            let exe = std::env::current_exe().expect("current_exe");
            match Command::new("unshare")
                .args(["-rn"])
                .arg(exe)
                .args(["--exact", test_name, "--test-threads=1", "--nocapture"])
                .env(REEXEC_ENV, "1")
                .status()
            {
                Ok(s) if s.success() => {}
                Ok(s) => panic!("{test_name} under unshare -rn: {s}"),
                Err(e2) => skip(&format!(
                    "{target} needs a private network namespace ({e}; unshare -rn: {e2})"
                )),
            }
        }
        Err(e) => panic!("confine inside unshare -rn: {e}"),
    }
}

fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    println!("SKIP: {reason}");
}

#[test]
fn guest_frame_corpus() {
    replay_confined(
        "guest_frame_corpus",
        "guest_frame",
        tapir::fuzzing::guest_frame,
    );
}

#[test]
fn guest_frames_corpus() {
    replay_confined(
        "guest_frames_corpus",
        "guest_frames",
        tapir::fuzzing::guest_frames,
    );
}

#[test]
fn api_request_corpus() {
    replay_confined(
        "api_request_corpus",
        "api_request",
        tapir::fuzzing::api_request,
    );
}

#[test]
fn publish_spec_corpus() {
    assert!(replay("publish_spec", tapir::fuzzing::publish_spec) > 0);
}

#[test]
fn resolv_conf_corpus() {
    assert!(replay("resolv_conf", tapir::fuzzing::resolv_conf) > 0);
}

#[test]
fn argv_corpus() {
    assert!(replay("argv", tapir::fuzzing::argv) > 0);
}

/// The socket-touching entry points refuse to run outside a private namespace.
#[test]
fn unconfined_frames_are_refused() {
    // A fresh thread is never confined.
    let r = std::thread::spawn(|| tapir::fuzzing::guest_frame(&[0; 60])).join();
    assert!(r.is_err(), "guest_frame ran without confine()");
}

/// Finding 1 of the frame fuzzers (`fuzz/regressions/guest_frames/crash-d01c47cc...`), reduced: smoltcp 0.14 records
/// the unscaled window of its SYN-ACK (at most 65535) as if it were scaled, so until its next
/// ACK it accepts data up to `65535 << shift` past the SYN, where `shift` comes from the buffer
/// size: with a power-of-two buffer that is almost twice the buffer. A segment beyond the buffer
/// is then half-stored (the assembler counts bytes the ring buffer dropped), and when the guest
/// fills the gap while nobody reads, `RingBuffer::enqueue_unallocated` asserts, in release
/// builds too: any guest could make tapir panic with ~20 frames. Fixed by
/// `proxy::tcp::BUFFER_SIZE` = `(1 << 20) - 1` (see fuzz/README.md, "Findings").
#[test]
fn syn_ack_window_stays_within_the_buffer() {
    use smoltcp::iface::SocketSet;
    use smoltcp::socket::tcp;
    use smoltcp::time::Instant;
    use tapir::proxy::tcp::BUFFER_SIZE;

    let opts = tapir::config::Options {
        mtu: Some(65520),
        ..Default::default()
    };
    let cfg = tapir::config::Config::from_options(opts, false).unwrap();
    let now = Instant::from_secs(1);
    let mut stack = tapir::stack::Stack::with_seed(&cfg, Default::default(), now, 1);
    let mut set = SocketSet::new(Vec::new());
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER_SIZE]),
        tcp::SocketBuffer::new(vec![0; BUFFER_SIZE]),
    );
    s.listen(smoltcp::wire::IpEndpoint::new(
        smoltcp::wire::IpAddress::v4(10, 0, 2, 2),
        80,
    ))
    .unwrap();
    let h = set.add(s);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 0x64, 8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[
        2, 0, 0, 0, 0, 0x64, 10, 0, 2, 100, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2,
    ]);
    stack.ingress(now, arp, Some(&mut set));
    stack.ingress(now, segment(1000, None, &[]), Some(&mut set));
    stack.egress(now, &mut set);
    let mut isn = None;
    while let Some(f) = stack.device.pop_tx() {
        isn = isn.or(tcp_seq(&f));
    }
    let ack = isn.expect("SYN-ACK").wrapping_add(1);
    let base = 1001u32;
    // Past the buffer's end: must be refused (it is accepted, and only partly stored).
    let far = u32::try_from(BUFFER_SIZE).unwrap() - 6;
    stack.ingress(
        now,
        segment(base + far, Some(ack), &[0xee; 100]),
        Some(&mut set),
    );
    // The guest fills the gap while the host side reads nothing.
    let mut off = 0;
    while off < far {
        let n = (far - off).min(60_000);
        let data = vec![0x11; usize::try_from(n).unwrap()];
        stack.ingress(now, segment(base + off, Some(ack), &data), Some(&mut set));
        off += n;
        stack.egress(now, &mut set);
        while stack.device.pop_tx().is_some() {}
    }
    let s = set.get_mut::<tcp::Socket>(h);
    let delivered = s.recv(|b| (b.len(), b.to_vec())).unwrap();
    assert!(
        delivered.iter().all(|&b| b == 0x11),
        "bytes never stored reached the stream"
    );
}

/// A TCP segment 10.0.2.100:40000 -> 10.0.2.2:80 in an Ethernet frame (SYN when `ack` is None).
fn segment(seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::*;
    let (src, dst) = (
        Ipv4Address::new(10, 0, 2, 100),
        Ipv4Address::new(10, 0, 2, 2),
    );
    let syn = ack.is_none();
    let t = TcpRepr {
        src_port: 40000,
        dst_port: 80,
        control: if syn {
            TcpControl::Syn
        } else {
            TcpControl::None
        },
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 65535,
        window_scale: syn.then_some(7),
        max_seg_size: syn.then_some(65000),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: t.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 0x64]),
        dst_addr: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut b = vec![0u8; 14 + 20 + t.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut b[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &ChecksumCapabilities::default());
    let mut tp = TcpPacket::new_unchecked(p.payload_mut());
    let caps = ChecksumCapabilities::default();
    t.emit(&mut tp, &src.into(), &dst.into(), &caps);
    b
}

/// The sequence number of the IPv4 TCP segment in `frame`.
fn tcp_seq(frame: &[u8]) -> Option<u32> {
    use smoltcp::wire::*;
    let e = EthernetFrame::new_checked(frame).ok()?;
    let p = Ipv4Packet::new_checked(e.payload()).ok()?;
    let t = TcpPacket::new_checked(p.payload()).ok()?;
    Some(t.seq_number().0 as u32)
}

/// Every built-in seed is in `fuzz/corpus/<target>/` (as `seed-NN` or under any other name),
/// so `cargo fuzz run` starts from them too (the replays above take the seeds from the library
/// either way). With `TAPIR_WRITE_SEEDS=1` the missing ones are written as `seed-NN`.
#[test]
fn seeds_are_in_the_corpus() {
    let write = std::env::var_os("TAPIR_WRITE_SEEDS").is_some();
    let mut n = std::collections::HashMap::new();
    let mut missing = Vec::new();
    for (target, data) in tapir::fuzzing::seeds() {
        let i = n.entry(target).or_insert(0);
        let name = format!("seed-{i:02}");
        *i += 1;
        let dir = fuzz_dir().join("corpus").join(target);
        let present = std::fs::read_dir(&dir).is_ok_and(|rd| {
            rd.filter_map(Result::ok)
                .any(|e| std::fs::read(e.path()).is_ok_and(|d| d == data))
        });
        if present {
            continue;
        }
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&name), &data).unwrap();
        } else {
            missing.push(format!("{target}/{name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "seeds missing from fuzz/corpus (write them with TAPIR_WRITE_SEEDS=1 cargo test --test \
         fuzz_corpus seeds_are_in_the_corpus): {missing:?}"
    );
}
