//! IPv6 beyond the default fd00::/64: `--cidr6`, and IPv6 port forwards (API and `-p`).
//!
//! Servers listen in the private host namespace (`::1`, or an extra address on its `lo`) or in
//! the guest; DNS goes to `tests/tools/dnsserve.py` on `::1` through the private resolv.conf.
//! The guest gets its address by SLAAC from tapir's router advertisements.

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
