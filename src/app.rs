//! The process model: attach, announce, signal ready, serve, exit.
//!
//! # Theory of operation
//!
//! Start-up follows slirp4netns's order (spec §4.1), because callers depend on it:
//!
//! 1. check `--outbound-addr[6]` (an interface name becomes its address, which must be bindable)
//!    and adopt the inherited `--ready-fd` / `--exit-fd` descriptors;
//! 2. obtain the tap: in a forked child that joined the target's user and network namespaces,
//!    open `/dev/net/tun`, attach `TAPNAME` and (with `-c`) configure it, then pass the fd back
//!    (`tapfd` mode adopts an inherited, already attached fd instead, after checking that it is
//!    a tap and making it non-blocking);
//! 3. print the banner (stdout, line-buffered, so it reaches log files);
//! 4. build the stack and register everything with the event loop;
//! 5. only then write the ready byte and close the ready fd, so a caller that sees it can use the
//!    interface at once;
//! 6. serve until the exit fd hangs up, a termination signal arrives, the target process exits,
//!    or (`tapir run`) the command exits.
//!
//! `tapir run` first forks the command into a fresh user+network+mount namespace, paused, attaches
//! to it like step 2 with `-c`, and releases it once the network is ready; tapir then exits with
//! the command's status.
//!
//! Before step 1, in every mode, the per-user egress policy file
//! ([`crate::policy::user_file`]) is located from `XDG_CONFIG_HOME`/`HOME` and its rules are
//! appended to the configuration's (`add_user_policy`): this is the one place the
//! environment is read for it, since `cli`'s parsers take none and pasta mode builds its
//! configuration here.
//!
//! Must run single-threaded until step 4 (see [`crate::sys::netns`]).

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use log::{debug, info, warn};

use crate::config::pasta::{self, PastaOptions};
use crate::config::{format_mac, Config, ConfigError, Outbound, Target};
use crate::device::{vnet, TapMode};
use crate::error::Error;
use crate::runtime::{Exit, Runtime, Watch};
use crate::sys;

/// Open and (optionally) configure the tap. Runs inside the target namespaces.
fn open_tap_in_namespace(cfg: &Config) -> Result<OwnedFd, String> {
    let (fd, name) = sys::tap::open(&cfg.tap_name, cfg.offload).map_err(|e| e.to_string())?;
    if cfg.configure {
        configure(cfg, &name).map_err(|e| e.to_string())?;
    } else if cfg.process.loopback_up {
        sys::ifconfig::set_up("lo")
            .map_err(|e| format!("Couldn't bring up loopback interface in namespace: {e}"))?;
    }
    Ok(fd)
}

/// `--configure`, exactly slirp4netns's steps (spec §3.3).
fn configure(cfg: &Config, name: &str) -> std::io::Result<()> {
    sys::ifconfig::set_up("lo")?;
    if cfg.ipv6 && cfg.net6.guest.is_some() {
        // Assigned addresses are ours alone (pasta's nodad), the link-local one included,
        // which the kernel makes when the link goes up.
        sys::ifconfig::disable_dad(name)?;
    }
    sys::ifconfig::set_up(name)?;
    sys::ifconfig::set_mtu(name, cfg.mtu)?;
    if let Some(mac) = cfg.mac {
        sys::ifconfig::set_mac(name, mac)?;
    }
    if cfg.ipv4 {
        let net = &cfg.net;
        sys::ifconfig::set_ipv4(name, net.guest(), net.netmask())?;
        if !net.contains(net.gateway()) {
            // A gateway outside the prefix (a /32 address, pasta's -g) needs a route to itself.
            sys::ifconfig::add_ipv4_onlink_route(name, net.gateway())?;
        }
        sys::ifconfig::add_default_route(name, net.gateway())?;
    }
    // An assigned IPv6 address (pasta mode copies the host's); slirp4netns mode leaves IPv6 to
    // router advertisements.
    if let (true, Some(addr)) = (cfg.ipv6, cfg.net6.guest) {
        sys::ifconfig::add_ipv6(name, addr, cfg.net6.prefix_len)?;
        sys::ifconfig::add_ipv6_default_route(name, cfg.net6.gateway)?;
    }
    Ok(())
}

/// The target's (user namespace, network namespace) files; `None` for a tap fd passed in.
type Namespaces = Option<(Option<PathBuf>, PathBuf)>;

fn namespaces(cfg: &Config, target: &Target) -> Namespaces {
    match target {
        Target::Pid(pid) => Some((
            Some(
                cfg.userns_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/ns/user"))),
            ),
            PathBuf::from(format!("/proc/{pid}/ns/net")),
        )),
        Target::Path(p) => Some((cfg.userns_path.clone(), p.clone())),
        Target::TapFd(_) => None,
    }
}

/// What a caller must give with `--netns-type=tapfd`.
const TAPFD_WANTED: &str =
    "pass a /dev/net/tun descriptor attached with ioctl(TUNSETIFF) and IFF_TAP | IFF_NO_PI";

/// Check an inherited tap descriptor (`--netns-type=tapfd`) before anything is printed: it must
/// be a tap (`TUNGETIFF` answers, with `IFF_TAP`). Whether it was attached with `IFF_NO_PI`
/// cannot be checked: `TUNGETIFF` reports `IFF_NOFILTER`, the same bit, for every descriptor
/// without a socket filter. Then make it non-blocking: callers may pass one opened without
/// `O_NONBLOCK`, on which a read would block the event loop for good (slirp4netns polls before
/// each single read, so it copes).
fn check_tap_fd(fd: OwnedFd, n: RawFd) -> Result<OwnedFd, Error> {
    let flags = match sys::tap::flags(fd.as_fd()) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
            return Err(Error::Attach(format!(
                "fd {n} is a /dev/net/tun descriptor not attached to any device; {TAPFD_WANTED}"
            )))
        }
        Err(_) => {
            return Err(Error::Attach(format!(
                "fd {n} is not a tap device (it is {}); {TAPFD_WANTED}",
                sys::fd::describe(fd.as_fd())
            )))
        }
    };
    if flags & libc::IFF_TAP == 0 {
        return Err(Error::Attach(format!(
            "fd {n} is not a tap device (it is a tun device, which carries IP packets, not \
             Ethernet frames); {TAPFD_WANTED}"
        )));
    }
    match sys::fd::set_nonblocking(fd.as_fd()) {
        Ok(true) => debug!("tap fd {n} was blocking; made it non-blocking"),
        Ok(false) => {}
        Err(e) => {
            return Err(Error::Attach(format!(
                "fd {n}: cannot make it non-blocking: {e}"
            )))
        }
    }
    Ok(fd)
}

/// Add what to do to the errors a plain user most often meets while attaching. The first line
/// stays slirp4netns's message.
fn attach_hint(cfg: &Config, target: &Target, msg: String) -> String {
    let hint = if msg.starts_with("setns(CLONE_NEWNET): Operation not permitted") {
        match target {
            Target::Path(_) if cfg.userns_path.is_none() => {
                "joining a network namespace needs privileges in the user namespace that owns \
                 it, and --netns-type=path joins no user namespace unless --userns-path names it: \
                 add --userns-path=/proc/PID/ns/user of a process in the container"
            }
            _ => {
                "joining a network namespace needs privileges in the user namespace that owns \
                 it: run tapir as the user who created that user namespace and, if it is not \
                 the one --userns-path or the target process names, name it with --userns-path"
            }
        }
    } else if msg.starts_with("/proc/") && msg.ends_with(": Permission denied") {
        "the target process belongs to another user: run tapir as that user"
    } else if msg.starts_with("open(\"/dev/net/tun\"): No such file or directory") {
        "this kernel has no tun device: load the module (modprobe tun)"
    } else if msg.starts_with("open(\"/dev/net/tun\"): Permission denied") {
        "this user may not open /dev/net/tun: it needs mode 0666 (the usual setting)"
    } else {
        return msg;
    };
    format!("{msg}\ntapir: {hint}")
}

/// Get the tap fd for `cfg.target`.
fn obtain_tap(cfg: &Config, target: &Target) -> Result<OwnedFd, Error> {
    let Some((userns, netns)) = namespaces(cfg, target) else {
        let Target::TapFd(fd) = target else {
            unreachable!("only a tap fd target has no namespaces")
        };
        let owned = sys::fd::adopt(*fd).ok_or_else(|| {
            Error::Attach(format!(
                "fd {fd} is not open: tapir must inherit the tap descriptor; {TAPFD_WANTED}"
            ))
        })?;
        return check_tap_fd(owned, *fd);
    };
    let fd =
        sys::netns::call_in_namespaces(userns.as_deref(), &netns, || open_tap_in_namespace(cfg))
            .map_err(|e| Error::Attach(attach_hint(cfg, target, e)))?;
    debug!("received tapfd={}", fd.as_raw_fd());
    Ok(fd)
}

/// `--outbound-addr` and `--outbound-addr6`, checked before anything starts, as slirp4netns
/// does: an interface name becomes the interface's first address of the family (in tapir's own
/// network namespace, where the outbound sockets live), and the address must be one this host's
/// sockets can be bound to. slirp4netns refuses a missing interface or one without such an
/// address with the messages below; it starts with an address that is not the host's and then
/// fails every outbound connection, where tapir refuses to start. Returns the configuration
/// with literal addresses only.
fn resolve_outbound(cfg: &Config) -> Result<Config, Error> {
    let mut out = cfg.clone();
    if let Some(o) = &cfg.outbound_addr {
        let ip = usable_outbound(o.clone().map(IpAddr::V4), false)?;
        let IpAddr::V4(v4) = ip else {
            unreachable!("an IPv4 lookup gives an IPv4 address")
        };
        out.outbound_addr = Some(Outbound::Addr(v4));
    }
    if let Some(o) = &cfg.outbound_addr6 {
        let ip = usable_outbound(o.clone().map(IpAddr::V6), true)?;
        let IpAddr::V6(v6) = ip else {
            unreachable!("an IPv6 lookup gives an IPv6 address")
        };
        out.outbound_addr6 = Some(Outbound::Addr(v6));
    }
    // The egress policy's --deny-private needs the host's own addresses (read here, in
    // tapir's namespace, before any sandbox); the policy must build before anything starts.
    if out.policy.wants_host_addrs() {
        out.policy.host_addrs = crate::sys::net::host_addrs()
            .map_err(|e| Error::Attach(format!("--deny-private: cannot list addresses: {e}")))?;
    }
    crate::policy::Policy::new(&out.policy)
        .map_err(|e| Error::Attach(format!("egress policy: {e}")))?;
    Ok(out)
}

/// Append the per-user policy file's rules to `spec` (after the command line's, so those are
/// evaluated first) unless `--no-user-policy`; a missing file, or no `HOME`/`XDG_CONFIG_HOME`
/// to find it by, is no error. Returns the line to log at info level naming the file used
/// (pasta mode reads the file before its logger is set up, so the caller logs it).
fn add_user_policy(spec: &mut crate::policy::Spec) -> Result<Option<String>, Error> {
    if spec.no_user_policy {
        return Ok(None);
    }
    let xdg = std::env::var_os("XDG_CONFIG_HOME");
    let home = std::env::var_os("HOME");
    let Some(path) = crate::policy::user_file(xdg.as_deref(), home.as_deref()) else {
        return Ok(None);
    };
    let fail = |m: String| Error::Attach(format!("egress policy (user policy file): {m}"));
    let Some(rules) = crate::policy::read_file(&path, true).map_err(|e| fail(e.to_string()))?
    else {
        return Ok(None);
    };
    let n = rules.len();
    if spec.items.len() + n > crate::policy::MAX_RULES {
        return Err(fail(format!(
            "{}: more than {} rules with the command line's",
            path.display(),
            crate::policy::MAX_RULES
        )));
    }
    spec.items
        .extend(rules.into_iter().map(crate::policy::Item::Rule));
    Ok(Some(format!(
        "egress policy: {n} rule(s) from the per-user policy file {} (after the command \
         line's; --no-user-policy skips it)",
        path.display()
    )))
}

/// [`add_user_policy`] for an already built configuration, logging the file used.
fn with_user_policy(cfg: &Config) -> Result<Config, Error> {
    let mut out = cfg.clone();
    if let Some(line) = add_user_policy(&mut out.policy)? {
        info!("{line}");
    }
    Ok(out)
}

/// One outbound address: resolved and bindable, or slirp4netns's message plus the reason.
fn usable_outbound(o: Outbound<IpAddr>, v6: bool) -> Result<IpAddr, Error> {
    let (flag, family, first) = if v6 {
        ("--outbound-addr6", "IPv6", ConfigError::OutboundAddr6)
    } else {
        ("--outbound-addr", "IPv4", ConfigError::OutboundAddr)
    };
    let refuse =
        |value: &str, why: String| Error::Attach(format!("{first}\ntapir: {flag}={value}: {why}"));
    let (ip, value) = match o {
        Outbound::Addr(ip) => (ip, ip.to_string()),
        Outbound::Interface(name) => {
            if !sys::net::interface_exists(&name) {
                return Err(refuse(
                    &name,
                    format!(
                        "there is no network interface of that name here; name one that \
                         `ip link` lists, or give an {family} address of this host"
                    ),
                ));
            }
            match sys::net::interface_addr(&name, v6) {
                Ok(Some(ip)) => (ip, name),
                Ok(None) => {
                    return Err(refuse(
                        &name,
                        format!(
                            "the interface has no {family} address; give one that has, or an \
                             {family} address of this host"
                        ),
                    ))
                }
                Err(e) => {
                    return Err(refuse(&name, format!("cannot list its addresses: {e}")));
                }
            }
        }
    };
    // The same bind every outbound socket will make: if it fails now, every flow would.
    if let Err(e) = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
        let what = if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
            format!(
                "{ip} is not an address of this host ({}); give one that `ip addr` lists",
                sys::netns::strip_os_error(&e)
            )
        } else {
            format!(
                "cannot bind a socket to {ip} ({})",
                sys::netns::strip_os_error(&e)
            )
        };
        return Err(refuse(&value, what));
    }
    debug!("{flag}: outbound sockets are bound to {ip}");
    Ok(ip)
}

fn banner(cfg: &Config) {
    let n = &cfg.net;
    let mut s = String::new();
    s.push_str("Starting slirp\n");
    s.push_str(&format!("* MTU:             {}\n", cfg.mtu));
    s.push_str(&format!("* Network:         {}\n", n.network));
    s.push_str(&format!("* Netmask:         {}\n", n.netmask()));
    s.push_str(&format!("* Gateway:         {}\n", n.gateway()));
    s.push_str(&format!("* DNS:             {}\n", n.dns()));
    s.push_str(&format!("* DHCP begin:      {}\n", n.dhcp_start()));
    s.push_str(&format!("* DHCP end:        {}\n", n.dhcp_end()));
    s.push_str(&format!("* Recommended IP:  {}\n", n.guest()));
    if let Some(p) = &cfg.api_socket {
        s.push_str(&format!("* API Socket:      {}\n", p.display()));
    }
    if let Some(mac) = &cfg.mac {
        s.push_str(&format!("* MAC address:     {}\n", format_mac(mac)));
    }
    if !cfg.disable_host_loopback {
        s.push_str(&format!(
            "WARNING: 127.0.0.1:* on the host is accessible as {} (set --disable-host-loopback to prohibit connecting to 127.0.0.1:*)\n",
            n.gateway()
        ));
    }
    print!("{s}");
}

/// Inherited descriptors named on the command line.
struct Inherited {
    ready: Option<OwnedFd>,
    exit: Option<OwnedFd>,
    exit_missing: bool,
}

fn adopt_inherited(cfg: &Config) -> Inherited {
    let ready = cfg.ready_fd.and_then(|fd| {
        let r = sys::fd::adopt(fd);
        if r.is_none() {
            warn!("ready fd {fd} is not open");
        }
        r
    });
    let exit = cfg.exit_fd.and_then(sys::fd::adopt);
    Inherited {
        ready,
        exit_missing: cfg.exit_fd.is_some() && exit.is_none(),
        exit,
    }
}

/// How to use the tap: with `virtio_net_hdr`s if it was opened with them (by us when offloads
/// are on, or by whoever passed a tap fd), and then with the guest sending us unsegmented TCP if
/// the kernel agrees.
fn tap_mode(cfg: &Config, tap: BorrowedFd<'_>) -> Result<TapMode, Error> {
    let vnet_hdr_len = match sys::tap::vnet_hdr_len(tap) {
        Ok(n) => n,
        Err(e) => {
            debug!("TUNGETIFF: {e}; assuming plain frames");
            0
        }
    };
    if vnet_hdr_len != 0 && !(vnet::HDR_LEN..=vnet::MAX_HDR_LEN).contains(&vnet_hdr_len) {
        return Err(Error::Attach(format!(
            "the tap's virtio_net_hdr is {vnet_hdr_len} bytes; only {}..={} are supported",
            vnet::HDR_LEN,
            vnet::MAX_HDR_LEN
        )));
    }
    let mut mode = TapMode {
        vnet_hdr_len,
        tx_offload: cfg.offload && vnet_hdr_len != 0,
        rx_gso: false,
    };
    if mode.tx_offload {
        let flags = sys::tap::TUN_F_CSUM | sys::tap::TUN_F_TSO4 | sys::tap::TUN_F_TSO6;
        match sys::tap::set_offload(tap, flags) {
            Ok(()) => mode.rx_gso = true,
            Err(e) => info!("the guest will segment its own TCP: {e}"),
        }
    }
    debug!("tap mode {mode:?}");
    Ok(mode)
}

/// `--splice-forwards`: fork the socket broker into the target's namespaces, confined like
/// tapir itself. Without namespaces (a tap fd) or on failure, forwards keep the stack path.
fn spawn_broker(cfg: &Config, ns: &Namespaces) -> Option<sys::nsbroker::Broker> {
    if !cfg.splice_forwards {
        return None;
    }
    let Some((userns, netns)) = ns else {
        warn!("--splice-forwards needs the target's namespaces (not a tap fd); forwards use the stack");
        return None;
    };
    let confine = || crate::isolation::confine_helper(cfg);
    match sys::nsbroker::Broker::spawn(userns.as_deref(), netns, confine) {
        Ok(b) => {
            debug!("socket broker started for spliced forwards");
            Some(b)
        }
        Err(e) => {
            warn!(
                "--splice-forwards: cannot start the socket broker ({e}); forwards use the stack"
            );
            None
        }
    }
}

/// `auto` port forwarding: the namespace's socket tables, opened inside it (forks, so while
/// single-threaded, and before the sandbox hides `/proc`).
fn auto_forward_tables(cfg: &Config, ns: &Namespaces) -> Option<crate::forward::auto::ProcNet> {
    if !(cfg.auto_forward.tcp || cfg.auto_forward.udp) {
        return None;
    }
    let Some((userns, netns)) = ns else {
        warn!("auto port forwarding needs the target's namespaces (not a tap fd); it is off");
        return None;
    };
    Some(crate::forward::auto::open(userns.as_deref(), netns))
}

fn serve(
    cfg: &Config,
    tap: OwnedFd,
    inherited: Inherited,
    ns: &Namespaces,
    target_pid: Option<i32>,
    child: Option<sys::userns::PendingChild>,
) -> Result<Exit, Error> {
    let auto_tables = auto_forward_tables(cfg, ns);
    let child_pid = child.as_ref().map(|c| c.pid);
    let mode = tap_mode(cfg, tap.as_fd())?;
    let watch = Watch {
        exit_fd: inherited.exit,
        exit_fd_missing: inherited.exit_missing,
        target_pid,
        child: child_pid,
        netns_file: cfg.process.netns_file.clone(),
    };
    let mut rt = Runtime::new(cfg, tap, mode, watch)?;
    // Everything that can fail is done (tap configured, forwards listening): pasta's daemon
    // mode forks here, and the parent's exit 0 tells the caller we are ready. The broker
    // (`--splice-forwards`) dies with its parent, so it is started by the process that serves.
    let process = &cfg.process;
    let log = match &process.log_file {
        Some(path) => Some(sys::daemon::open_log(path).map_err(|e| {
            Error::Attach(format!("Couldn't open log file {}: {e}", path.display()))
        })?),
        None => None,
    };
    if process.daemonize {
        sys::daemon::daemonize(process.pid_file.as_deref())
            .map_err(|e| Error::Attach(format!("Couldn't fork into the background: {e}")))?;
        rt.after_fork()?;
    } else if let Some(path) = &process.pid_file {
        sys::daemon::write_pid_file(path, std::process::id()).map_err(|e| {
            Error::Attach(format!("Couldn't write PID file {}: {e}", path.display()))
        })?;
    }
    if let Some(log) = &log {
        sys::daemon::stderr_to(log)
            .map_err(|e| Error::Attach(format!("Couldn't log to the log file: {e}")))?;
    }
    rt.set_broker(spawn_broker(cfg, ns));
    if let Some(tables) = auto_tables {
        rt.set_auto_forward(crate::forward::auto::AutoForwarder::new(cfg, tables));
    }
    // Isolation (sandbox, then the seccomp allowlist) goes last, right before the ready byte:
    // from here on only syscalls in sandbox/seccomp/<arch>.json are allowed.
    crate::isolation::apply(cfg, target_pid.or(child_pid.map(|p| p.as_raw())))
        .map_err(|e| Error::Attach(e.to_string()))?;
    if let Some(ready) = inherited.ready {
        if let Err(e) = sys::fd::signal_ready(ready) {
            warn!("cannot write to ready fd: {e}");
        }
    }
    if let Some(c) = child {
        c.start()
            .map_err(|e| Error::Run(format!("cannot start the command: {e}")))?;
    }
    Ok(rt.run()?)
}

/// The host's template interfaces (pasta's `-i`, or the ones holding the default routes), as
/// `config::pasta` takes them. A family the options turn off is not looked at.
fn read_host(opts: &PastaOptions) -> Result<pasta::Host, Error> {
    let iface = opts.interface.as_deref();
    let failed = |e: std::io::Error| Error::Config(ConfigError::Pasta(e.to_string()));
    let v4 = if opts.family == pasta::Family::V6Only {
        None
    } else {
        sys::route::template4(iface).map_err(failed)?
    };
    let v6 = if opts.family == pasta::Family::V4Only {
        None
    } else {
        sys::route::template6(iface).map_err(failed)?
    };
    Ok(pasta::Host {
        v4: v4.map(|t| pasta::Template4 {
            ifname: t.ifname,
            addr: t.addr,
            prefix_len: t.prefix_len,
            gateway: t.gateway,
        }),
        v6: v6.map(|t| pasta::Template6 {
            ifname: t.ifname,
            addr: t.addrs.first().copied(),
            gateway: t.gateway,
        }),
    })
}

/// pasta's start-up summary on stderr (info level: not with `--quiet`).
fn pasta_banner(cfg: &Config, host: &pasta::Host) {
    let n = &cfg.net;
    let mut s = String::new();
    let name = |t: Option<&String>| t.map_or("none".to_owned(), |n| n.clone());
    s.push_str(&format!(
        "Template interface: {} (IPv4), {} (IPv6)\n",
        name(host.v4.as_ref().map(|t| &t.ifname)),
        name(host.v6.as_ref().map(|t| &t.ifname))
    ));
    s.push_str(&format!("Namespace interface: {}\n", cfg.tap_name));
    if cfg.ipv4 {
        if !cfg.disable_host_loopback {
            s.push_str(&format!(
                "    NAT to host 127.0.0.1: {}\n",
                n.loopback_alias
            ));
        }
        s.push_str(&format!(
            "IPv4: {}/{} gateway {}\n",
            n.guest, n.prefix_len, n.gateway
        ));
        if !cfg.disable_dns {
            s.push_str(&format!("    DNS forward: {}\n", n.dns));
        }
        if let Some(a) = n.guest_alias {
            s.push_str(&format!("    host at the guest's address: {a}\n"));
        }
    }
    if cfg.ipv6 {
        let n6 = &cfg.net6;
        if let Some(a) = n6.guest {
            s.push_str(&format!(
                "IPv6: {a}/{} gateway {}\n",
                n6.prefix_len, n6.gateway
            ));
        }
        if let (false, Some(a)) = (cfg.disable_host_loopback, n6.loopback_alias) {
            s.push_str(&format!("    NAT to host ::1: {a}\n"));
        }
    }
    eprint!("{s}");
}

/// pasta mode: read the host's template interfaces, build the configuration, attach, serve.
/// Returns the exit status. Errors are printed by the caller, bare (pasta's style).
pub fn pasta(opts: &PastaOptions) -> Result<i32, Error> {
    // The user policy file first: its errors come before anything that looks at the host.
    let mut opts = opts.clone();
    let user_policy = add_user_policy(&mut opts.policy)?;
    let opts = &opts;
    let host = read_host(opts)?;
    let cfg = pasta::build(opts, &host)?;
    crate::logger::init(cfg.debug);
    if cfg.process.quiet && !cfg.debug {
        // pasta's --quiet: warnings and errors only.
        log::set_max_level(log::LevelFilter::Warn);
    }
    if let Some(line) = user_policy {
        info!("{line}");
    }
    let cfg = &resolve_outbound(&cfg)?;
    let Some(target) = cfg.target.clone() else {
        return Err(Error::Config(ConfigError::Pasta(
            "tapir: pasta without a PID or --netns spawns a command, which tapir does in \
             `tapir run -- COMMAND`"
                .to_owned(),
        )));
    };
    serve_target(cfg, &target, || {
        if !cfg.process.quiet {
            pasta_banner(cfg, &host);
        }
    })
}

/// Both network front ends from here on: get the tap in `target`, print the front end's
/// `banner`, serve until an exit condition. Returns the exit status.
fn serve_target(cfg: &Config, target: &Target, banner: impl FnOnce()) -> Result<i32, Error> {
    let inherited = adopt_inherited(cfg);
    let tap = obtain_tap(cfg, target)?;
    banner();
    let target_pid = match target {
        Target::Pid(p) => Some(*p),
        _ => None,
    };
    let ns = namespaces(cfg, target);
    match serve(cfg, tap, inherited, &ns, target_pid, None)? {
        Exit::ChildExited(code) => Ok(code),
        _ => Ok(0),
    }
}

/// slirp4netns mode: attach to `cfg.target` and serve. Returns the exit status.
pub fn attach(cfg: &Config) -> Result<i32, Error> {
    let cfg = &resolve_outbound(&with_user_policy(cfg)?)?;
    let target = cfg
        .target
        .clone()
        .ok_or_else(|| Error::Attach("no target namespace".into()))?;
    serve_target(cfg, &target, || banner(cfg))
}

/// Write a resolv.conf pointing at the DNS proxy, for `tapir run`'s command to see.
fn write_run_resolv_conf(cfg: &Config) -> Option<tempfile_path::TempPath> {
    let mut content = format!("nameserver {}\n", cfg.net.dns());
    if cfg.ipv6 {
        content.push_str(&format!("nameserver {}\n", cfg.net6.dns));
    }
    tempfile_path::TempPath::create("resolv.conf", content.as_bytes())
        .map_err(|e| warn!("cannot write a resolv.conf for the command: {e}"))
        .ok()
}

/// `tapir run`: make namespaces, run `argv` in them with networking, return its status.
pub fn run(cfg: &Config, argv: &[OsString]) -> Result<i32, Error> {
    let cfg = &resolve_outbound(&with_user_policy(cfg)?)?;
    let inherited = adopt_inherited(cfg);
    let resolv = write_run_resolv_conf(cfg);
    let child = sys::userns::spawn_isolated(argv, resolv.as_ref().map(|r| r.path()))
        .map_err(|e| Error::Run(e.to_string()))?;
    drop(resolv);
    let pid = child.pid.as_raw();
    let tap = match obtain_tap(cfg, &Target::Pid(pid)) {
        Ok(t) => t,
        Err(e) => {
            drop(child); // closing the go pipe makes the child exit 1
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            return Err(e);
        }
    };
    info!(
        "running {:?} in a new network namespace ({} via {})",
        argv[0],
        cfg.net.guest(),
        cfg.net.gateway()
    );
    let ns = namespaces(cfg, &Target::Pid(pid));
    match serve(cfg, tap, inherited, &ns, None, Some(child))? {
        Exit::ChildExited(code) => Ok(code),
        Exit::Signal(sig) => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            Ok(128 + sig as i32)
        }
        _ => Ok(0),
    }
}

/// A private temporary file removed on drop.
mod tempfile_path {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};

    /// Path of a temporary file that is unlinked on drop.
    pub struct TempPath(PathBuf);

    impl TempPath {
        /// Create `$XDG_RUNTIME_DIR` (or `/tmp`) `/tapir-<pid>-<name>` with `content`, mode 0644.
        pub fn create(name: &str, content: &[u8]) -> std::io::Result<Self> {
            let dir = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            let path = dir.join(format!("tapir-{}-{name}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)?;
            f.write_all(content)?;
            Ok(TempPath(path))
        }

        /// The file's path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_pipe_is_not_a_tap() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let n = r.as_raw_fd();
        let e = check_tap_fd(r, n).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("fd {n} is not a tap device (it is a pipe); {TAPFD_WANTED}")
        );
    }

    #[test]
    fn outbound_addresses_are_resolved_and_bind_checked() {
        // Loopback exists in every network namespace, this test's included.
        let ok = |o| usable_outbound(o, false).map_err(|e| e.to_string());
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(ok(Outbound::Addr(lo)), Ok(lo));
        assert_eq!(ok(Outbound::Interface("lo".into())), Ok(lo));
        let missing = ok(Outbound::Interface("nonexistent0".into())).unwrap_err();
        assert!(
            missing.starts_with(
                "outbound-addr has to be valid ipv4 address or interface name.\ntapir: \
                 --outbound-addr=nonexistent0: there is no network interface of that name"
            ),
            "{missing}"
        );
        // TEST-NET-2 (RFC 5737): documentation only, never a local address (unless this
        // namespace lets sockets bind foreign addresses).
        let nonlocal = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind");
        if nonlocal.is_ok_and(|v| v.trim() != "0") {
            return;
        }
        let foreign = ok(Outbound::Addr(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)))).unwrap_err();
        assert!(
            foreign.contains("198.51.100.7 is not an address of this host"),
            "{foreign}"
        );
    }

    #[test]
    fn resolve_outbound_leaves_only_addresses() {
        let cfg = Config::from_options(
            crate::config::Options {
                outbound_addr: Some("lo".into()),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        let r = resolve_outbound(&cfg).unwrap();
        assert_eq!(r.outbound_addr, Some(Outbound::Addr(Ipv4Addr::LOCALHOST)));
        assert_eq!(r.outbound_addr6, None);
    }
}
