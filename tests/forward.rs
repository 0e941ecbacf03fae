//! Port forwarding: slirp4netns's API socket, `-p/--publish`, `tapir ctl`, and traffic from
//! host clients into the guest with their addresses preserved.
//!
//! Needs namespaces, ncat and python3 (servers in the guest, clients in the private host
//! namespace). The API socket itself is a path, reachable from the test process directly.
//!
//! `--splice-forwards` (loopback clients relayed to a socket inside the guest's namespace) has
//! its own section at the end: what the guest sees, data and half-closes both ways, refusals,
//! which clients and forwards are spliced, many connections at once, and the socket broker's
//! life and confinement (checked when `TAPIR_TEST_EXTRA_ARGS` asks for the sandbox and filter).

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Setup {
    host: HostNs,
    guest: Guest,
    tapir: Tapir,
    sock: PathBuf,
    _dir: Scratch,
}

fn setup(extra: &[&str]) -> Option<Setup> {
    let host = host()?;
    let guest = host.guest(As::Runner);
    let dir = Scratch::new("api");
    let sock = dir.path("api.sock");
    let pid = guest.pid.to_string();
    let sock_s = sock.to_string_lossy().into_owned();
    let mut args = vec!["-c", "--api-socket", sock_s.as_str()];
    args.extend_from_slice(extra);
    args.extend([pid.as_str(), "tap0"]);
    let mut tapir = Tapir::spawn(&host, As::Runner, &args, false);
    tapir.wait_ready();
    // Ready means the API socket already accepts.
    assert!(sock.exists(), "API socket must exist before the ready byte");
    Some(Setup {
        host,
        guest,
        tapir,
        sock,
        _dir: dir,
    })
}

fn add_tcp(sock: &Path, host_addr: &str, host_port: u16, guest_port: u16) -> String {
    api(
        sock,
        &format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"tcp","host_addr":"{host_addr}","host_port":{host_port},"guest_addr":"","guest_port":{guest_port}}}}}"#
        ),
    )
}

#[test]
fn every_error_string_is_slirp4netns_s() {
    let Some(s) = setup(&[]) else { return };
    let err = |d: &str| format!(r#"{{"error":{{"desc":"{d}"}}}}"#);
    let cases: &[(&str, &str)] = &[
        ("", "bad request: cannot parse JSON"),
        ("{", "bad request: cannot parse JSON"),
        ("[1,2]", "bad request: json_object() failed"),
        (r#"{"execute":1}"#, "bad request: no execute found"),
        (r#"{"foo":"bar"}"#, "bad request: no execute found"),
        (r#"{"execute":"nope"}"#, "bad request: unknown execute"),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"sctp","host_port":1,"guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.proto",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"host_port":23599,"guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.proto",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"[::1]","host_port":1,"guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.host_addr",
        ),
        (
            // An IPv6 guest needs -6.
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":18200,"guest_addr":"::","guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.guest_addr",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":"23502","guest_port":1}}"#,
            "bad request: add_hostfwd: bad arguments.host_port",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":70000,"guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.host_port",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":18200,"guest_addr":"x","guest_port":80}}"#,
            "bad request: add_hostfwd: bad arguments.guest_addr",
        ),
        (
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":18200,"guest_port":0}}"#,
            "bad request: add_hostfwd: bad arguments.guest_port",
        ),
        (
            r#"{"execute":"remove_hostfwd","arguments":{"id":42}}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
        (
            r#"{"execute":"remove_hostfwd"}"#,
            "bad request: remove_hostfwd: bad arguments.id",
        ),
    ];
    for (req, desc) in cases {
        assert_eq!(api(&s.sock, req), err(desc), "request {req:?}");
    }
    // Too large: a 4096-byte request is rejected, a 4095-byte one is fine.
    let pad = |n: usize| {
        let base = r#"{"execute":"list_hostfwd","pad":""}"#;
        let fill = "x".repeat(n - base.len());
        format!(r#"{{"execute":"list_hostfwd","pad":"{fill}"}}"#)
    };
    assert_eq!(
        api(&s.sock, &pad(4096)),
        err("bad request: too large message")
    );
    assert!(api(&s.sock, &pad(4095)).contains(r#""entries":[]"#));
    // The process survived all of it (slirp4netns segfaults on the missing proto).
    assert!(s.tapir.child.id() > 0);
    let mut t = s.tapir;
    assert_eq!(
        t.wait_exit(Duration::from_millis(10)),
        None,
        "tapir must still run"
    );
}

#[test]
fn add_list_remove_round_trip() {
    let Some(s) = setup(&[]) else { return };
    forward(&s, "127.0.0.1", 18201, 8080, 1);
    // Same port again: slirp4netns's failure string.
    assert_eq!(
        add_tcp(&s.sock, "127.0.0.1", 18201, 8080),
        r#"{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}"#
    );
    let udp = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_port":18202,"guest_addr":"10.0.2.100","guest_port":53}}"#,
    );
    assert_eq!(udp, r#"{"return":{"id":2}}"#);
    let entries = r#"[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":18201,"guest_addr":"10.0.2.100","guest_port":8080},{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":18202,"guest_addr":"10.0.2.100","guest_port":53}]"#;
    assert_eq!(
        api(&s.sock, r#"{"execute":"list_hostfwd"}"#),
        format!(r#"{{"return":{{"entries":{entries}}},"entries":{entries}}}"#)
    );
    assert_eq!(
        api(
            &s.sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":2}}"#
        ),
        r#"{"return":{}}"#
    );
    assert_eq!(
        api(
            &s.sock,
            r#"{"execute":"remove_hostfwd","arguments":{"id":2}}"#
        ),
        r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
    );
    // Ids are never reused.
    forward(&s, "127.0.0.1", 18203, 8080, 3);
    // rootlesskit's framing: trailing newline; a request split over two writes also works.
    let mut c = UnixStream::connect(&s.sock).unwrap();
    c.write_all(br#"{"execute":"#).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    c.write_all(b"\"list_hostfwd\"}\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert!(out.contains(r#""id":3"#), "{out}");
    // The socket file goes away on a clean exit.
    let mut t = s.tapir;
    std::process::Command::new("kill")
        .args(["-TERM", &t.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(t.wait_exit(Duration::from_secs(5)), Some(Some(0)));
    assert!(!s.sock.exists(), "API socket must be removed on exit");
}

#[test]
fn tcp_and_udp_forwards_preserve_the_client_address() {
    let Some(s) = setup(&[]) else { return };
    let dir = Scratch::new("peers");
    let peers = dir.path("peers");
    let _srv = in_guest(
        &s.guest,
        &format!("{} greet 0.0.0.0 8080 > {}", tcpserve(), peers.display()),
    );
    let _udp = in_guest(&s.guest, &format!("{} udpecho 0.0.0.0 5353", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        s.guest
            .sh_any("ss -tln | grep -q ':8080 ' && ss -uln | grep -q ':5353 '")
            .status
            .success()
    });
    forward(&s, "0.0.0.0", 18204, 8080, 1);
    let udp = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"0.0.0.0","host_port":18205,"guest_port":5353}}"#,
    );
    assert_eq!(udp, r#"{"return":{"id":2}}"#);
    s.host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");

    let out = s.host.sh(As::Runner, "ncat 127.0.0.1 18204 </dev/null");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );
    let out = s.host.sh(
        As::Runner,
        "ncat -s 198.51.100.1 198.51.100.1 18204 </dev/null",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{out:?}");
    wait_until(Duration::from_secs(3), || read(&peers).lines().count() >= 2);
    let seen = read(&peers);
    assert_eq!(
        seen, "peer 10.0.2.2\npeer 198.51.100.1\n",
        "loopback client as the gateway, others as themselves"
    );

    // UDP may lose a datagram on a loaded machine (the guest resolves 10.0.2.2 first): up to
    // three tries, each waiting 2 s for the echo.
    let mut out = None;
    for _ in 0..3 {
        let o = s.host.sh(
            As::Runner,
            "(echo udp-fwd; sleep 2) | ncat -u -w 3 127.0.0.1 18205",
        );
        let done = o.stdout == b"udp-fwd\n";
        out = Some(o);
        if done {
            break;
        }
    }
    let out = out.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "udp-fwd\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );

    // Removing the forward closes the listener.
    api(
        &s.sock,
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
    );
    let out = s
        .host
        .sh(As::Runner, "ncat -w 2 127.0.0.1 18204 </dev/null");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Connection refused"),
        "{out:?}"
    );
}

#[test]
fn guest_refusal_resets_the_host_client() {
    let Some(s) = setup(&[]) else { return };
    forward(&s, "127.0.0.1", 18206, 9, 1);
    let t0 = Instant::now();
    let out = s.host.sh(
        As::Runner,
        "printf x | ncat -w 5 127.0.0.1 18206; echo rc=$?",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    // The accepted client is reset (slirp4netns closes it): ncat fails.
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .ends_with("rc=1"),
        "{out:?}"
    );
}

#[test]
fn udp_forward_replies_work_with_disable_host_loopback() {
    let Some(s) = setup(&["--disable-host-loopback"]) else {
        return;
    };
    let _udp = in_guest(&s.guest, &format!("{} udpecho 0.0.0.0 5353", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        s.guest
            .sh_any("ss -uln | grep -q ':5353 '")
            .status
            .success()
    });
    let r = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"udp","host_addr":"127.0.0.1","host_port":18207,"guest_port":5353}}"#,
    );
    assert_eq!(r, r#"{"return":{"id":1}}"#);
    let out = s.host.sh(
        As::Runner,
        "(echo podman-4586; sleep 1) | ncat -u -w 2 127.0.0.1 18207",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "podman-4586\n",
        "{out:?}\n{}",
        s.tapir.logs()
    );
}

#[test]
fn slow_api_clients_do_not_block_a_request() {
    let Some(s) = setup(&[]) else { return };
    // 100 clients that connect and say nothing (slirp4netns would block on the first).
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(&s.sock).unwrap())
        .collect();
    // A half-sent request too.
    let mut half = UnixStream::connect(&s.sock).unwrap();
    half.write_all(br#"{"execute":"list_"#).unwrap();
    let t0 = Instant::now();
    assert!(api(&s.sock, r#"{"execute":"list_hostfwd"}"#).contains("entries"));
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    // The data path keeps working meanwhile.
    s.guest.ok("ping -c 1 -W 2 10.0.2.2");
    drop(idle);
}

#[test]
fn add_remove_cycles_leak_no_fd() {
    let Some(s) = setup(&[]) else { return };
    // Warm up once (first-use allocations), then measure.
    assert!(add_tcp(&s.sock, "127.0.0.1", 18208, 80).contains("\"id\":1"));
    api(
        &s.sock,
        r#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
    );
    let baseline = s.tapir.fd_count();
    for i in 0..200u32 {
        let id = i + 2;
        let proto = if i % 2 == 0 { "tcp" } else { "udp" };
        let r = api(
            &s.sock,
            &format!(
                r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"127.0.0.1","host_port":18208,"guest_port":80}}}}"#
            ),
        );
        assert_eq!(r, format!(r#"{{"return":{{"id":{id}}}}}"#));
        let r = api(
            &s.sock,
            &format!(r#"{{"execute":"remove_hostfwd","arguments":{{"id":{id}}}}}"#),
        );
        assert_eq!(r, r#"{"return":{}}"#);
    }
    // The server closes each connection just after the client has seen EOF: allow a moment.
    wait_until(Duration::from_secs(2), || s.tapir.fd_count() <= baseline);
}

#[test]
fn publish_on_the_command_line_and_ctl() {
    let Some(host) = host() else { return };
    let g = host.guest(As::Runner);
    let pid = g.pid.to_string();
    let dir = Scratch::new("ctl");
    let sock = dir.path("api.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &[
            "-c",
            "-p",
            "127.0.0.1:18209:8080",
            "--api-socket",
            &sock_s,
            &pid,
            "tap0",
        ],
        false,
    );
    t.wait_ready();
    let _srv = in_guest(&g, &format!("{} greet 0.0.0.0 8080 >/dev/null", tcpserve()));
    wait_until(Duration::from_secs(5), || {
        g.sh_any("ss -tln | grep -q ':8080 '").status.success()
    });
    let out = host.sh(As::Runner, "ncat 127.0.0.1 18209 </dev/null");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{out:?}\n{}",
        t.logs()
    );

    let ctl = |args: &[&str]| {
        let o = std::process::Command::new(tapir_bin())
            .arg("ctl")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = ctl(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(r#""host_port":18209"#), "{out}");
    let (code, out) = ctl(&["add", "127.0.0.1:18210:8080"]);
    assert_eq!((code, out.trim()), (Some(0), r#"{"return":{"id":2}}"#));
    let out = host.sh(As::Runner, "ncat 127.0.0.1 18210 </dev/null");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(ctl(&["remove", "2"]).0, Some(0));
    assert_eq!(
        ctl(&["remove", "2"]).0,
        Some(1),
        "removing twice is an error"
    );
    assert_eq!(ctl(&["info"]).0, Some(0));

    // A bad -p is refused at start.
    let (code, _, err) = run_cli(&["-c", "-p", "99999:80", &pid, "tap1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid --publish value"), "{err}");
}

#[test]
fn get_info_lists_live_flows_with_state_and_bytes() {
    let Some(s) = setup(&[]) else { return };
    // A host server that answers and keeps the connection open for a while.
    let _srv = s.host.spawn(
        As::Runner,
        "ncat -l 127.0.0.1 18211 -c 'echo hello; sleep 5'",
    );
    s.host.wait_listening(18211, false);
    // Bounded, so nothing outlives the test even if the connection hangs.
    let _client = in_guest(
        &s.guest,
        "sh -c 'sleep 5 | ncat -i 7 10.0.2.2 18211 >/dev/null'",
    );
    let mut info = String::new();
    wait_until(Duration::from_secs(5), || {
        info = api(&s.sock, r#"{"execute":"get_info"}"#);
        info.contains(r#""state":"open""#) && info.contains(r#""bytes_in":6"#)
    });
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    let flow = &v["return"]["flows"]["list"][0];
    assert_eq!(flow["proto"], "tcp");
    assert_eq!(flow["remote"], "10.0.2.2:18211");
    assert_eq!(flow["target"], "127.0.0.1:18211");
    assert!(flow["guest"].as_str().unwrap().starts_with("10.0.2.100:"));
    assert_eq!(v["return"]["flows"]["tcp"], 1);
}

// ---------------------------------------------------------------------------------------------
// --splice-forwards: loopback clients relayed to a socket inside the guest's namespace

/// Client and server for the spliced-forward tests, written into each test's scratch directory.
///
/// `server PORT` (in the guest) accepts forever; each connection starts with the client's header
/// `MODE DOWN SEED`, answered by `peer ADDR` (the client address the guest saw). Then `DOWN`
/// bytes of `pattern(SEED)` go to the client and everything the client sends is hashed, in the
/// order `MODE` names: `both` (at once), `clientfirst` (the server reads to the client's end of
/// file before it sends), `serverfirst` (the server sends, shuts down its sending side, then
/// reads). `both` and `clientfirst` end with `got N SHA256` for what the server received;
/// every connection ends with `done PEER MODE N SHA256` (or `error PEER ...`) on stdout.
///
/// `client HOST PORT MODE UP DOWN SEED [BIND [GATE]]` sends `UP` bytes of `pattern(SEED + 1)`,
/// checks both directions and prints `peer ADDR`, `ok` (and `sent N SHA256` in `serverfirst`,
/// whose server cannot answer). With `GATE` (a path) it prints `wait` and waits for the file to
/// exist: after the `peer` line (`serverfirst`: after the server's end of file), so the test
/// can look at the flow in that state. `-` as `BIND` binds nothing.
///
/// `multi HOST PORT COUNT UP DOWN` runs COUNT `both` exchanges at once (all connected end to end
/// before any data moves) and prints each distinct peer, then `ok COUNT`.
///
/// `probe HOST PORT WAIT` connects, sends a byte and prints what came back: `eof`, `reset`,
/// `timeout` (nothing in WAIT seconds), `data` or `refused`, and the seconds it took.
///
/// Clients fail (traceback, exit 1) on any mismatch and give up after 30 s without progress
/// (90 s in all).
const SPLICECHECK: &str = r#"
import hashlib, os, random, signal, socket, sys, threading, time

TIMEOUT = 30


def pattern(seed, n):
    return random.Random(seed).randbytes(n)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def recv_line(s):
    buf = b""
    while not buf.endswith(b"\n"):
        d = s.recv(1)
        if not d:
            raise EOFError("end of file inside a line, after %r" % buf)
        buf += d
    return buf.decode().rstrip("\n")


def recv_exact(s, n):
    parts, got = [], 0
    while got < n:
        d = s.recv(min(1 << 20, n - got))
        if not d:
            raise EOFError("end of file after %d of %d bytes" % (got, n))
        parts.append(d)
        got += len(d)
    return b"".join(parts)


def recv_all(s):
    h, n = hashlib.sha256(), 0
    while True:
        d = s.recv(1 << 20)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


class Sender(threading.Thread):
    def __init__(self, s, data, shut):
        super().__init__(daemon=True)
        self.s, self.data, self.shut, self.error = s, data, shut, None
        self.start()

    def run(self):
        try:
            self.s.sendall(self.data)
            if self.shut:
                self.s.shutdown(socket.SHUT_WR)
        except Exception as e:
            self.error = e

    def finish(self):
        self.join(TIMEOUT)
        if self.is_alive():
            raise TimeoutError("sending did not finish")
        if self.error:
            raise self.error


def handle(c, peer, say):
    c.settimeout(2 * TIMEOUT)
    mode = "?"
    try:
        mode, down, seed = recv_line(c).split()
        data = pattern(int(seed), int(down))
        c.sendall(b"peer %s\n" % peer.encode())
        if mode == "both":
            tx = Sender(c, data, False)
            n, h = recv_all(c)
            tx.finish()
            c.sendall(b"got %d %s\n" % (n, h.encode()))
        elif mode == "clientfirst":
            n, h = recv_all(c)
            c.sendall(data)
            c.sendall(b"got %d %s\n" % (n, h.encode()))
        elif mode == "serverfirst":
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            n, h = recv_all(c)
        else:
            raise ValueError("mode %r" % mode)
        say("done %s %s %d %s" % (peer, mode, n, h))
    except Exception as e:
        say("error %s %s %r" % (peer, mode, e))
    finally:
        c.close()


def server(port):
    lock = threading.Lock()

    def say(line):
        with lock:
            print(line, flush=True)

    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(512)
    while True:
        c, peer = ls.accept()
        threading.Thread(target=handle, args=(c, peer[0], say), daemon=True).start()


def wait_gate(gate):
    print("wait", flush=True)
    deadline = time.monotonic() + TIMEOUT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError("gate %s never opened" % gate)
        time.sleep(0.02)


def exchange(host, port, mode, up, down, seed, bind=None, gate=None, barrier=None, out=None):
    src = (bind, 0) if bind else None
    try:
        s = socket.create_connection((host, port), timeout=TIMEOUT, source_address=src)
    except Exception:
        if barrier:
            barrier.abort()
        raise
    try:
        s.sendall(b"%s %d %d\n" % (mode.encode(), down, seed))
        line = recv_line(s)
        if not line.startswith("peer "):
            raise ValueError("first line %r" % line)
        peer = line[5:]
        if out is not None:
            out.append("peer " + peer)
        if barrier:
            barrier.wait(TIMEOUT)
        updata = pattern(seed + 1, up)
        want_got = "got %d %s" % (up, sha(updata))
        want_down = sha(pattern(seed, down))
        if mode == "serverfirst":
            n, h = recv_all(s)
            if (n, h) != (down, want_down):
                raise ValueError("received %d bytes %s, sent %d %s" % (n, h, down, want_down))
            if gate:
                wait_gate(gate)
            s.sendall(updata)
            s.shutdown(socket.SHUT_WR)
            if out is not None:
                out.append("sent %d %s" % (up, sha(updata)))
            got, trailer = None, want_got
        else:
            if gate:
                wait_gate(gate)
            if mode == "both":
                tx = Sender(s, updata, True)
                got = recv_exact(s, down)
                trailer = recv_line(s)
                tx.finish()
            else:
                s.sendall(updata)
                s.shutdown(socket.SHUT_WR)
                got = recv_exact(s, down)
                trailer = recv_line(s)
        if got is not None and sha(got) != want_down:
            raise ValueError("the %d bytes received differ from those sent" % down)
        if trailer != want_got:
            raise ValueError("server answered %r, want %r" % (trailer, want_got))
        rest = s.recv(1)
        if rest:
            raise ValueError("data after the end: %r" % rest)
        return peer
    except Exception:
        if barrier:
            barrier.abort()
        raise
    finally:
        s.close()


def multi(host, port, count, up, down):
    barrier = threading.Barrier(count)
    peers, errors = [], []

    def one(i):
        try:
            peers.append(exchange(host, port, "both", up, down, 1000 + i, barrier=barrier))
        except Exception as e:
            errors.append("connection %d: %r" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in sorted(set(peers)):
        print("peer", p)
    if errors:
        sys.exit("\n".join(sorted(errors)))
    print("ok", len(peers))


def probe(host, port, wait):
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=wait)
    except ConnectionRefusedError:
        print("refused %.3f" % (time.monotonic() - t0))
        return
    except ConnectionResetError:
        # Accepted and reset before connect() returned.
        print("reset %.3f" % (time.monotonic() - t0))
        return
    try:
        s.sendall(b"x")
        r = "data" if s.recv(1) else "eof"
    except (ConnectionResetError, BrokenPipeError):
        r = "reset"
    except TimeoutError:
        r = "timeout"
    print("%s %.3f" % (r, time.monotonic() - t0))


def main(a):
    if a[0] == "server":
        server(int(a[1]))
    signal.alarm(3 * TIMEOUT)
    if a[0] == "client":
        bind = a[7] if len(a) > 7 and a[7] != "-" else None
        gate = a[8] if len(a) > 8 else None
        out = []
        peer = exchange(a[1], int(a[2]), a[3], int(a[4]), int(a[5]), int(a[6]), bind, gate, None, out)
        for line in out:
            if line.startswith("sent"):
                print(line)
        print("peer", peer)
        print("ok")
    elif a[0] == "multi":
        multi(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]))
    elif a[0] == "probe":
        probe(a[1], int(a[2]), float(a[3]))
    else:
        sys.exit("unknown command %r" % a[0])


main(sys.argv[1:])
"#;

/// The checker above, written out, with the log of the guest server it starts.
struct Check {
    dir: Scratch,
    script: String,
}

impl Check {
    fn new() -> Check {
        let dir = Scratch::new("splice");
        let path = dir.path("splicecheck.py");
        std::fs::write(&path, SPLICECHECK).unwrap();
        let script = format!("python3 {}", shell_quote(&path.to_string_lossy()));
        Check { dir, script }
    }

    fn server_log(&self) -> PathBuf {
        self.dir.path("server.log")
    }

    /// The server inside the guest on `port`, listening when this returns.
    fn serve(&self, g: &Guest, port: u16) -> Bg {
        let log = shell_quote(&self.server_log().to_string_lossy());
        let bg = in_guest(g, &format!("{} server {port} > {log}", self.script));
        wait_until(Duration::from_secs(5), || {
            g.sh_any(&format!("ss -tln | grep -q ':{port} '"))
                .status
                .success()
        });
        bg
    }

    /// Run a client command in the host namespace; its stdout (it must succeed).
    fn run(&self, s: &Setup, args: &str) -> String {
        let out = s.host.sh(As::Runner, &format!("{} {args}", self.script));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "client `{args}` failed: {stdout}\n{}\nguest server:\n{}\ntapir:\n{}",
            String::from_utf8_lossy(&out.stderr),
            read(&self.server_log()),
            s.tapir.logs()
        );
        stdout
    }

    /// Start a client command in the host namespace in the background, stdout to `out`.
    fn spawn(&self, s: &Setup, args: &str, out: &Path) -> Bg {
        let child = s
            .host
            .cmd(As::Runner, "sh")
            .args(["-c", &format!("exec {} {args}", self.script)])
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        Bg(child)
    }
}

/// tapir started with `args`, the checker, and the checker's server in the guest on port 8080.
/// `None` when the harness skipped (it said why).
fn start(args: &[&str]) -> Option<(Setup, Check, Bg)> {
    let s = setup(args)?;
    let c = Check::new();
    let srv = c.serve(&s.guest, 8080);
    Some((s, c, srv))
}

/// Add a TCP forward `host_addr:host_port` -> guest `guest_port` through the API; it must get
/// id `id`.
fn forward(s: &Setup, host_addr: &str, host_port: u16, guest_port: u16, id: u64) {
    assert_eq!(
        add_tcp(&s.sock, host_addr, host_port, guest_port),
        format!(r#"{{"return":{{"id":{id}}}}}"#)
    );
}

/// Whether the checker can run (python3 in the host and the guest, `ss` for readiness).
fn check_tools() -> Option<String> {
    ["python3", "ss"]
        .into_iter()
        .find(|t| !tool(t))
        .map(|t| format!("{t} not installed"))
}

/// `get_info`'s `return` object.
fn info(sock: &Path) -> serde_json::Value {
    get_info(sock)["return"].clone()
}

/// `flows_created.tcp_spliced`.
fn spliced(sock: &Path) -> u64 {
    let v = info(sock);
    v["flows_created"]["tcp_spliced"]
        .as_u64()
        .unwrap_or_else(|| panic!("no flows_created.tcp_spliced in {v}"))
}

/// `flows_created.tcp`.
fn tcp_created(sock: &Path) -> u64 {
    let v = info(sock);
    v["flows_created"]["tcp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no flows_created.tcp in {v}"))
}

/// Wait (5 s) until the NAT table holds no TCP flow.
fn wait_no_tcp_flow(s: &Setup) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = info(&s.sock);
        if v["flows"]["tcp"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "TCP flows left after 5 s: {}\n{}",
            v["flows"],
            s.tapir.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// tapir is still running.
fn assert_alive(s: &mut Setup) {
    assert_eq!(
        s.tapir.wait_exit(Duration::ZERO),
        None,
        "tapir must still run:\n{}",
        s.tapir.logs()
    );
}

/// Wait (10 s) for a background client to exit; its stdout, asserting success.
fn finish(bg: &mut Bg, out: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = bg.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "background client still running: {}",
            read(out)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "background client failed: {}\n{}",
        read(out),
        read(&out.with_extension("err"))
    );
    read(out)
}

/// Wait (10 s) until `path` holds a line `wait` (a client stopped at its gate).
fn wait_for_gate(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(path).lines().any(|l| l == "wait") {
        assert!(
            Instant::now() < deadline,
            "client never reached its gate: {}\n{}",
            read(path),
            read(&path.with_extension("err"))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The only TCP flow in `get_info`'s list.
fn only_tcp_flow(v: &serde_json::Value) -> serde_json::Value {
    let list: Vec<_> = v["flows"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("no flows.list in {v}"))
        .iter()
        .filter(|f| f["proto"] == "tcp")
        .cloned()
        .collect();
    assert_eq!(list.len(), 1, "one TCP flow expected: {}", v["flows"]);
    list[0].clone()
}

const MIB: usize = 1024 * 1024;

#[test]
fn splice_forwards_loopback_clients_to_the_guest_as_itself() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some((mut s, c, _srv)) = start(&["--splice-forwards"]) else {
        return;
    };
    let v = info(&s.sock);
    assert_eq!(v["splice_forwards"], true, "{v}");
    assert_eq!(v["flows_created"]["tcp_spliced"], 0, "{v}");
    forward(&s, "127.0.0.1", 18220, 8080, 1);
    // 8 MiB each way at once, then 8 MiB each way again on a second connection.
    for seed in [1, 2] {
        let out = c.run(
            &s,
            &format!("client 127.0.0.1 18220 both {} {} {seed}", 8 * MIB, 8 * MIB),
        );
        assert_eq!(
            out, "peer 10.0.2.100\nok\n",
            "the guest must see its own address as the client"
        );
    }
    assert_eq!(spliced(&s.sock), 2, "both connections spliced");
    assert_eq!(tcp_created(&s.sock), 2, "spliced flows count as TCP flows");
    wait_no_tcp_flow(&s);
    assert_alive(&mut s);
}

#[test]
fn without_splice_forwards_loopback_clients_are_the_gateway() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some((mut s, c, _srv)) = start(&[]) else {
        return;
    };
    assert_eq!(info(&s.sock)["splice_forwards"], false);
    forward(&s, "127.0.0.1", 18221, 8080, 1);
    let out = c.run(&s, &format!("client 127.0.0.1 18221 both {MIB} {MIB} 3"));
    assert_eq!(out, "peer 10.0.2.2\nok\n");
    assert_eq!(spliced(&s.sock), 0);
    assert_eq!(tcp_created(&s.sock), 1);
    wait_no_tcp_flow(&s);
    assert_alive(&mut s);
}

#[test]
fn spliced_forwards_carry_half_closes_both_ways() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some((mut s, c, _srv)) = start(&["--splice-forwards"]) else {
        return;
    };
    forward(&s, "127.0.0.1", 18222, 8080, 1);

    // The client shuts down its sending side first and still receives everything the server
    // sends after it saw that end of file. Stopped after the greeting, the flow is listed open,
    // keyed as the guest sees it.
    let out = c.dir.path("clientfirst.out");
    let gate = c.dir.path("clientfirst.gate");
    let mut bg = c.spawn(
        &s,
        &format!(
            "client 127.0.0.1 18222 clientfirst {MIB} {} 4 - {}",
            2 * MIB,
            shell_quote(&gate.to_string_lossy())
        ),
        &out,
    );
    wait_for_gate(&out);
    let v = info(&s.sock);
    let flow = only_tcp_flow(&v);
    assert_eq!(flow["state"], "open", "{flow}");
    assert_eq!(flow["guest"], "10.0.2.100:8080", "{flow}");
    assert!(
        flow["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with("10.0.2.100:")),
        "{flow}"
    );
    assert!(
        flow["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("127.0.0.1:")),
        "{flow}"
    );
    std::fs::write(&gate, "").unwrap();
    assert_eq!(finish(&mut bg, &out), "wait\npeer 10.0.2.100\nok\n");

    // The server shuts down its sending side first; the client reads to that end of file (the
    // flow is then half-closed), then sends, and the server receives all of it.
    let out = c.dir.path("serverfirst.out");
    let gate = c.dir.path("serverfirst.gate");
    let mut bg = c.spawn(
        &s,
        &format!(
            "client 127.0.0.1 18222 serverfirst {} {MIB} 5 - {}",
            2 * MIB,
            shell_quote(&gate.to_string_lossy())
        ),
        &out,
    );
    wait_for_gate(&out);
    let mut v = info(&s.sock);
    let deadline = Instant::now() + Duration::from_secs(5);
    while only_tcp_flow(&v)["state"] != "half-closed" {
        assert!(Instant::now() < deadline, "not half-closed: {}", v["flows"]);
        std::thread::sleep(Duration::from_millis(20));
        v = info(&s.sock);
    }
    std::fs::write(&gate, "").unwrap();
    let got = finish(&mut bg, &out);
    let sent = got
        .lines()
        .find_map(|l| l.strip_prefix("sent "))
        .unwrap_or_else(|| panic!("{got}"))
        .to_owned();
    assert!(got.ends_with("peer 10.0.2.100\nok\n"), "{got}");
    let want = format!("done 10.0.2.100 serverfirst {sent}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&c.server_log()).lines().any(|l| l == want) {
        assert!(
            Instant::now() < deadline,
            "the server did not get everything after its own shutdown: want `{want}`, log:\n{}\n{}",
            read(&c.server_log()),
            s.tapir.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(spliced(&s.sock), 2);
    wait_no_tcp_flow(&s);
    assert_alive(&mut s);
}

#[test]
fn spliced_forward_to_a_closed_guest_port_ends_the_client_promptly() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some(mut s) = setup(&["--splice-forwards"]) else {
        return;
    };
    let c = Check::new();
    // Nothing listens on 9 in the guest.
    forward(&s, "127.0.0.1", 18223, 9, 1);
    let t0 = Instant::now();
    let out = c.run(&s, "probe 127.0.0.1 18223 10");
    let took = t0.elapsed();
    assert!(
        out.starts_with("reset ") || out.starts_with("eof "),
        "client must be reset or see end of file: {out}\n{}",
        s.tapir.logs()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}: {out}");
    assert_eq!(spliced(&s.sock), 1, "the refused connection was spliced");
    wait_no_tcp_flow(&s);
    assert_alive(&mut s);

    // Still serving, spliced, afterwards.
    let _srv = c.serve(&s.guest, 8080);
    forward(&s, "127.0.0.1", 18224, 8080, 2);
    let out = c.run(&s, "client 127.0.0.1 18224 both 100000 100000 6");
    assert_eq!(out, "peer 10.0.2.100\nok\n");
    assert_eq!(spliced(&s.sock), 2);
    wait_no_tcp_flow(&s);
}

#[test]
fn non_loopback_clients_are_not_spliced() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some(mut s) = setup(&["--splice-forwards"]) else {
        return;
    };
    // A client address that is not loopback, on an interface of the private host namespace
    // (a dummy link where the module exists, a veth pair otherwise).
    let out = s.host.sh(
        As::Runner,
        "(ip link add tapir-c0 type dummy 2>/dev/null || \
          (ip link add tapir-c0 type veth peer name tapir-c1 && ip link set tapir-c1 up)) && \
         ip link set tapir-c0 up && ip addr add 192.0.2.1/24 dev tapir-c0",
    );
    require!(
        out.status.success(),
        "cannot add a dummy or veth link: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = Check::new();
    let _srv = c.serve(&s.guest, 8080);
    forward(&s, "0.0.0.0", 18225, 8080, 1);
    let out = c.run(&s, "client 192.0.2.1 18225 both 300000 300000 7 192.0.2.1");
    assert_eq!(
        out, "peer 192.0.2.1\nok\n",
        "a non-loopback client keeps its own address (the stack path)"
    );
    assert_eq!(spliced(&s.sock), 0, "a non-loopback client is not spliced");
    assert_eq!(tcp_created(&s.sock), 1);
    // The same forward splices a loopback client.
    let out = c.run(&s, "client 127.0.0.1 18225 both 300000 300000 8");
    assert_eq!(out, "peer 10.0.2.100\nok\n");
    assert_eq!(spliced(&s.sock), 1);
    wait_no_tcp_flow(&s);
    assert_alive(&mut s);
}

#[test]
fn a_guest_addr_not_in_the_namespace_falls_back_to_the_stack() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some((mut s, c, _srv)) = start(&["--splice-forwards"]) else {
        return;
    };
    // 10.0.2.101 is in the subnet but not the guest's: the broker cannot bind to it.
    let r = api(
        &s.sock,
        r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":18226,"guest_addr":"10.0.2.101","guest_port":8080}}"#,
    );
    assert_eq!(r, r#"{"return":{"id":1}}"#);
    // Nobody answers for 10.0.2.101 on the stack path either: whatever the client gets is fine.
    let out = c.run(&s, "probe 127.0.0.1 18226 2");
    assert_eq!(spliced(&s.sock), 0, "not spliced: {out}");
    assert_eq!(
        tcp_created(&s.sock),
        1,
        "the connection took the stack path: {out}"
    );
    assert_alive(&mut s);
    // The broker still answers after refusing that address.
    forward(&s, "127.0.0.1", 18227, 8080, 2);
    let out = c.run(&s, "client 127.0.0.1 18227 both 100000 100000 9");
    assert_eq!(out, "peer 10.0.2.100\nok\n");
    assert_eq!(spliced(&s.sock), 1);
    assert_alive(&mut s);
}

#[test]
fn fifty_concurrent_spliced_connections() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some((mut s, c, _srv)) = start(&["--splice-forwards"]) else {
        return;
    };
    forward(&s, "127.0.0.1", 18228, 8080, 1);
    let fds = s.tapir.fd_count();
    // All 50 are connected end to end before any of them moves data.
    let out = c.run(&s, "multi 127.0.0.1 18228 50 262144 262144");
    assert_eq!(out, "peer 10.0.2.100\nok 50\n");
    assert_eq!(spliced(&s.sock), 50);
    wait_no_tcp_flow(&s);
    // Every socket and pipe of the 50 is closed again.
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.tapir.fd_count() > fds {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {} open, {fds} before",
            s.tapir.fd_count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_alive(&mut s);
}

/// Live children of `pid` (not yet exited), with their start times (to tell a reused PID).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((ppid, state, start)) = stat(p) {
            if ppid == pid && state != "Z" && state != "X" {
                out.push((p, start));
            }
        }
    }
    out
}

/// (ppid, state, start time) from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, String, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold anything, up to the last ')').
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        f.get(1)?.parse().ok()?,
        f.first()?.to_string(),
        f.get(19)?.to_string(),
    ))
}

/// Whether the process `pid` started at `start` has exited (gone, or a zombie).
fn exited(pid: u32, start: &str) -> bool {
    match stat(pid) {
        Some((_, state, st)) => st != start || state == "Z" || state == "X",
        None => true,
    }
}

/// The broker: exactly one child of tapir, inside the guest's network namespace.
fn broker(s: &Setup) -> (u32, String) {
    let kids = children(s.tapir.pid());
    assert_eq!(
        kids.len(),
        1,
        "exactly one child (the socket broker): {kids:?}\n{}",
        s.tapir.logs()
    );
    let (pid, start) = kids[0].clone();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok(),
        std::fs::read_link(s.guest.netns_path()).ok(),
        "the broker lives in the guest's network namespace"
    );
    (pid, start)
}

#[test]
fn the_socket_broker_is_one_confined_child_that_dies_with_tapir() {
    require!(check_tools().is_none(), "{}", check_tools().unwrap());
    let Some(mut s) = setup(&["--splice-forwards"]) else {
        return;
    };
    let (pid, start) = broker(&s);
    let extra = extra_args();
    let (seccomp, sandbox) = (
        extra.iter().any(|a| a == "--enable-seccomp"),
        extra.iter().any(|a| a == "--enable-sandbox"),
    );
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    if seccomp {
        assert!(
            status.contains("\nSeccomp:\t2\n"),
            "broker without the seccomp filter:\n{status}"
        );
    }
    if sandbox {
        assert!(
            status.contains("\nCapEff:\t0000000000000000\n"),
            "broker with capabilities:\n{status}"
        );
    }
    if !seccomp && !sandbox {
        eprintln!(
            "note: broker confinement not checked (TAPIR_TEST_EXTRA_ARGS=\"--enable-sandbox --enable-seccomp\" does)"
        );
    }
    // The confined broker still makes sockets (no child appears per connection).
    let c = Check::new();
    let _srv = c.serve(&s.guest, 8080);
    forward(&s, "127.0.0.1", 18229, 8080, 1);
    let out = c.run(&s, "client 127.0.0.1 18229 both 100000 100000 10");
    assert_eq!(out, "peer 10.0.2.100\nok\n");
    assert_eq!(spliced(&s.sock), 1);
    assert_eq!(
        broker(&s),
        (pid, start.clone()),
        "the same broker serves on"
    );

    // A clean exit takes the broker along.
    std::process::Command::new("kill")
        .args(["-TERM", &s.tapir.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        s.tapir.wait_exit(Duration::from_secs(5)),
        Some(Some(0)),
        "{}",
        s.tapir.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(pid, &start) {
        assert!(
            Instant::now() < deadline,
            "broker {pid} outlived tapir's exit by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // So does a SIGKILL (nothing in tapir runs: the broker must notice by itself).
    let Some(mut s) = setup(&["--splice-forwards"]) else {
        return;
    };
    let (pid, start) = broker(&s);
    std::process::Command::new("kill")
        .args(["-KILL", &s.tapir.pid().to_string()])
        .status()
        .unwrap();
    assert_eq!(s.tapir.wait_exit(Duration::from_secs(5)), Some(None));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(pid, &start) {
        assert!(
            Instant::now() < deadline,
            "broker {pid} outlived a killed tapir by 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
