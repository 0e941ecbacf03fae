//! The conntrack view and statistics through the API socket: `tapir ctl SOCKET conntrack`
//! (table, `-o json`, filters, `--watch`), the raw `watch_flows` subscription, `get_stats` and
//! `stats --prometheus`, and a subscriber that never reads: it must not slow a bulk transfer
//! and must be dropped.
//!
//! Needs namespaces, ncat and python3 (servers in the private host namespace, clients in the
//! guest). Passes with `TAPIR_TEST_EXTRA_ARGS="--enable-sandbox --enable-seccomp"` too.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Setup {
    host: HostNs,
    guest: Guest,
    tapir: Tapir,
    sock: PathBuf,
    dir: Scratch,
}

fn setup() -> Option<Setup> {
    if let Some(why) = missing_tool(&["ncat", "python3"]) {
        skip(&why);
        return None;
    }
    let host = host()?;
    let guest = host.guest(As::Runner);
    let dir = Scratch::new("conntrack");
    let sock = dir.path("api.sock");
    let pid = guest.pid.to_string();
    let sock_s = sock.to_string_lossy().into_owned();
    let mut tapir = Tapir::spawn(
        &host,
        As::Runner,
        &["-c", "--api-socket", &sock_s, &pid, "tap0"],
        false,
    );
    tapir.wait_ready();
    Some(Setup {
        host,
        guest,
        tapir,
        sock,
        dir,
    })
}

fn hostserve() -> String {
    format!(
        "python3 {}/tests/tools/hostserve.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

impl Setup {
    /// A TCP sink on the host's loopback (the guest reaches it as 10.0.2.2:port).
    fn sink(&self, port: u16) -> Bg {
        let log = self.dir.path(&format!("sink{port}.log"));
        let bg = self.host.spawn(
            As::Runner,
            &format!("{} sink 127.0.0.1 {port} {}", hostserve(), log.display()),
        );
        self.host.wait_listening(port, false);
        bg
    }

    fn ctl(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = std::process::Command::new(tapir_bin())
            .arg("ctl")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `conntrack` lines (asserting success) that mention `needle`.
    fn flows_with(&self, args: &[&str], needle: &str) -> Vec<String> {
        let (code, out, err) = self.ctl(&[&["conntrack"], args].concat());
        assert_eq!(code, Some(0), "conntrack {args:?}: {err}");
        out.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    fn stats(&self) -> serde_json::Value {
        let (code, out, err) = self.ctl(&["stats"]);
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
        v["return"].clone()
    }

    /// Subscribe to flow events with `args` (raw API, no shutdown of the writing side).
    fn subscribe(&self, args: &str) -> UnixStream {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.write_all(format!(r#"{{"execute":"watch_flows","arguments":{args}}}"#).as_bytes())
            .unwrap();
        s
    }
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// A paced upload from the guest: `chunks` × 100 kB, one every 0.1 s.
fn paced_upload(port: u16, chunks: u32) -> String {
    format!(
        "(for i in $(seq {chunks}); do head -c 100000 /dev/zero; sleep 0.1; done) | ncat --send-only 10.0.2.2 {port}"
    )
}

#[test]
fn conntrack_lists_a_live_flow_with_filters_and_json() {
    let Some(s) = setup() else { return };
    let _sink = s.sink(18301);
    let port = ":18301";
    std::thread::scope(|scope| {
        let upload = scope.spawn(|| s.guest.sh_any(&paced_upload(18301, 40)));
        // The flow appears, open (a listing may first catch it connecting), with bytes moving.
        let mut first = None;
        wait_until(Duration::from_secs(10), || {
            first = s.flows_with(&[], port).into_iter().next();
            first
                .as_deref()
                .is_some_and(|l| !l.contains(" connecting "))
        });
        let first = first.unwrap();
        assert!(first.starts_with("tcp "), "{first}");
        assert!(first.contains("guest=10.0.2.100:"), "{first}");
        assert!(first.contains("remote=10.0.2.2:18301"), "{first}");
        assert!(first.contains("local=127.0.0.1:"), "{first}");
        let b0 = field(&first, "bytes_out");
        let mut later = String::new();
        wait_until(Duration::from_secs(5), || {
            later = s.flows_with(&[], port).pop().unwrap_or_default();
            !later.is_empty() && field(&later, "bytes_out") > b0
        });
        assert!(field(&later, "packets_out") > 0, "{later}");
        assert!(later.contains(" open "), "{later}");

        // Filters.
        assert_eq!(s.flows_with(&["-p", "tcp"], port).len(), 1);
        assert!(s.flows_with(&["-p", "udp"], port).is_empty());
        assert_eq!(s.flows_with(&["--addr", "10.0.2.100"], port).len(), 1);
        assert_eq!(s.flows_with(&["--addr", "127.0.0.1"], port).len(), 1);
        assert!(s.flows_with(&["--addr", "192.0.2.99"], port).is_empty());
        assert_eq!(s.flows_with(&["--dst", "10.0.2.2"], port).len(), 1);
        assert!(s.flows_with(&["--dst", "10.0.2.100"], port).is_empty());
        assert_eq!(s.flows_with(&["--state", "established"], port).len(), 1);
        assert!(s.flows_with(&["--state", "connecting"], port).is_empty());
        let (code, _, err) = s.ctl(&["conntrack", "--state", "bogus"]);
        assert_eq!(code, Some(1), "{err}");

        // JSON.
        let (code, out, _) = s.ctl(&["conntrack", "-o", "json", "-p", "tcp"]);
        assert_eq!(code, Some(0));
        let v: serde_json::Value = serde_json::from_str(&out).expect("conntrack -o json");
        let flows = v["return"]["flows"].as_array().unwrap();
        let f = flows
            .iter()
            .find(|f| f["remote"] == "10.0.2.2:18301")
            .expect("the flow in JSON");
        assert_eq!(f["state"], "open");
        assert_eq!(f["target"], "127.0.0.1:18301");
        assert!(f["bytes_out"].as_u64().unwrap() > 0);
        assert!(f["age_ms"].as_u64().is_some() && f["idle_ms"].as_u64().is_some());

        // After the transfer the flow is gone.
        let out = upload.join().unwrap();
        assert!(out.status.success(), "{out:?}");
        wait_until(Duration::from_secs(10), || {
            s.flows_with(&[], port).is_empty()
        });
    });
}

#[test]
fn watch_streams_new_and_closed_events() {
    let Some(s) = setup() else { return };
    let _sink = s.sink(18302);
    // Raw subscription, TCP only.
    let sub = s.subscribe(r#"{"proto":"tcp"}"#);
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lines = BufReader::new(sub.try_clone().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), r#"{"return":{}}"#);
    // And `tapir ctl --watch -o json` beside it.
    let mut ctl = std::process::Command::new(tapir_bin())
        .arg("ctl")
        .arg(&s.sock)
        .args(["conntrack", "--watch", "-o", "json", "--dst", "10.0.2.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ctl_out = ctl.stdout.take().unwrap();
    wait_until(Duration::from_secs(5), || {
        s.stats()["watchers"].as_u64() == Some(2)
    });
    // A UDP datagram: not for the TCP-only subscriber.
    s.guest
        .ok("echo x | ncat -u --send-only 10.0.2.2 18399 || true");
    s.guest.ok("echo hello | ncat --send-only 10.0.2.2 18302");
    let mut events = Vec::new();
    while events.len() < 2 {
        let l = lines.next().expect("event").expect("event line");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["proto"], "tcp", "{l}");
        events.push(v);
    }
    assert_eq!(events[0]["event"], "new");
    assert_eq!(events[0]["remote"], "10.0.2.2:18302");
    assert_eq!(events[1]["event"], "closed");
    assert_eq!(events[1]["id"], events[0]["id"]);
    assert_eq!(events[1]["reason"], "done");
    assert_eq!(events[1]["bytes_out"], 6);

    let mut ctl_lines = BufReader::new(ctl_out).lines();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let l = ctl_lines.next().expect("ctl event").unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v["remote"] == "10.0.2.2:18302" {
            kinds.push(v["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds, ["new", "closed"]);
    let _ = ctl.kill();
    let _ = ctl.wait();
    // A subscriber that shuts down its writing side ends its subscription.
    sub.shutdown(std::net::Shutdown::Write).unwrap();
    wait_until(Duration::from_secs(5), || {
        s.stats()["watchers"].as_u64() == Some(0)
    });
}

#[test]
fn stats_move_with_traffic_and_render_as_prometheus() {
    let Some(s) = setup() else { return };
    let _sink = s.sink(18303);
    let a = s.stats();
    for key in [
        "uptime_ms",
        "frames_from_guest",
        "bytes_to_guest",
        "refused_full",
        "refused_policy",
        "dns_queries",
        "api_requests",
    ] {
        assert!(a[key].is_u64(), "{key} in {a}");
    }
    assert_eq!(a["refused_policy"], 0);
    s.guest
        .ok("head -c 1000000 /dev/zero | ncat --send-only 10.0.2.2 18303");
    // Nothing listens on 18304: the host connect is refused.
    let _ = s.guest.sh_any("ncat -w 3 10.0.2.2 18304 </dev/null");
    let b = s.stats();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(n(&b, "frames_from_guest") > n(&a, "frames_from_guest") + 10);
    assert!(n(&b, "bytes_from_guest") > n(&a, "bytes_from_guest") + 1_000_000);
    assert!(n(&b, "frames_to_guest") > n(&a, "frames_to_guest"));
    assert!(n(&b, "api_requests") > n(&a, "api_requests"));
    assert!(n(&b, "uptime_ms") >= n(&a, "uptime_ms"));
    assert!(b["flows_created"]["tcp"].as_u64().unwrap() >= 2, "{b}");
    assert!(
        b["host_errors"]["ECONNREFUSED"].as_u64().unwrap() >= 1,
        "{b}"
    );
    assert!(b["flows"]["tcp"]["open"].is_u64(), "{b}");
    assert!(b["drops"]["malformed"].is_u64(), "{b}");

    let (code, text, err) = s.ctl(&["stats", "--prometheus"]);
    assert_eq!(code, Some(0), "{err}");
    for want in [
        "# TYPE tapir_frames_total counter",
        "# TYPE tapir_flows gauge",
        "# TYPE tapir_uptime_seconds gauge",
        "tapir_refused_total{reason=\"policy\"} 0",
        "tapir_host_errors_total{errno=\"ECONNREFUSED\"}",
        "tapir_frames_total{direction=\"from_guest\"}",
        "tapir_flows{proto=\"tcp\",state=\"open\"}",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

/// Seconds for a 300 MB upload from the guest to the host sink on `port`.
fn bulk(s: &Setup, port: u16) -> Duration {
    let t = Instant::now();
    s.guest.ok(&format!(
        "head -c 300000000 /dev/zero | ncat --send-only 10.0.2.2 {port}"
    ));
    t.elapsed()
}

#[test]
fn a_stuck_watcher_does_not_stall_traffic_and_is_dropped() {
    let Some(s) = setup() else { return };
    let _sink = s.sink(18305);
    let _sink2 = s.sink(18306);
    let baseline = bulk(&s, 18305);

    // Subscribed, never reads.
    let mut stuck = s.subscribe("{}");
    wait_until(Duration::from_secs(5), || {
        s.stats()["watchers"].as_u64() == Some(1)
    });
    // Many short connections make far more events than the socket buffer and the backlog
    // hold, while the bulk transfer runs.
    let (with_stuck, out) = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            s.guest.sh_any(
                "python3 -c \"import socket\nfor i in range(3000):\n s=socket.create_connection(('10.0.2.2',18306)); s.close()\"",
            )
        });
        let t = bulk(&s, 18305);
        (t, churn.join().unwrap())
    });
    assert!(out.status.success(), "{out:?}");
    eprintln!("bulk: {baseline:?} alone, {with_stuck:?} with a stuck watcher and churn");
    assert!(
        with_stuck <= baseline * 3 + Duration::from_secs(3),
        "bulk took {with_stuck:?} with a stuck watcher, {baseline:?} without"
    );
    // Dropped: tapir no longer counts it, and reading shows the end of the stream.
    wait_until(Duration::from_secs(10), || {
        s.stats()["watchers"].as_u64() == Some(0)
    });
    stuck
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut all = Vec::new();
    let r = stuck.read_to_end(&mut all);
    assert!(r.is_ok() || all.len() > 1000, "{r:?}");
    assert!(
        all.len() <= 8 * 1024 * 1024,
        "a bounded amount was queued: {}",
        all.len()
    );
    assert!(s.tapir.logs().is_empty() || !s.tapir.logs().contains("panicked"));
}
