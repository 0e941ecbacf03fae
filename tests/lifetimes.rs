//! Every TCP flow and every API connection ends in bounded time, whatever the guest or the client
//! does (nothing outlives its peer). These tests drive real guests and real host servers in the
//! private host namespace and watch the flow table through the API's `get_info`.
//!
//! Needs namespaces, python3 and `ip` (veth).

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Live TCP flows in tapir's table.
fn tcp_flows(sock: &std::path::Path) -> u64 {
    get_info(sock)["return"]["flows"]["tcp"]
        .as_u64()
        .expect("flows.tcp")
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = read(std::path::Path::new(&format!("/proc/{pid}/stat")));
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// Clients that give up while the host connect is still in flight (`curl --connect-timeout 1`
/// against a server whose connect takes longer): when the connect completes, tapir releases the
/// SYN-ACK, the guest's kernel answers it with RST (it has no such socket), and the flow and
/// its host connection must end at once. They used to stay ESTABLISHED on the host for good.
#[test]
fn clients_that_gave_up_during_a_slow_connect_leave_no_flow() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    let srv = host
        .cmd(As::Runner, "sh")
        .args(["-c", &format!("exec {} slow 127.0.0.1 18300", tcpserve())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut srv = Bg(srv);
    {
        use std::io::BufRead;
        let mut line = String::new();
        let out = srv.0.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let dir = Scratch::new("slowconn");
    let sock = dir.path("api.sock");
    let (g, t) = host.start(&["-c", "--api-socket", sock.to_str().unwrap()]);
    let before = t.fd_count();
    let out = g.ok("python3 -c '
import socket
n = 0
for i in range(4):
    try:
        socket.create_connection((\"10.0.2.2\", 18300), timeout=1)
    except socket.timeout:
        n += 1
print(n)
'");
    assert_eq!(out.trim(), "4", "every client gave up: {}", t.logs());
    // The server frees its queue 6 s after it started; the connects complete at their next
    // SYN retransmission (about 7 s), and each flow must then end at once.
    let t0 = Instant::now();
    wait_until(Duration::from_secs(20), || tcp_flows(&sock) == 0);
    eprintln!("flows gone {:?} after the clients gave up", t0.elapsed());
    wait_until(Duration::from_secs(5), || t.fd_count() <= before);
    let info = get_info(&sock);
    assert_eq!(info["return"]["flows_created"]["tcp"], 4, "{info}");
}

/// A host connect that never completes (the remote drops every SYN: a veth peer with a static
/// neighbour entry that answers nothing) ends after tapir's host connect timeout, with ICMP net
/// unreachable to the guest, instead of the kernel's ~127 s; and waiting costs no CPU (the
/// paused SYN-ACK must not make the flow ask for a pass again and again).
#[test]
fn a_host_connect_that_never_completes_times_out() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    let setup = host.sh(
        As::Runner,
        "ip link add bh0 type veth peer name bh1 && ip link set bh0 up && ip link set bh1 up && \
         ip addr add 192.0.2.1/24 dev bh0 && \
         ip neigh add 192.0.2.9 lladdr 02:00:00:00:00:09 dev bh0",
    );
    require!(
        setup.status.success(),
        "cannot make a veth in the host namespace: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let dir = Scratch::new("blackhole");
    let sock = dir.path("api.sock");
    let (g, t) = host.start(&["-c", "--api-socket", sock.to_str().unwrap()]);
    let client = "python3 -c '
import socket, time
t = time.time()
try:
    socket.create_connection((\"192.0.2.9\", 80), timeout=200)
    print(\"connected\")
except OSError as e:
    print(e.errno, round(time.time() - t))
'";
    let out = std::thread::scope(|s| {
        let c = s.spawn(|| g.ok(client));
        wait_until(Duration::from_secs(10), || tcp_flows(&sock) == 1);
        let ticks = cpu_ticks(t.pid());
        std::thread::sleep(Duration::from_secs(5));
        let used = cpu_ticks(t.pid()) - ticks;
        // 100 ticks a second: a flow that asked for a pass again and again would use ~500.
        assert!(
            used < 100,
            "tapir used {used} ticks in 5 s waiting for a connect"
        );
        c.join().unwrap()
    });
    let mut it = out.split_whitespace();
    let (errno, secs) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    assert_eq!(errno, "101", "ENETUNREACH expected: {out} {}", t.logs());
    let secs: u64 = secs.parse().unwrap();
    assert!((70..=90).contains(&secs), "gave up after {secs} s");
    wait_until(Duration::from_secs(5), || tcp_flows(&sock) == 0);
}

/// An API client that connects and sends nothing is closed after the request deadline (10 s),
/// so slow clients hold no descriptor for long (the deadline used to be kept but never
/// enforced: the connection stayed open until 64 newer ones pushed it out).
#[test]
fn a_silent_api_client_is_closed_after_the_request_deadline() {
    let Some(host) = host() else { return };
    let dir = Scratch::new("silentapi");
    let sock = dir.path("api.sock");
    let (_g, t) = host.start(&["--api-socket", sock.to_str().unwrap()]);
    let before = t.fd_count();
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    wait_until(Duration::from_secs(5), || t.fd_count() == before + 1);
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let n = std::io::Read::read(&mut c, &mut buf).expect("closed, not timed out");
    let waited = t0.elapsed();
    assert_eq!(n, 0, "no reply to no request");
    assert!(
        (Duration::from_secs(8)..Duration::from_secs(15)).contains(&waited),
        "closed after {waited:?}"
    );
    assert_eq!(t.fd_count(), before);
}

/// A port-forward client that arrives while tapir is out of descriptors is accepted once
/// descriptors are free again, without waiting for another client to arrive (the listener's
/// edge was spent on the failed accept).
#[test]
fn a_forward_client_waiting_out_an_fd_shortage_is_accepted_after_it() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    require!(tool("prlimit"), "prlimit (util-linux) not installed");
    let dir = Scratch::new("emfile");
    let sock = dir.path("api.sock");
    let (g, t) = host.start(&["-c", "--api-socket", sock.to_str().unwrap()]);
    let pid = t.pid().to_string();
    std::thread::scope(|s| {
        s.spawn(|| {
            g.ok("timeout 60 python3 -c '
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((\"0.0.0.0\", 8080)); l.listen(8)
c, _ = l.accept(); c.sendall(b\"hello\\n\"); c.close()
'")
        });
        wait_until(Duration::from_secs(10), || {
            g.sh_any("ss -H -tln | grep -q ':8080 '").status.success()
        });
        let reply = api(
            &sock,
            r#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"127.0.0.1","host_port":18400,"guest_port":8080}}"#,
        );
        assert!(reply.contains(r#""id""#), "{reply}");
        // No descriptor to spare (a soft limit below the lowest free descriptor): the
        // client's accept fails with EMFILE.
        let lim = host.sh(As::Runner, &format!("prlimit --pid {pid} --nofile=3:"));
        assert!(lim.status.success(), "{lim:?}");
        let client = s.spawn(|| {
            host.sh(
                As::Runner,
                "python3 -c '
import socket
c = socket.create_connection((\"127.0.0.1\", 18400), timeout=30)
c.settimeout(30)
print(c.recv(100).decode().strip())
'",
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let lim = host.sh(As::Runner, &format!("prlimit --pid {pid} --nofile=4096:"));
        assert!(lim.status.success(), "{lim:?}");
        let t0 = Instant::now();
        let out = client.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), "hello", "{out:?} {}", t.logs());
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    });
}

/// Time tapir spends stopped (SIGSTOP, a frozen cgroup) does not count against its flows: the
/// guest could not reach it meanwhile. A UDP flow that only talked to the DNS proxy expires
/// after 10 s idle; stopped for 15 s, it must still be the same flow (the same host port)
/// when tapir resumes.
#[test]
fn time_spent_stopped_does_not_expire_flows() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    let _dns = port_echo_resolver(&host);
    let (g, t) = host.start(&["-c"]);
    let pid = t.pid().to_string();
    let out = std::thread::scope(|s| {
        let guest = s.spawn(|| {
            g.ok("python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b\"q\", (\"10.0.2.3\", 53))
print(s.recv(64).decode(), flush=True)
time.sleep(17)
s.sendto(b\"q\", (\"10.0.2.3\", 53))
print(s.recv(64).decode())
'")
        });
        std::thread::sleep(Duration::from_secs(1));
        let stop = host.sh(
            As::Runner,
            &format!("kill -STOP {pid} && sleep 15 && kill -CONT {pid}"),
        );
        assert!(stop.status.success(), "{stop:?}");
        guest.join().unwrap()
    });
    let ports: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ports.len(), 2, "{out} {}", t.logs());
    assert_eq!(ports[0], ports[1], "the flow was replaced: {out}");
}

/// A "resolver" on the host's 127.0.0.1:53 (the private resolv.conf names it) that answers
/// each datagram with the port it came from.
fn port_echo_resolver(host: &HostNs) -> Bg {
    let bg = host.spawn(
        As::Runner,
        "python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((\"127.0.0.1\", 53))
while True:
    d, peer = s.recvfrom(512)
    s.sendto(str(peer[1]).encode(), peer)
'",
    );
    host.wait_listening(53, true);
    bg
}

/// A UDP flow that only talked to the DNS proxy ends about 10 s after its last datagram, even
/// when it is the only flow (the expiry check used to be scheduled only while flows existed at
/// the previous check, so it could come up to a minute late).
#[test]
fn a_dns_only_udp_flow_expires_on_time() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    let _dns = port_echo_resolver(&host);
    let dir = Scratch::new("dnsexpiry");
    let sock = dir.path("api.sock");
    let (g, _t) = host.start(&["-c", "--api-socket", sock.to_str().unwrap()]);
    g.ok("python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b\"q\", (\"10.0.2.3\", 53))
s.recv(64)
'");
    let t0 = Instant::now();
    let udp = || get_info(&sock)["return"]["flows"]["udp"].as_u64().unwrap();
    assert_eq!(udp(), 1);
    wait_until(Duration::from_secs(20), || udp() == 0);
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(8), "expired after {took:?}");
    assert!(took <= Duration::from_secs(13), "expired after {took:?}");
}

/// Times the process went to sleep and was woken (`voluntary_ctxt_switches`).
fn wakeups(pid: u32) -> u64 {
    read(std::path::Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches")
}

/// Frames tapir sent to the guest so far.
fn frames_to_guest(sock: &std::path::Path) -> u64 {
    get_info(sock)["return"]["frames"]["tx"]
        .as_u64()
        .expect("frames.tx")
}

/// An idle helper sleeps: with no traffic it makes no wake-ups of its own (no periodic timer
/// without a reason), and with many idle connections open their keep-alives share one grid
/// point per interval, so a few wake-ups serve them all (each used to be probed at its own
/// time: about one wake-up per connection per 30 s). The connections stay open, and the
/// keep-alives do go out.
#[test]
fn an_idle_helper_sleeps_and_idle_connections_share_their_keepalive_wakeups() {
    let Some(host) = host() else { return };
    require!(tool("python3"), "python3 not installed");
    const CONNS: usize = 300;
    let _srv = host.spawn(As::Runner, &format!("{} hold 127.0.0.1 18310", tcpserve()));
    host.wait_listening(18310, false);
    let dir = Scratch::new("idlewake");
    let sock = dir.path("api.sock");
    let (g, t) = host.start(&["-c", "--api-socket", sock.to_str().unwrap()]);
    // The guest's own IPv6 chatter (router solicitations) would wake any helper: silence it.
    g.ok("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    std::thread::sleep(Duration::from_secs(1));
    let w0 = wakeups(t.pid());
    std::thread::sleep(Duration::from_secs(4));
    let idle = wakeups(t.pid()) - w0;
    assert!(idle <= 1, "{idle} wake-ups in 4 s with nothing to do");

    let holder = dir.path("holder.py");
    std::fs::write(
        &holder,
        format!(
            "import socket, time\n\
             c = [socket.create_connection(('10.0.2.2', 18310)) for _ in range({CONNS})]\n\
             time.sleep(3600)\n"
        ),
    )
    .unwrap();
    let _holder = in_guest(&g, &format!("python3 {}", holder.display()));
    wait_until(Duration::from_secs(30), || tcp_flows(&sock) == CONNS as u64);
    std::thread::sleep(Duration::from_secs(1));
    // Long enough for every connection's keep-alive to come due once (30 to 60 s after its
    // last segment, on the grid).
    let (w0, f0) = (wakeups(t.pid()), frames_to_guest(&sock));
    std::thread::sleep(Duration::from_secs(62));
    let (woke, probes) = (wakeups(t.pid()) - w0, frames_to_guest(&sock) - f0);
    eprintln!("{CONNS} idle connections: {woke} wake-ups, {probes} frames to the guest in 62 s");
    assert!(
        probes >= CONNS as u64,
        "every idle connection is probed: {probes} frames"
    );
    assert!(
        woke <= 60,
        "{woke} wake-ups in 62 s for {CONNS} idle connections"
    );
    assert_eq!(tcp_flows(&sock), CONNS as u64, "{}", t.logs());
}
