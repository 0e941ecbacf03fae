//! Outbound NAT: the guest's TCP, UDP, ICMP and DNS reach servers in the private host namespace.
//!
//! Every server listens on `lo` of the private host namespace (127.0.0.1 for the host-loopback
//! path, 198.51.100.1/32 for "another host"), and DNS goes to dnsmasq on 127.0.0.1 through the
//! private resolv.conf the harness bind-mounts. Needs namespaces plus ncat, dig and dnsmasq.

mod common;
use common::*;
use std::time::{Duration, Instant};

/// Start tapir with `-c` and `extra` for a fresh guest; returns both, ready.
fn start(host: &HostNs, extra: &[&str]) -> (Guest, Tapir) {
    let mut args = vec!["-c"];
    args.extend_from_slice(extra);
    host.start(&args)
}

#[test]
fn http_through_the_gateway_reaches_host_loopback() {
    let Some(host) = host() else { return };
    need!("busybox");
    let dir = Scratch::new("www");
    std::fs::write(dir.path("hello.txt"), "hello from the host\n").unwrap();
    let _srv = host.spawn(
        As::Runner,
        &format!("busybox httpd -f -p 127.0.0.1:18080 -h {}", dir.0.display()),
    );
    host.wait_listening(18080, false);
    let (g, t) = start(&host, &[]);
    let out = g.ok("busybox wget -q -O - http://10.0.2.2:18080/hello.txt");
    assert_eq!(out, "hello from the host\n", "{}", t.logs());
}

#[test]
fn refused_port_fails_fast_with_rst() {
    let Some(host) = host() else { return };
    need!("ncat");
    let (g, _t) = start(&host, &[]);
    let t0 = Instant::now();
    let out = g.sh_any("ncat -w 5 10.0.2.2 18081 </dev/null");
    let took = t0.elapsed();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection refused"), "{err}");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
}

/// Frames tapir read from and wrote to the tap so far (API `get_info`).
fn frames(sock: &std::path::Path) -> (u64, u64) {
    let v = get_info(sock);
    let f = &v["return"]["frames"];
    (
        f["rx"].as_u64().expect("frames.rx"),
        f["tx"].as_u64().expect("frames.tx"),
    )
}

/// 50 MB each way through the gateway, compared by sha256. With `offload` at a small MTU, the
/// frame counters must show that TCP crossed the tap in super-segments (the guest's kernel and
/// tapir each moved far fewer frames than MTU-sized segments would take); without, at least
/// one frame per MSS. With `v6`, over IPv6 (fd00::2 to the host's ::1).
fn bulk_both_ways(mtu: &str, offload: bool, v6: bool) {
    let Some(host) = host() else { return };
    need!("ncat", "sha256sum");
    let dir = Scratch::new("bulk");
    let src = dir.path("src.bin");
    random_file(&src, 50_000_000);
    let want = sha256(&src);
    let sock = dir.path("api.sock");
    let sock_arg = sock.display().to_string();
    let mut args = vec!["--mtu", mtu, "--api-socket", &sock_arg];
    if !offload {
        args.push("--disable-offload");
    }
    if v6 {
        args.push("--enable-ipv6");
    }
    let (g, t) = start(&host, &args);
    let (host_addr, gateway) = if v6 {
        wait_until(Duration::from_secs(10), || {
            g.sh_any("ip -6 addr show dev tap0 scope global -tentative | grep -q 'inet6 fd00::'")
                .status
                .success()
        });
        ("::1", "fd00::2")
    } else {
        ("127.0.0.1", "10.0.2.2")
    };

    let segments: u64 = {
        let mss: u64 = mtu.parse::<u64>().unwrap() - if v6 { 60 } else { 40 };
        50_000_000 / mss
    };
    // At MTU 65520 a segment already fills a super-segment: nothing to count.
    let small_mtu = segments > 10_000;
    let info = get_info(&sock);
    let tap = &info["return"]["tap"];
    assert_eq!(tap["vnet_hdr_len"], if offload { 10 } else { 0 }, "{tap}");
    assert_eq!(tap["offload_to_guest"], offload, "{tap}");
    assert_eq!(tap["tso_from_guest"], offload, "{tap}");
    let before = frames(&sock);

    // host -> guest
    let _srv = host.spawn(
        As::Runner,
        &format!("ncat -l {host_addr} 18082 --send-only < {}", src.display()),
    );
    host.wait_listening(18082, false);
    let down = dir.path("down.bin");
    g.ok(&format!(
        "timeout 120 ncat --recv-only {gateway} 18082 > {}",
        down.display()
    ));
    assert_eq!(
        sha256(&down),
        want,
        "host->guest corrupted at MTU {mtu}\n{}",
        t.logs()
    );
    let mid = frames(&sock);
    let tx = mid.1 - before.1;
    // Super-segments both ways: smoltcp's own for IPv4, tapir's merging of consecutive
    // segments for IPv6 (device::vnet::coalesce_tcpv6), which smoltcp cannot build.
    if offload && small_mtu {
        assert!(
            tx < segments / 4,
            "host->guest took {tx} frames for {segments} segments: no segmentation offload?"
        );
    } else {
        assert!(tx >= segments, "{tx} frames for {segments} segments");
    }

    // guest -> host
    let up = dir.path("up.bin");
    let srv = host.spawn(
        As::Runner,
        &format!("ncat -l {host_addr} 18083 --recv-only > {}", up.display()),
    );
    host.wait_listening(18083, false);
    g.ok(&format!(
        "timeout 120 ncat --send-only {gateway} 18083 < {}",
        src.display()
    ));
    let mut srv = srv;
    wait_until(Duration::from_secs(10), || {
        matches!(srv.0.try_wait(), Ok(Some(_)))
    });
    assert_eq!(
        sha256(&up),
        want,
        "guest->host corrupted at MTU {mtu}\n{}",
        t.logs()
    );
    let rx = frames(&sock).0 - mid.0;
    if offload && small_mtu {
        assert!(
            rx < segments / 4,
            "guest->host took {rx} frames for {segments} segments: no TSO from the guest?"
        );
    } else {
        assert!(rx >= segments, "{rx} frames for {segments} segments");
    }
}

#[test]
fn bulk_50mb_each_way_mtu_65520() {
    bulk_both_ways("65520", true, false);
}

#[test]
fn bulk_50mb_each_way_mtu_1500() {
    bulk_both_ways("1500", true, false);
}

#[test]
fn bulk_50mb_each_way_ipv6_mtu_1500() {
    bulk_both_ways("1500", true, true);
}

#[test]
fn bulk_50mb_each_way_mtu_1500_without_offload() {
    bulk_both_ways("1500", false, false);
}

#[test]
fn half_close_send_shut_write_then_read_reply() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    // The server reads until EOF, then answers: works only if the guest's FIN reaches it while
    // the other direction stays open.
    let _srv = host.spawn(
        As::Runner,
        &format!("{} halfclose 127.0.0.1 18084", tcpserve()),
    );
    host.wait_listening(18084, false);
    let (g, t) = start(&host, &[]);
    let out = g.ok("printf 0123456789 | ncat 10.0.2.2 18084");
    assert_eq!(out.trim(), "got 10 bytes", "{}", t.logs());
}

#[test]
fn udp_echo_via_gateway_and_to_another_address() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let _a = host.spawn(
        As::Runner,
        &format!("{} udpecho 127.0.0.1 18085", tcpserve()),
    );
    let _b = host.spawn(
        As::Runner,
        &format!("{} udpecho 198.51.100.1 18086", tcpserve()),
    );
    host.wait_listening(18085, true);
    host.wait_listening(18086, true);
    let (g, t) = start(&host, &[]);
    for (ip, port) in [("10.0.2.2", 18085), ("198.51.100.1", 18086)] {
        let out = g.ok(&format!(
            "(echo udp-ping; sleep 1) | ncat -u -w 2 {ip} {port}"
        ));
        assert_eq!(out.trim(), "udp-ping", "udp to {ip}\n{}", t.logs());
    }
    // A closed UDP port reports ECONNREFUSED through the relayed ICMP error.
    let out = g.sh_any("(echo x; sleep 1; echo y) | ncat -u 10.0.2.2 18099");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Connection refused"), "{err}");
}

fn dnsmasq(host: &HostNs, addr: &str, answer: &str) -> Bg {
    host.spawn(
        As::Runner,
        &format!(
            "dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
             --listen-address={addr} --port=53 --user=root --pid-file= \
             --address=/tapir.test/{answer}"
        ),
    )
}

#[test]
fn dns_via_n3_over_udp_and_tcp_follows_resolv_conf() {
    let Some(host) = host() else { return };
    need!("dig", "dnsmasq");
    host.sh(
        As::Runner,
        "ip addr add 127.0.0.2/8 dev lo 2>/dev/null; true",
    );
    let _d1 = dnsmasq(&host, "127.0.0.1", "192.0.2.1");
    let _d2 = dnsmasq(&host, "127.0.0.2", "192.0.2.2");
    wait_until(Duration::from_secs(5), || {
        host.sh(
            As::Runner,
            "dig +short +time=1 +tries=1 @127.0.0.2 tapir.test | grep -q 192.0.2.2",
        )
        .status
        .success()
    });
    let (g, t) = start(&host, &[]);
    let udp = g.ok("dig +short +time=2 +tries=2 @10.0.2.3 tapir.test");
    assert_eq!(udp.trim(), "192.0.2.1", "{}", t.logs());
    let tcp = g.ok("dig +tcp +short +time=2 +tries=2 @10.0.2.3 tapir.test");
    assert_eq!(tcp.trim(), "192.0.2.1", "{}", t.logs());
    // Other ports of the DNS address are not served.
    let out = g.sh_any("ncat -w 2 10.0.2.3 80 </dev/null");
    assert!(!out.status.success());
    // The host's resolv.conf changes: followed within a couple of seconds.
    host.set_resolv_conf("nameserver 127.0.0.2\n");
    wait_until(Duration::from_secs(5), || {
        g.sh_any("dig +short +time=1 +tries=1 @10.0.2.3 tapir.test")
            .stdout
            .starts_with(b"192.0.2.2")
    });
}

#[test]
fn ping_a_non_gateway_address() {
    let Some(host) = host() else { return };
    host.sh(As::Runner, "ip addr add 198.51.100.1/32 dev lo");
    let (g, t) = start(&host, &[]);
    let out = g.sh_any("ping -c 2 -i 0.2 -W 2 198.51.100.1");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        t.logs()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from 198.51.100.1"), "{text}");
}

#[test]
fn disable_host_loopback_refuses_at_once_while_dns_works() {
    let Some(host) = host() else { return };
    need!("ncat", "dig", "dnsmasq", "python3");
    let _srv = host.spawn(As::Runner, &format!("{} greet 127.0.0.1 18087", tcpserve()));
    let _d = dnsmasq(&host, "127.0.0.1", "192.0.2.9");
    host.wait_listening(18087, false);
    let (g, t) = start(&host, &["--disable-host-loopback"]);
    let t0 = Instant::now();
    let out = g.sh_any("ncat -w 5 10.0.2.2 18087 </dev/null");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "refusal must be immediate"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Network is unreachable"),
        "{err}\n{}",
        t.logs()
    );
    let dns = g.ok("dig +short +time=2 +tries=2 @10.0.2.3 tapir.test");
    assert_eq!(dns.trim(), "192.0.2.9");
    // Echo to the gateway is still answered locally.
    g.ok("ping -c 1 -W 2 10.0.2.2");
}

#[test]
fn outbound_addr_is_the_source_the_server_sees() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    host.sh(
        As::Runner,
        "ip addr add 198.51.100.1/32 dev lo && ip addr add 198.51.100.2/32 dev lo",
    );
    let dir = Scratch::new("outbound");
    let log = dir.path("ncat.log");
    let _srv = host.spawn(
        As::Runner,
        &format!("{} greet 198.51.100.1 18088 >{}", tcpserve(), log.display()),
    );
    host.wait_listening(18088, false);
    let (g, t) = start(&host, &["--outbound-addr=198.51.100.2"]);
    g.ok("ncat 198.51.100.1 18088 </dev/null");
    wait_until(Duration::from_secs(3), || {
        read(&log).contains("peer 198.51.100.2")
    });
    drop(t);
    drop(g);
    // By interface name: the first IPv4 address of lo (127.0.0.1).
    let (g, t) = start(&host, &["--outbound-addr=lo"]);
    g.ok("ncat 198.51.100.1 18088 </dev/null");
    wait_until(Duration::from_secs(3), || {
        read(&log).contains("peer 127.0.0.1")
    });
    drop(t);
}

#[test]
fn many_connections_release_their_fds() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    let _srv = host.spawn(As::Runner, &format!("{} greet 127.0.0.1 18089", tcpserve()));
    host.wait_listening(18089, false);
    let (g, t) = start(&host, &[]);
    let baseline = t.fd_count();
    let out = g.ok(
        "n=0; for i in $(seq 300); do r=$(ncat 10.0.2.2 18089 </dev/null) && [ \"$r\" = ok ] && n=$((n+1)); done; echo $n",
    );
    assert_eq!(out.trim(), "300", "sequential connections\n{}", t.logs());
    let out = g.ok(
        "for i in $(seq 200); do (ncat 10.0.2.2 18089 </dev/null > /dev/null) & done; wait; echo done",
    );
    assert_eq!(out.trim(), "done");
    wait_until(Duration::from_secs(5), || t.fd_count() <= baseline);
}

#[test]
fn tapir_run_reaches_a_server_on_host_loopback() {
    let Some(host) = host() else { return };
    need!("busybox", "curl");
    let dir = Scratch::new("www");
    std::fs::write(dir.path("index.html"), "tapir run works\n").unwrap();
    let _srv = host.spawn(
        As::Runner,
        &format!("busybox httpd -f -p 127.0.0.1:18090 -h {}", dir.0.display()),
    );
    host.wait_listening(18090, false);
    let b = shared_bin();
    let out = host.sh(
        As::Runner,
        &format!("{} run -- curl -sS http://10.0.2.2:18090/", b.display()),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tapir run works\n",
        "{out:?}"
    );
}

#[test]
fn ipv6_slaac_ping_tcp_and_udp_to_host_loopback() {
    let Some(host) = host() else { return };
    need!("ncat", "python3");
    let _srv = host.spawn(As::Runner, &format!("{} greet ::1 18091", tcpserve()));
    let _udp = host.spawn(As::Runner, &format!("{} udpecho ::1 18092", tcpserve()));
    host.wait_listening(18091, false);
    host.wait_listening(18092, true);
    let (g, t) = start(&host, &["--enable-ipv6"]);
    // SLAAC from the router advertisement (fd00::/64) and a default route via fe80::2.
    wait_until(Duration::from_secs(10), || {
        g.sh_any("ip -6 addr show dev tap0 scope global -tentative | grep -q 'inet6 fd00::'")
            .status
            .success()
    });
    let route = g.ok("ip -6 route show default");
    assert!(route.contains("via fe80::2"), "{route}");
    g.ok("ping -6 -c 1 -W 2 fd00::2");
    g.ok("ping -6 -c 1 -W 2 fd00::3");
    let out = g.ok("ncat fd00::2 18091 </dev/null");
    assert_eq!(out, "ok\n", "{}", t.logs());
    let out = g.ok("(echo udp6; sleep 1) | ncat -u -w 2 fd00::2 18092");
    assert_eq!(out.trim(), "udp6", "{}", t.logs());
}

/// A DHCPv6 client's Information-Request (client id, option request for DNS servers), sent to
/// ff02::1:2 from tap0's link-local address; prints who answered and the DNS server offered.
const DHCPV6_PROBE: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 546))
s.settimeout(2)
idx = socket.if_nametoindex("tap0")
msg = bytes([11, 1, 2, 3]) + bytes([0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 9]) + bytes([0, 6, 0, 2, 0, 23])
data = None
for attempt in range(3):
    s.sendto(msg, ("ff02::1:2", 547, 0, idx))
    try:
        data, addr = s.recvfrom(1500)
        break
    except socket.timeout:
        pass
assert data is not None, "no reply"
assert data[0] == 7 and data[1:4] == bytes([1, 2, 3]), data
opts = {}
i = 4
while i + 4 <= len(data):
    code, ln = struct.unpack("!HH", data[i:i + 4])
    opts[code] = data[i + 4:i + 4 + ln]
    i += 4 + ln
assert opts[1] == bytes([0, 3, 0, 1, 2, 0, 0, 0, 0, 9]), opts
assert 2 in opts, opts
print("reply from %s dns %s" % (addr[0].split("%")[0], socket.inet_ntop(socket.AF_INET6, opts[23])))
"#;

#[test]
fn dhcpv6_information_request_gets_the_dns_server() {
    let Some(host) = host() else { return };
    need!("python3");
    let (g, t) = start(&host, &["--enable-ipv6"]);
    // The link-local address must have passed duplicate address detection to be bound.
    wait_until(Duration::from_secs(10), || {
        g.sh_any("ip -6 addr show dev tap0 scope link -tentative | grep -q 'inet6 fe80::'")
            .status
            .success()
    });
    let out = g.ok(&format!("python3 -c '{DHCPV6_PROBE}'"));
    assert_eq!(out.trim(), "reply from fe80::2 dns fd00::3", "{}", t.logs());
}
