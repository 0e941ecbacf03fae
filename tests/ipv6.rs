//! IPv6 beyond the default fd00::/64: `--cidr6`, IPv6 port forwards (API and `-p`), fragments
//! both ways, and ICMP errors from the host path (packet too big, time exceeded; IPv4 beside).
//!
//! Servers listen in the private host namespace (`::1`, or an extra address on its `lo`) or in
//! the guest; a "remote" behind a router sits in namespaces of its own ([`routed_remote`]).
//! DNS goes to `tests/tools/dnsserve.py` on `::1` through the private resolv.conf. The guest
//! gets its address by SLAAC from tapir's router advertisements.

mod common;
use common::*;
use std::time::Duration;

/// The prefix the `--cidr6` tests move the network to.
const PREFIX: &str = "fd42:7a:1:2::";

fn tools() -> String {
    format!("{}/tests/tools", env!("CARGO_MANIFEST_DIR"))
}

/// Wait until the guest holds a usable (not tentative) global address starting with `start`;
/// returns it.
fn slaac(g: &Guest, t: &Tapir, start: &str) -> String {
    let script = format!(
        "ip -6 -o addr show dev tap0 scope global -tentative | grep -o 'inet6 {start}[0-9a-f:]*'"
    );
    let mut found = String::new();
    wait_until(Duration::from_secs(10), || {
        let out = g.sh_any(&script);
        found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        !found.is_empty()
    });
    let addr = found.trim_start_matches("inet6 ").to_owned();
    assert!(addr.starts_with(start), "{addr}\n{}", t.logs());
    addr
}

#[test]
fn cidr6_moves_slaac_gateway_and_dns() {
    let Some(host) = host() else { return };
    need!("python3", "ncat", "dig");
    let _dns = host.spawn(
        As::Runner,
        &format!("python3 {}/dnsserve.py ::1 53 192.0.2.66", tools()),
    );
    let _srv = host.spawn(
        As::Runner,
        &format!("python3 {}/tcpserve.py greet ::1 18301", tools()),
    );
    host.wait_listening(18301, false);
    host.wait_listening(53, true);
    host.set_resolv_conf("nameserver ::1\n");
    let cidr6 = format!("--cidr6={PREFIX}/64");
    let (g, t) = host.start(&["-c", "-6", &cidr6]);
    let addr = slaac(&g, &t, "fd42:7a:1:2:");
    assert!(!addr.starts_with("fd00:"), "{addr}");
    let route = g.ok("ip -6 route show default");
    assert!(route.contains("via fe80::2"), "{route}");
    g.ok(&format!("ping -6 -c 1 -W 2 {PREFIX}2"));
    g.ok(&format!("ping -6 -c 1 -W 2 {PREFIX}3"));
    // The old addresses are nobody's now.
    assert!(!g.sh_any("ping -6 -c 1 -W 1 fd00::2").status.success());
    // DNS through PREFIX::3, over UDP and TCP.
    let udp = g.ok(&format!(
        "dig +short +time=2 +tries=2 @{PREFIX}3 tapir.test"
    ));
    assert_eq!(udp.trim(), "192.0.2.66", "{}", t.logs());
    let tcp = g.ok(&format!(
        "dig +tcp +short +time=2 +tries=2 @{PREFIX}3 tapir.test"
    ));
    assert_eq!(tcp.trim(), "192.0.2.66", "{}", t.logs());
    // PREFIX::2 is the host's ::1.
    let out = g.ok(&format!("ncat {PREFIX}2 18301 </dev/null"));
    assert_eq!(out, "ok\n", "{}", t.logs());
}

#[test]
fn cidr6_refuses_bad_prefixes() {
    for (bad, why) in [
        ("fd00::/48", "must be 64"),
        ("fd00::1/64", "host bits"),
        ("ff02::/64", "multicast"),
        ("fe80::/64", "link-local"),
        ("10.0.2.0/24", "IPv4"),
    ] {
        let arg = format!("--cidr6={bad}");
        let (code, _, err) = run_cli(&["-6", &arg, "1", "tap0"]);
        assert_eq!(code, Some(1), "{bad}: {err}");
        assert!(
            err.contains("invalid --cidr6") && err.contains(why),
            "{bad}: {err}"
        );
    }
}

fn add(
    sock: &std::path::Path,
    proto: &str,
    host: &str,
    port: u16,
    guest: &str,
    gport: u16,
) -> String {
    api(
        sock,
        &format!(
            r#"{{"execute":"add_hostfwd","arguments":{{"proto":"{proto}","host_addr":"{host}","host_port":{port},"guest_addr":"{guest}","guest_port":{gport}}}}}"#
        ),
    )
}

/// Another local IPv6 address of the private host namespace (a client that keeps its address).
const OTHER: &str = "2001:db8:77::1";

#[test]
fn ipv6_forwards_reach_the_learned_guest_address_with_client_addresses() {
    let Some(host) = host() else { return };
    need!("python3", "ncat", "ss", "nsenter");
    let dir = Scratch::new("v6fwd");
    let sock = dir.path("api.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    let peers = dir.path("peers");
    let g = host.guest(As::Runner);
    // Before the guest's address is known, -p already names it: `::`.
    let _srv = in_guest(
        &g,
        &format!(
            "python3 {}/tcpserve.py greet :: 8080 > {}",
            tools(),
            peers.display()
        ),
    );
    let _udp = in_guest(
        &g,
        &format!("python3 {}/tcpserve.py udpecho :: 5353", tools()),
    );
    let pid = g.pid.to_string();
    let mut t = Tapir::spawn(
        &host,
        As::Runner,
        &[
            "-c",
            "-6",
            "--api-socket",
            &sock_s,
            "-p",
            "[::1]:18310:[::]:8080",
            &pid,
            "tap0",
        ],
        false,
    );
    t.wait_ready();
    host.sh(
        As::Runner,
        &format!("ip -6 addr add {OTHER}/128 dev lo nodad"),
    );
    let addr = slaac(&g, &t, "fd00:");
    wait_until(Duration::from_secs(5), || {
        g.sh_any("ss -tln | grep -q ':8080 ' && ss -uln | grep -q ':5353 '")
            .status
            .success()
    });

    // The API: IPv6 host and guest addresses, TCP and UDP, an IPv4 host to the IPv6 guest.
    assert_eq!(
        add(&sock, "tcp", "::", 18311, "::", 8080),
        r#"{"return":{"id":2}}"#
    );
    assert_eq!(
        add(&sock, "udp", "::1", 18312, "::", 5353),
        r#"{"return":{"id":3}}"#
    );
    assert_eq!(
        add(&sock, "tcp", "127.0.0.1", 18313, &addr, 8080),
        r#"{"return":{"id":4}}"#
    );
    // tapir ctl with the same syntax as -p.
    let (code, out, err) = run_cli(&["ctl", &sock_s, "add", "[::1]:18314:[::]:8080"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), r#"{"return":{"id":5}}"#);
    // Unusable guest addresses are refused.
    for bad in ["fd00::2", "fd01::1", "fe80::1"] {
        assert_eq!(
            add(&sock, "tcp", "::1", 18319, bad, 80),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}"#,
            "{bad}"
        );
    }
    let list = api(&sock, r#"{"execute":"list_hostfwd"}"#);
    for entry in [
        r#"{"id":1,"proto":"tcp","host_addr":"::1","host_port":18310,"guest_addr":"::","guest_port":8080}"#,
        r#"{"id":2,"proto":"tcp","host_addr":"::","host_port":18311,"guest_addr":"::","guest_port":8080}"#,
        r#"{"id":3,"proto":"udp","host_addr":"::1","host_port":18312,"guest_addr":"::","guest_port":5353}"#,
    ] {
        assert!(list.contains(entry), "{list}");
    }
    assert!(
        list.contains(&format!(r#""guest_addr":"{addr}""#)),
        "{list}"
    );

    // TCP: a loopback client appears as the IPv6 gateway, another address as itself.
    let clients = [
        "ncat ::1 18310",
        &format!("ncat -s {OTHER} {OTHER} 18311"),
        "ncat 127.0.0.1 18313",
        "ncat ::1 18314",
    ];
    for c in clients {
        let out = host.sh(As::Runner, &format!("{c} </dev/null"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "{c}: {out:?}\n{}",
            t.logs()
        );
    }
    wait_until(Duration::from_secs(3), || read(&peers).lines().count() >= 4);
    assert_eq!(
        read(&peers),
        format!("peer fd00::2\npeer {OTHER}\npeer fd00::2\npeer fd00::2\n")
    );

    // UDP over IPv6, both ways (up to three tries on a loaded machine).
    let mut ok = false;
    for _ in 0..3 {
        let o = host.sh(
            As::Runner,
            "(echo udp6-fwd; sleep 2) | ncat -u -w 3 ::1 18312",
        );
        if o.stdout == b"udp6-fwd\n" {
            ok = true;
            break;
        }
    }
    assert!(ok, "no UDP echo over IPv6\n{}", t.logs());
}

/// Host side: answer every datagram with one of 4000 bytes.
const BIG_REPLY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::1", int(sys.argv[1])))
while True:
    _, peer = s.recvfrom(100)
    s.sendto(bytes(range(250)) * 16, peer)
"#;

/// Guest side: ask, print the length of the answer and whether it is intact.
const ASK_BIG: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
for attempt in range(3):
    s.sendto(b"big?", (sys.argv[1], int(sys.argv[2])))
    try:
        data = s.recv(65535)
        print(len(data), data == bytes(range(250)) * 16)
        break
    except socket.timeout:
        pass
"#;

#[test]
fn ipv6_udp_reply_larger_than_the_mtu_arrives_in_fragments() {
    let Some(host) = host() else { return };
    need!("python3");
    let dir = Scratch::new("v6frag");
    let (srv, ask) = (dir.path("big.py"), dir.path("ask.py"));
    std::fs::write(&srv, BIG_REPLY).unwrap();
    std::fs::write(&ask, ASK_BIG).unwrap();
    let _srv = host.spawn(As::Runner, &format!("python3 {} 18330", srv.display()));
    host.wait_listening(18330, true);
    let dir_s = dir.0.display().to_string();
    let api_sock = format!("{dir_s}/api.sock");
    let (g, t) = host.start(&["-c", "-6", "--mtu=1500", "--api-socket", &api_sock]);
    slaac(&g, &t, "fd00:");
    let out = g.ok(&format!("python3 {} fd00::2 18330", ask.display()));
    assert_eq!(out.trim(), "4000 True", "{}", t.logs());
    let info = get_info(std::path::Path::new(&api_sock));
    assert!(
        info["return"]["udp6_fragmented"].as_u64() >= Some(1),
        "{info}"
    );
}

#[test]
fn tapir_run_with_cidr6_names_the_moved_dns_and_gets_slaac() {
    let Some(host) = host() else { return };
    let b = shared_bin();
    let script = "for i in $(seq 50); do ip -6 addr show dev tap0 scope global -tentative \
                  | grep -q 'inet6 fd42:7a:1:2:' && break; sleep 0.2; done; \
                  cat /etc/resolv.conf; ip -6 -o addr show dev tap0 scope global";
    let out = host.sh(
        As::Runner,
        &format!(
            "{} run -6 --cidr6={PREFIX}/64 -- sh -c {}",
            b.display(),
            shell_quote(script)
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("nameserver {PREFIX}3\n")), "{out:?}");
    assert!(text.contains("inet6 fd42:7a:1:2:"), "{out:?}");
}

/// A routed "remote" for the host path: the private host namespace reaches a router namespace
/// over a veth (198.51.100.0/24, 2001:db8:1::/64; the router is .2 / ::2), and the router
/// reaches a far namespace over a second veth of MTU 1280 (203.0.113.0/24, 2001:db8:2::/64;
/// the far end is .2 / ::2). On the host, the IPv4 route to the far net has MTU 1000, so an
/// IPv4 datagram too big is refused by the host itself, an IPv6 one by the router. Nothing
/// answers UDP in the far namespace (port unreachable). Returns the namespace holders.
fn routed_remote(host: &HostNs) -> [Bg; 2] {
    let router = host.spawn(As::Runner, "unshare -n sleep 3600");
    let far = host.spawn(As::Runner, "unshare -n sleep 3600");
    let rp = wait_for_descendant(router.0.id(), "sleep");
    let fp = wait_for_descendant(far.0.id(), "sleep");
    let script = format!(
        "set -e
         ip link add h0 type veth peer name r0 netns /proc/{rp}/ns/net
         ip addr add 198.51.100.1/24 dev h0
         ip -6 addr add 2001:db8:1::1/64 dev h0 nodad
         ip link set h0 up
         ip route add 203.0.113.0/24 via 198.51.100.2 mtu lock 1000
         ip -6 route add 2001:db8:2::/64 via 2001:db8:1::2
         nsenter -t {rp} -n sh -c 'set -e; ip link set lo up
           ip addr add 198.51.100.2/24 dev r0; ip -6 addr add 2001:db8:1::2/64 dev r0 nodad
           ip link set r0 up
           ip link add r1 type veth peer name f0 netns /proc/{fp}/ns/net
           ip link set r1 mtu 1280
           ip addr add 203.0.113.1/24 dev r1; ip -6 addr add 2001:db8:2::1/64 dev r1 nodad
           ip link set r1 up
           echo 1 > /proc/sys/net/ipv4/ip_forward
           echo 1 > /proc/sys/net/ipv6/conf/all/forwarding'
         nsenter -t {fp} -n sh -c 'set -e; ip link set lo up; ip link set f0 mtu 1280
           ip addr add 203.0.113.2/24 dev f0; ip -6 addr add 2001:db8:2::2/64 dev f0 nodad
           ip link set f0 up
           ip route add default via 203.0.113.1; ip -6 route add default via 2001:db8:2::1'"
    );
    let out = host.sh(As::Runner, &script);
    assert!(out.status.success(), "routed remote namespaces: {out:?}");
    // The far end answers through the router before any test relies on it.
    wait_until(Duration::from_secs(5), || {
        host.sh(
            As::Runner,
            "ping -6 -c 1 -W 1 2001:db8:2::2 && ping -c 1 -W 1 203.0.113.2",
        )
        .status
        .success()
    });
    [router, far]
}

/// Run `tests/tools/udpprobe.py` in the guest; its one line of output.
fn probe(g: &Guest, args: &str) -> String {
    g.ok(&format!("python3 {}/udpprobe.py {args}", tools()))
        .trim()
        .to_owned()
}

#[test]
fn datagram_too_big_for_the_host_path_gets_packet_too_big() {
    let Some(host) = host() else { return };
    need!("python3", "ping");
    let _ns = routed_remote(&host);
    let dir = Scratch::new("v6ptb");
    let api_sock = dir.path("api.sock");
    let api_s = api_sock.to_string_lossy().into_owned();
    let (g, t) = host.start(&["-c", "-6", "--mtu=1500", "--api-socket", &api_s]);
    slaac(&g, &t, "fd00:");
    // IPv6: the router cannot forward 1400 bytes onto its 1280 link; its Packet Too Big
    // reaches the host socket and is relayed with the MTU.
    let out = probe(&g, "2001:db8:2::2 9 1400");
    assert!(
        out.starts_with("errno=EMSGSIZE origin=3 type=2 code=0 info=1280 "),
        "{out}\n{}",
        t.logs()
    );
    // The guest learned the path MTU: the next datagram that large fails at once.
    let route = g.ok("ip -6 route get 2001:db8:2::2");
    assert!(route.contains("mtu 1280"), "{route}");
    assert_eq!(probe(&g, "2001:db8:2::2 9 1400"), "local EMSGSIZE");
    // IPv4 with DF: the host's own route is 1000 bytes; the guest hears "fragmentation
    // needed" with that MTU.
    let out = probe(&g, "203.0.113.2 9 1400");
    assert!(
        out.starts_with("errno=EMSGSIZE origin=2 type=3 code=4 info=1000 "),
        "{out}\n{}",
        t.logs()
    );
    let info = get_info(&api_sock);
    assert!(
        info["return"]["icmp_too_big_sent"].as_u64() >= Some(2),
        "{info}"
    );
    // Datagrams that fit still go through (the far end refuses the port: an answer).
    let out = probe(&g, "2001:db8:2::2 9 1000");
    assert!(
        out.starts_with("errno=ECONNREFUSED origin=3 type=1 code=4 "),
        "{out}"
    );
}

#[test]
fn hop_limits_pass_on_and_time_exceeded_comes_back_from_the_router() {
    let Some(host) = host() else { return };
    need!("python3", "ping");
    let _ns = routed_remote(&host);
    let (g, t) = host.start(&["-c", "-6"]);
    slaac(&g, &t, "fd00:");
    // Hop limit 1 dies at the router, which answers with Time Exceeded from its own address;
    // hop limit 2 reaches the far end, which refuses the port: what traceroute -U needs.
    for (args, want) in [
        (
            "2001:db8:2::2 33434 20 1",
            "errno=EHOSTUNREACH origin=3 type=3 code=0 info=0 from=2001:db8:1::2",
        ),
        (
            "2001:db8:2::2 33435 20 2",
            "errno=ECONNREFUSED origin=3 type=1 code=4 info=0 from=2001:db8:2::2",
        ),
        (
            "203.0.113.2 33434 20 1",
            "errno=EHOSTUNREACH origin=2 type=11 code=0 info=0 from=198.51.100.2",
        ),
        (
            "203.0.113.2 33435 20 2",
            "errno=ECONNREFUSED origin=2 type=3 code=3 info=0 from=203.0.113.2",
        ),
    ] {
        assert_eq!(probe(&g, args), want, "{args}\n{}", t.logs());
    }
}

#[test]
fn ipv6_guest_datagram_of_9000_bytes_at_mtu_1500_arrives_whole() {
    let Some(host) = host() else { return };
    need!("python3");
    let _echo = host.spawn(As::Runner, &format!("{} udpecho ::1 18340", tcpserve()));
    host.wait_listening(18340, true);
    let dir = Scratch::new("v6reasm");
    let api_sock = dir.path("api.sock");
    let api_s = api_sock.to_string_lossy().into_owned();
    let (g, t) = host.start(&["-c", "-6", "--mtu=1500", "--api-socket", &api_s]);
    slaac(&g, &t, "fd00:");
    // The guest's kernel fragments the datagram; tapir reassembles it for the host socket, and
    // fragments the echo on the way back.
    let script = r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(2)
data = bytes(i % 251 for i in range(9000))
for attempt in range(3):
    s.sendto(data, ("fd00::2", 18340))
    try:
        back = s.recv(65535)
        print(len(back), back == data)
        break
    except socket.timeout:
        pass
"#;
    let out = g.ok(&format!("python3 -c {}", shell_quote(script)));
    assert_eq!(out.trim(), "9000 True", "{}", t.logs());
    let info = get_info(&api_sock);
    assert!(info["return"]["fragments"].as_u64() >= Some(7), "{info}");
    assert_eq!(info["return"]["reassembly_dropped"], 0, "{info}");
}
