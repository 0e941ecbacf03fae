//! Unit tests of the pasta front end: the argv of podman and rootlesskit, every option
//! form, every refusal and message.

use super::*;
use crate::config::pasta::PortRange;
use crate::config::Services;

fn argv(args: &[&str]) -> Vec<OsString> {
    std::iter::once("pasta")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

fn parse(args: &[&str]) -> Result<(Command, Vec<String>), CliError> {
    super::super::parse(&argv(args))
}

fn opts(args: &[&str]) -> PastaOptions {
    match parse(args) {
        Ok((Command::Pasta(o), _)) => o,
        other => panic!("{args:?}: expected Pasta, got {other:?}"),
    }
}

fn fails(args: &[&str], message: &str) {
    assert_eq!(parse(args), Err(CliError::plain(message)), "{args:?}");
}

fn getopt_fails(args: &[&str], message: &str) {
    assert_eq!(parse(args), Err(CliError::usage(message)), "{args:?}");
}

fn addr(s: &str) -> AddrOpt {
    let mut a = AddrOpt::Unset;
    a.add(s.parse().unwrap());
    a
}

#[test]
fn option_tables_are_consistent() {
    let all: Vec<&LongOpt<Opt>> = LONG_OPTIONS.iter().chain(EXTRA_OPTIONS).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a.name, b.name);
            if a.opt == b.opt {
                // Only pasta's two names of -s share an option.
                assert_eq!((a.name, b.name), ("socket", "socket-path"));
            }
        }
        if let Opt::Unsupported(name) = a.opt {
            assert!(a.name.starts_with(name), "{}", a.name);
        }
    }
    let optstring: String = SHORT_OPTIONS
        .iter()
        .map(|s| {
            let l = LONG_OPTIONS.iter().find(|l| l.opt == s.opt).unwrap();
            assert_eq!(l.takes_arg, s.takes_arg, "-{}", char::from(s.c));
            format!("{}{}", char::from(s.c), if s.takes_arg { ":" } else { "" })
        })
        .collect();
    assert_eq!(
        format!("+{optstring}"),
        "+dqfel:hs:F:I:p:P:m:a:n:M:g:i:o:D:S:H:461t:u:T:U:"
    );
    assert_eq!(
        LONG_OPTIONS.len(),
        66,
        "pasta 2025_05_03 has 66 long options"
    );
}

#[test]
fn mode_selection() {
    let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    for yes in [
        &["pasta"][..],
        &["/usr/bin/pasta"],
        &["/x/pasta.avx2", "-f"],
        &["mypasta"],
        &["tapir", "pasta"],
        &["/bin/tapir", "pasta", "1"],
    ] {
        assert!(is_pasta(&os(yes)), "{yes:?}");
    }
    for no in [
        &[][..],
        &["tapir"],
        &["/pasta/tapir"],
        &["tapir", "pastax"],
        &["tapir", "-c", "pasta"],
        &["passt"],
    ] {
        assert!(!is_pasta(&os(no)), "{no:?}");
    }
    assert_eq!(args(&os(&["pasta", "a"])), Some(&os(&["a"])[..]));
    assert_eq!(args(&os(&["tapir", "pasta", "a"])), Some(&os(&["a"])[..]));
    // Through the subcommand, diagnostics still use argv[0] as given.
    let a = os(&["/bin/tapir", "pasta", "--nope"]);
    assert_eq!(
        super::super::parse(&a),
        Err(CliError::usage("/bin/tapir: unrecognized option '--nope'"))
    );
    assert!(pasta_usage(&a).starts_with("Usage: /bin/tapir pasta [OPTION]... [PID]\n"));
    let a = os(&["/x/pasta", "--nope"]);
    assert!(pasta_usage(&a).starts_with("Usage: /x/pasta [OPTION]... [PID]\n"));
    // A pasta-named argv[0] wins over the subcommands.
    let a = os(&["pasta", "run", "sh"]);
    assert_eq!(
        super::super::parse(&a),
        Err(CliError::plain(
            "tapir: pasta option COMMAND is not supported (use tapir run)"
        ))
    );
}

/// Whether `config::portspec` parses explicit port ranges yet (it is being written).
fn ranges_supported() -> bool {
    portspec::add(&mut PortSpec::Unset, 't', "80").is_ok()
}

#[test]
fn podman_5_4() {
    let rest = [
        "--dns-forward",
        "169.254.1.1",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        "/run/user/1000/netns/netns-abc",
        "--map-guest-addr",
        "169.254.1.2",
    ];
    let mut args = vec!["--config-net"];
    args.extend_from_slice(&rest);
    // podman's exact order: --config-net -t SPEC --dns-forward ...
    let mut full = vec!["--config-net", "-t", "127.0.0.1/18080-18080:80-80"];
    full.extend_from_slice(&rest);
    let o = if ranges_supported() {
        assert_eq!(parse(&full).unwrap().1, Vec::<String>::new());
        opts(&full)
    } else {
        assert_eq!(
            parse(&full),
            Err(CliError::plain(
                "Invalid port specifier 127.0.0.1/18080-18080:80-80"
            ))
        );
        opts(&args)
    };
    let expected = PastaOptions {
        config_net: true,
        dns_forward: addr("169.254.1.1"),
        udp: PortSpec::None,
        tcp_ns: PortSpec::None,
        udp_ns: PortSpec::None,
        map_gw: Some(false),
        quiet: true,
        netns: Some("/run/user/1000/netns/netns-abc".into()),
        map_guest_addr: addr("169.254.1.2"),
        ..Default::default()
    };
    if ranges_supported() {
        assert_eq!(
            o,
            PastaOptions {
                tcp: PortSpec::Ranges(vec![PortRange {
                    addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    iface: None,
                    first: 18080,
                    last: 18080,
                    to_first: 80,
                }]),
                ..expected
            }
        );
    } else {
        assert_eq!(o, expected);
    }
    // The rootless-netns form: --pid FILE, no ports.
    let o = opts(&[
        "--config-net",
        "--pid",
        "/run/user/1000/containers/networks/rootless-netns/rootless-netns-conn.pid",
        "--dns-forward",
        "169.254.1.1",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--no-map-gw",
        "--quiet",
        "--netns",
        "/run/user/1000/containers/networks/rootless-netns/rootless-netns",
        "--map-guest-addr",
        "169.254.1.2",
    ]);
    assert_eq!(
        o.pid_file,
        Some("/run/user/1000/containers/networks/rootless-netns/rootless-netns-conn.pid".into())
    );
    assert_eq!(o.tcp, PortSpec::None);
}

#[test]
fn rootlesskit_2_0() {
    let (cmd, warnings) = parse(&[
        "--foreground",
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--no-dhcp",
        "--no-ra",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
        "--no-map-gw",
        "--ipv4-only",
        "--tcp-ports=none",
        "--udp-ports=none",
        "12345",
    ])
    .unwrap();
    assert_eq!(warnings, vec![WARN_STDERR.to_owned()]);
    let expected = PastaOptions {
        foreground: true,
        ns_ifname: Some("tap0".into()),
        mtu: Some(65520),
        services: Services {
            dhcp: false,
            ra: false,
            ..Services::default()
        },
        address: addr("10.0.2.100"),
        prefix_len: Some(24),
        gateway: addr("10.0.2.2"),
        dns_forward: addr("10.0.2.3"),
        map_gw: Some(false),
        family: Family::V4Only,
        tcp: PortSpec::None,
        udp: PortSpec::None,
        pid: Some(12345),
        ..Default::default()
    };
    assert_eq!(cmd, Command::Pasta(expected.clone()));
    // --detach-netns: --userns and --netns instead of the PID.
    let o = opts(&[
        "--foreground",
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--no-dhcp",
        "--no-ra",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
        "--no-map-gw",
        "--ipv4-only",
        "--tcp-ports=auto",
        "--udp-ports=auto",
        "--userns=/proc/4321/ns/user",
        "--netns=/proc/4321/root/run/user/1000/rootlesskit/netns",
    ]);
    assert_eq!(
        o,
        PastaOptions {
            tcp: PortSpec::Auto,
            udp: PortSpec::Auto,
            pid: None,
            userns: Some("/proc/4321/ns/user".into()),
            netns: Some("/proc/4321/root/run/user/1000/rootlesskit/netns".into()),
            ..expected
        }
    );
}

#[test]
fn rootlesskit_2_3() {
    let (cmd, warnings) = parse(&[
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--config-net",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
        "--tcp-ports=auto",
        "--udp-ports=auto",
        "777",
    ])
    .unwrap();
    assert_eq!(warnings, vec![WARN_STDERR.to_owned()]);
    let Command::Pasta(o) = cmd else {
        panic!("{cmd:?}")
    };
    assert!(o.config_net && !o.foreground);
    assert_eq!((o.tcp, o.udp), (PortSpec::Auto, PortSpec::Auto));
    assert_eq!(o.pid, Some(777));
    assert_eq!(o.family, Family::Both);
    assert_eq!(o.services, Services::default());
    // The 2.3.2 probes.
    assert_eq!(parse(&["--version"]).unwrap().0, Command::PastaVersion);
    fails(
        &["--host-lo-to-ns-lo", "--version"],
        "tapir: pasta option --host-lo-to-ns-lo is not supported",
    );
}

#[test]
fn long_forms_and_abbreviations() {
    for args in [
        &["--mtu=1500"][..],
        &["--mtu", "1500"],
        &["--mt=1500"],
        &["--mt", "1500"],
        &["-m1500"],
        &["-m", "1500"],
        &["-fm", "1500"],
    ] {
        assert_eq!(opts(args).mtu, Some(1500), "{args:?}");
    }
    assert!(opts(&["--conf"]).config_net);
    assert!(opts(&["--fore"]).foreground);
    assert!(opts(&["--no-ne"]).no_netns_quit);
    assert_eq!(opts(&["--ns-i", "x"]).ns_ifname.as_deref(), Some("x"));
    assert_eq!(
        opts(&["--ns-m=02:00:00:00:00:01"]).ns_mac,
        Some([2, 0, 0, 0, 0, 1])
    );
    assert_eq!(opts(&["--a", "10.0.0.1"]).address, addr("10.0.0.1"));
    assert_eq!(
        opts(&["--map-g", "10.0.0.1"]).map_guest_addr,
        addr("10.0.0.1")
    );
    assert_eq!(
        opts(&["--map-h", "10.0.0.1"]).map_host_loopback,
        addr("10.0.0.1")
    );
    assert_eq!(opts(&["--dns-f=10.0.0.3"]).dns_forward, addr("10.0.0.3"));
    assert_eq!(opts(&["--ipv6"]).family, Family::V6Only);
    assert_eq!(opts(&["--tcp-p=none"]).tcp, PortSpec::None);
    assert_eq!(opts(&["--udp-n", "auto"]).udp_ns, PortSpec::Auto);
    // Exact names win over longer ones.
    assert_eq!(
        opts(&["--dns", "1.1.1.1"]).dns,
        vec!["1.1.1.1".parse::<IpAddr>().unwrap()]
    );
    assert!(opts(&["--no-dhcp"]).services.dhcpv6);
    assert_eq!(opts(&["--pid", "/p"]).pid_file, Some("/p".into()));
    assert_eq!(opts(&["--netns", "/n"]).netns, Some("/n".into()));
    // Ambiguities, listed in pasta's order.
    getopt_fails(
        &["--no-d"],
        "pasta: option '--no-d' is ambiguous; possibilities: '--no-dhcp' '--no-dhcpv6' \
         '--no-dhcp-dns' '--no-dhcp-search'",
    );
    getopt_fails(
        &["--map", "x"],
        "pasta: option '--map' is ambiguous; possibilities: '--map-host-loopback' \
         '--map-guest-addr'",
    );
    // The two names of -s are one option: not ambiguous, pasta's first name is reported.
    fails(
        &["--sock", "x"],
        "tapir: pasta option --socket is not supported",
    );
    fails(
        &["--socket-p", "x"],
        "tapir: pasta option --socket-path is not supported",
    );
}

#[test]
fn tapir_extras_do_not_change_pasta_abbreviations() {
    // --a is --address in pasta; --api-socket must not make it ambiguous.
    assert_eq!(opts(&["--a=10.0.0.1"]).address, addr("10.0.0.1"));
    // tapir's --no-user-policy, exact or by a prefix none of pasta's options has.
    assert!(opts(&["--no-user-policy"]).policy.no_user_policy);
    assert!(opts(&["--no-user"]).policy.no_user_policy);
    assert!(!opts(&["--no-ne"]).policy.no_user_policy);
    // --no-s is --no-splice in pasta, not ambiguous with --no-sandbox.
    assert!(opts(&["--no-s"]).no_splice);
    assert!(!opts(&["--no-s"]).no_sandbox);
    // --map-g stays --map-guest-addr despite --map-gw.
    assert_eq!(opts(&["--map-g=10.0.0.1"]).map_gw, None);
    // The extras by their full names, and by prefixes pasta does not know.
    let o = opts(&["--no-sandbox", "--api-socket=/s", "--no-map-gw", "--map-gw"]);
    assert!(o.no_sandbox);
    assert_eq!(o.api_socket, Some("/s".into()));
    assert_eq!(o.map_gw, Some(true));
    let o = opts(&["--no-sa", "--ap", "/t"]);
    assert!(o.no_sandbox);
    assert_eq!(o.api_socket, Some("/t".into()));
}

#[test]
fn no_permutation() {
    // Options end at the first operand: a trailing option makes it a command.
    fails(
        &["-f", "1234", "--config-net"],
        "tapir: pasta option COMMAND is not supported (use tapir run)",
    );
    fails(
        &["sh", "-c", "true"],
        "tapir: pasta option COMMAND is not supported (use tapir run)",
    );
    fails(
        &["--", "1", "2"],
        "tapir: pasta option COMMAND is not supported (use tapir run)",
    );
    assert_eq!(opts(&["-f", "--", "42"]).pid, Some(42));
    assert_eq!(opts(&["+42"]).pid, Some(42));
    assert_eq!(opts(&[" 42"]).pid, Some(42));
    fails(&["--", "-1"], "Invalid PID -1");
    fails(&["0"], "Invalid PID 0");
    fails(&["99999999999"], "Invalid PID 99999999999");
    fails(
        &["12x"],
        "tapir: pasta option COMMAND is not supported (use tapir run)",
    );
    // A negative number before -- is an option to getopt.
    getopt_fails(&["-5"], "pasta: invalid option -- '5'");
    // No operand and no --netns: left to app.
    assert_eq!(opts(&[]), PastaOptions::default());
}

#[test]
fn netns_and_pid() {
    fails(
        &["--netns", "/n", "42"],
        "Both --netns and PID or command given",
    );
    fails(
        &["--netns", "/n", "sh"],
        "Both --netns and PID or command given",
    );
    assert_eq!(
        opts(&["--netns", "ctr"]).netns,
        Some("/run/netns/ctr".into())
    );
    assert_eq!(opts(&["--netns=./x"]).netns, Some("./x".into()));
    let long = "a".repeat(5000);
    fails(
        &["--netns", &long],
        &format!("Network namespace name/path {long} too long"),
    );
    let o = opts(&["--userns", "/u", "42"]);
    assert_eq!((o.userns, o.pid), (Some("/u".into()), Some(42)));
    fails(&["--userns="], "Invalid userns: ");
    fails(&["--pid="], "Invalid PID file: ");
}

#[test]
fn help_and_version_stop_parsing() {
    assert_eq!(parse(&["-h"]).unwrap(), (Command::PastaHelp, vec![]));
    assert_eq!(parse(&["--help", "--bogus"]).unwrap().0, Command::PastaHelp);
    assert_eq!(parse(&["--he"]).unwrap().0, Command::PastaHelp);
    assert_eq!(
        parse(&["--version", "--pcap", "x"]).unwrap().0,
        Command::PastaVersion
    );
    assert_eq!(parse(&["--vers"]).unwrap().0, Command::PastaVersion);
    // Errors before them win.
    fails(&["-a", "x", "--version"], "Invalid address: x");
    getopt_fails(
        &["--bogus", "--help"],
        "pasta: unrecognized option '--bogus'",
    );
    // -t/-u/-D are read in a later pass: their errors never hide --version.
    assert_eq!(
        parse(&["-t", "bogus", "--version"]).unwrap().0,
        Command::PastaVersion
    );
    // Warnings collected before are returned.
    assert_eq!(
        parse(&["-e", "--version"]).unwrap(),
        (Command::PastaVersion, vec![WARN_STDERR.to_owned()])
    );
    // pasta has no -v.
    getopt_fails(&["-v"], "pasta: invalid option -- 'v'");
    assert!(pasta_version().contains("tapir"));
    assert!(pasta_version().ends_with('\n'));
}

#[test]
fn every_unsupported_option_is_refused_by_name() {
    let cases: &[(&[&str], &str)] = &[
        (&["--pcap", "f"], "--pcap"),
        (&["-p", "f"], "--pcap"),
        (&["-M", "02:00:00:00:00:01"], "--mac-addr"),
        (&["--mac-addr=x"], "--mac-addr"),
        (&["-H", "h"], "--hostname"),
        (&["--hostname", "h"], "--hostname"),
        (&["--fqdn", "h.example"], "--fqdn"),
        (&["--runas", "1000"], "--runas"),
        (&["--log-size", "1048576"], "--log-size"),
        (&["--freebind"], "--freebind"),
        (&["--host-lo-to-ns-lo"], "--host-lo-to-ns-lo"),
        (&["--netns-only"], "--netns-only"),
        (&["--no-tcp"], "--no-tcp"),
        (&["--no-udp"], "--no-udp"),
        (&["--dns-host", "1.1.1.1"], "--dns-host"),
        (&["--outbound-if4", "eth0"], "--outbound-if4"),
        (&["--outbound-if6", "eth0"], "--outbound-if6"),
        (&["--dhcp-dns"], "--dhcp-dns"),
        (&["--no-dhcp-dns"], "--no-dhcp-dns"),
        (&["--dhcp-search"], "--dhcp-search"),
        (&["--no-dhcp-search"], "--no-dhcp-search"),
        (&["--no-copy-routes"], "--no-copy-routes"),
        (&["--no-copy-addrs"], "--no-copy-addrs"),
        (&["-s", "/sock"], "--socket"),
        (&["--socket", "/sock"], "--socket"),
        (&["--socket-path", "/sock"], "--socket-path"),
        (&["-F", "3"], "--fd"),
        (&["--fd=3"], "--fd"),
        (&["-1"], "--one-off"),
        (&["--one-off"], "--one-off"),
        (&["--vhost-user"], "--vhost-user"),
        (&["--print-capabilities"], "--print-capabilities"),
        (&["--repair-path", "/r"], "--repair-path"),
    ];
    for (args, name) in cases {
        fails(
            args,
            &format!("tapir: pasta option {name} is not supported"),
        );
    }
    // Each takes its argument as pasta does, so a value that looks like an option is
    // consumed, not parsed.
    fails(
        &["--pcap", "--help"],
        "tapir: pasta option --pcap is not supported",
    );
    // Refused in order: an earlier error wins, an earlier help wins.
    fails(&["-m", "x", "--pcap", "f"], "Invalid MTU: x");
    assert_eq!(parse(&["-h", "--pcap", "f"]).unwrap().0, Command::PastaHelp);
    // Every unsupported entry of the table is covered above.
    for l in LONG_OPTIONS {
        if let Opt::Unsupported(_) = l.opt {
            assert!(
                cases.iter().any(|(_, n)| *n == format!("--{}", l.name)),
                "--{} untested",
                l.name
            );
        }
    }
}

#[test]
fn getopt_errors_ask_for_usage() {
    getopt_fails(&["--foo"], "pasta: unrecognized option '--foo'");
    getopt_fails(&["--foo=bar"], "pasta: unrecognized option '--foo=bar'");
    getopt_fails(&["-x"], "pasta: invalid option -- 'x'");
    getopt_fails(&["-t"], "pasta: option requires an argument -- 't'");
    getopt_fails(&["--mtu"], "pasta: option '--mtu' requires an argument");
    getopt_fails(
        &["--quiet=1"],
        "pasta: option '--quiet' doesn't allow an argument",
    );
    getopt_fails(
        &["--no-sandbox=1"],
        "pasta: option '--no-sandbox' doesn't allow an argument",
    );
    // Warnings come first, as pasta printed them before the error.
    assert_eq!(
        parse(&["-e", "--foo"]),
        Err(CliError::usage(
            "--stderr will be dropped soon\npasta: unrecognized option '--foo'"
        ))
    );
    assert_eq!(
        parse(&["-e", "-a", "x"]),
        Err(CliError::plain(
            "--stderr will be dropped soon\nInvalid address: x"
        ))
    );
    let text = pasta_usage(&argv(&[]));
    assert!(text.starts_with("Usage: pasta [OPTION]... [PID]\n"));
    for needle in [
        "--config-net",
        "--map-guest-addr",
        "--dns-forward",
        "--no-sandbox",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    assert!(text.ends_with('\n'));
}

#[test]
fn addresses() {
    let o = opts(&["-a", "10.0.2.100", "-a", "2001:db8::5", "-a", "10.0.2.101"]);
    assert_eq!(o.address.v4(), Some(Ipv4Addr::new(10, 0, 2, 101)));
    assert_eq!(o.address.v6(), Some("2001:db8::5".parse().unwrap()));
    for bad in [
        "300.1.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "224.0.0.1",
        "::",
        "::1",
        "::ffff:1.2.3.4",
        "::1.2.3.4",
        "ff02::1",
        "x",
        "",
        "10.0.2.1/24",
        "010.0.0.1",
    ] {
        fails(&["-a", bad], &format!("Invalid address: {bad}"));
    }
    for bad in [
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "::",
        "::1",
        "224.0.0.1",
        "y",
    ] {
        fails(&["-g", bad], &format!("Invalid gateway address: {bad}"));
    }
    assert_eq!(
        opts(&["-g", "fe80::1"]).gateway.v6(),
        Some("fe80::1".parse().unwrap())
    );
    assert_eq!(
        opts(&["--outbound", "127.0.0.1"]).outbound,
        addr("127.0.0.1")
    );
    for bad in ["0.0.0.0", "224.0.0.1", "::1", "::"] {
        fails(
            &["-o", bad],
            &format!("Invalid or redundant outbound address: {bad}"),
        );
    }
    for bad in [
        "0.0.0.0",
        "255.255.255.255",
        "127.0.0.1",
        "::",
        "::1",
        "none",
    ] {
        fails(
            &["--dns-forward", bad],
            &format!("Invalid DNS forwarding address: {bad}"),
        );
    }
    for bad in ["0.0.0.0", "127.0.0.1", "::1", "::", "224.0.0.1", "z"] {
        fails(
            &["--map-guest-addr", bad],
            &format!("Invalid address to remap to host: {bad}"),
        );
        fails(
            &["--map-host-loopback", bad],
            &format!("Invalid address to remap to host: {bad}"),
        );
    }
    let o = opts(&["--map-host-loopback", "none", "--map-guest-addr=none"]);
    assert_eq!(o.map_host_loopback, AddrOpt::None);
    assert_eq!(o.map_gw, Some(false), "none implies --no-map-gw");
    assert_eq!(o.map_guest_addr, AddrOpt::None);
    let o = opts(&[
        "--map-host-loopback",
        "none",
        "--map-host-loopback",
        "10.0.0.9",
    ]);
    assert_eq!(o.map_host_loopback, addr("10.0.0.9"));
    assert_eq!(o.map_gw, Some(false));
}

#[test]
fn numbers() {
    for (arg, mtu) in [
        ("0", 0),
        ("65521", 65521),
        ("0x5dc", 1500),
        ("02734", 1500),
        ("", 0),
    ] {
        assert_eq!(opts(&["-m", arg]).mtu, Some(mtu), "{arg:?}");
    }
    fails(&["-m", "65522"], "MTU 65522 too large (max 65521)");
    fails(&["-m", "0x10000"], "MTU 65536 too large (max 65521)");
    fails(
        &["-m", "-1"],
        "MTU 18446744073709551615 too large (max 65521)",
    );
    for bad in ["x", "15x", "0x", "08", "99999999999999999999999"] {
        fails(&["-m", bad], &format!("Invalid MTU: {bad}"));
    }
    for (arg, len) in [
        ("24", 24),
        ("0", 0),
        ("32", 32),
        ("255.255.255.0", 24),
        ("0.0.0.0", 0),
    ] {
        assert_eq!(opts(&["-n", arg]).prefix_len, Some(len), "{arg:?}");
    }
    for bad in ["33", "255.0.255.0", "x", "24x", "-1"] {
        fails(&["-n", bad], &format!("Invalid netmask: {bad}"));
    }
}

#[test]
fn names_and_strings() {
    assert_eq!(
        opts(&["-I", "a23456789012345"]).ns_ifname.as_deref(),
        Some("a23456789012345")
    );
    fails(
        &["-I", "averyveryverylongname"],
        "Invalid interface name: averyveryverylongname",
    );
    fails(&["-I", ""], "Invalid interface name: ");
    assert_eq!(opts(&["-i", "eth0"]).interface.as_deref(), Some("eth0"));
    fails(&["-i", ""], "Invalid interface name : No such device");
    for bad in [
        "02:00:00:00:00",
        "02:00:00:00:00:0g",
        "02-00-00-00-00-01",
        "x",
    ] {
        fails(
            &["--ns-mac-addr", bad],
            &format!("Invalid MAC address: {bad}"),
        );
    }
    assert_eq!(
        opts(&["--ns-mac-addr", "0E:d4:18:d9:38:fb"]).ns_mac,
        Some([0x0e, 0xd4, 0x18, 0xd9, 0x38, 0xfb])
    );
    let o = opts(&["-S", "a.example", "--search", "b.example"]);
    assert_eq!(o.search, vec!["a.example", "b.example"]);
    assert!(opts(&["-S", "a.example", "-S", "none"]).search.is_empty());
    fails(&["-S", ""], "Cannot use DNS search domain ");
    let seven: Vec<&str> = ["-S", "d"].repeat(7);
    fails(&seven, "Cannot use DNS search domain d");
    let mut bad = argv(&["-I", "x"]);
    bad[2] = OsString::from_vec(b"\xff".to_vec());
    assert_eq!(
        super::super::parse(&bad),
        Err(CliError::plain("Invalid interface name: \u{fffd}"))
    );
    // Paths need not be UTF-8.
    let mut p = argv(&["-P", "x", "-l", "y", "--netns", "z"]);
    p[2] = OsString::from_vec(b"/\xff".to_vec());
    let Ok((Command::Pasta(o), _)) = super::super::parse(&p) else {
        panic!()
    };
    assert_eq!(
        o.pid_file,
        Some(PathBuf::from(OsString::from_vec(b"/\xff".to_vec())))
    );
    assert_eq!(o.log_file, Some("y".into()));
    assert_eq!(o.netns, Some("/run/netns/z".into()));
}

#[test]
fn flags_and_last_wins() {
    let o = opts(&["-q", "-d"]);
    assert!(o.debug && !o.quiet);
    let o = opts(&["-d", "-q"]);
    assert!(!o.debug && o.quiet);
    let o = opts(&["-q", "--trace"]);
    assert!(o.debug && !o.quiet);
    assert_eq!(opts(&["-4", "-6"]).family, Family::V6Only);
    assert_eq!(opts(&["-6", "-4"]).family, Family::V4Only);
    let o = opts(&[
        "--no-dhcp",
        "--no-ndp",
        "--no-ra",
        "--no-dhcpv6",
        "--no-icmp",
        "--no-splice",
        "--no-netns-quit",
        "--config-net",
        "-f",
    ]);
    assert_eq!(
        o.services,
        Services {
            dhcp: false,
            ndp: false,
            ra: false,
            dhcpv6: false,
            icmp: false
        }
    );
    assert!(o.no_splice && o.no_netns_quit && o.config_net && o.foreground);
    let (_, w) = parse(&["-e", "--stderr"]).unwrap();
    assert_eq!(w, vec![WARN_STDERR.to_owned(), WARN_STDERR.to_owned()]);
}

#[test]
fn dns_and_ports_in_later_passes() {
    let o = opts(&["-D", "1.1.1.1", "--dns", "2001:db8::53"]);
    assert_eq!(
        o.dns,
        vec![
            "1.1.1.1".parse::<IpAddr>().unwrap(),
            "2001:db8::53".parse().unwrap()
        ]
    );
    fails(&["-D", "foo"], "Cannot use DNS address foo");
    // -D none drops the addresses and, as in pasta, DNS forwarding.
    let o = opts(&["--dns-forward", "10.0.2.3", "-D", "1.1.1.1", "-D", "none"]);
    assert!(o.dns.is_empty());
    assert_eq!(o.dns_forward, AddrOpt::Unset);
    let o = opts(&["-t", "none", "-u", "auto", "-T", "auto", "-U", "none"]);
    assert_eq!(
        (o.tcp, o.udp, o.tcp_ns, o.udp_ns),
        (
            PortSpec::None,
            PortSpec::Auto,
            PortSpec::Auto,
            PortSpec::None
        )
    );
    // Order of errors: pass 1 (any position), then -t/-u/-D, then operands, then -T/-U.
    fails(
        &["-T", "bad1", "-t", "bad2", "-a", "x"],
        "Invalid address: x",
    );
    fails(&["-T", "bad1", "-t", "bad2"], "Invalid port specifier bad2");
    fails(&["-T", "bad1", "-D", "bad2"], "Cannot use DNS address bad2");
    fails(
        &["-T", "bad1", "a", "b"],
        "tapir: pasta option COMMAND is not supported (use tapir run)",
    );
    fails(&["-T", "bad1", "7"], "Invalid port specifier bad1");
}

#[test]
fn c_ulong_parsing() {
    let p = |s: &str| parse_c_ulong(OsStr::new(s));
    assert_eq!(p("10"), Some(10));
    assert_eq!(p(" +0x1F"), Some(31));
    assert_eq!(p("0X10"), Some(16));
    assert_eq!(p("010"), Some(8));
    assert_eq!(p("0"), Some(0));
    assert_eq!(p(""), Some(0));
    assert_eq!(p("  "), None);
    assert_eq!(p("-0"), Some(0));
    assert_eq!(p("-2"), Some(u64::MAX - 1));
    assert_eq!(p("18446744073709551615"), Some(u64::MAX));
    for bad in [
        "18446744073709551616",
        "+",
        "-",
        "0x",
        "0xg",
        "09",
        "1 ",
        "x",
    ] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
}
