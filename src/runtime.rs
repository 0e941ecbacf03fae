//! The event loop.
//!
//! # Theory of operation
//!
//! One thread, one `mio::Poll` (epoll, edge-triggered), typed [`Token`]s. The runtime is the only
//! module that knows every kind of descriptor; it owns no policy. Each wake-up:
//!
//! 1. handle control events: exit fd hang-up, signals (`SIGTERM`, `SIGINT`, `SIGHUP` end the
//!    process cleanly; `SIGCHLD` reaps the `tapir run` command), the target process exiting;
//!    with a `tapir run` command, a first terminating signal is passed on to the command instead,
//!    and the loop serves its network until it exits, for at most [`RUN_STOP_GRACE`];
//! 2. read at most [`RX_BATCH`] frames from the tap (the tap stays marked readable until a read
//!    returns `EAGAIN`, and the next poll then does not sleep), so a flooding guest cannot starve
//!    other work; each goes through the virtual hosts and the proxies, and a TCP segment straight
//!    into its own flow's smoltcp socket;
//! 3. run the virtual hosts' timers, then serve the flows with news (`Proxy::after_poll`: move
//!    bytes between each one's smoltcp socket and host socket, let smoltcp transmit); flows
//!    without news cost nothing;
//! 4. write queued frames to the tap until it would block; the rest waits for the tap's writable
//!    edge (nothing is dropped);
//! 5. sleep until the earliest of the next event, the earliest smoltcp deadline of any flow and
//!    the virtual-host timers, after an adaptive busy-poll ([`BusyPoll`]) when request/response traffic is
//!    fast enough for it to pay.
//!
//! Lifecycle rules: `--exit-fd` ends the loop on hang-up, error, or if the descriptor is not open
//! at all (slirp4netns's `POLLNVAL`); data written to it is ignored. If the tap disappears
//! (deleted from the namespace), the loop ends with an error naming it, rather than spinning
//! forever as slirp4netns does.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration as StdDuration;

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use smoltcp::time::{Duration, Instant};

use crate::api;
use crate::config::Config;
use crate::device::{vnet, TapMode, RX_BATCH};
use crate::forward::{self, ForwardTable};
use crate::proxy::{self, Proxy};
use crate::stack::Stack;
use crate::sys;

/// Events fetched per `epoll_wait`.
const EVENTS_CAPACITY: usize = 256;
/// How far a wait may overrun its timeout (a loaded host's scheduling delay) before the
/// overrun counts as time the process spent stopped.
const STOPPED_SLACK: StdDuration = StdDuration::from_secs(1);

/// What an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The tap device.
    Tap,
    /// `--exit-fd`.
    ExitFd,
    /// The signalfd.
    Signal,
    /// pidfd of the target process (`--netns-type=pid`).
    Target,
    /// The API socket's listener.
    Api,
    /// The watch on the network-namespace file's directory (pasta's netns quit).
    Netns,
}

impl Token {
    fn to_mio(self) -> mio::Token {
        mio::Token(match self {
            Token::Tap => 0,
            Token::ExitFd => 1,
            Token::Signal => 2,
            Token::Target => 3,
            Token::Api => 4,
            Token::Netns => 5,
        })
    }

    fn from_mio(t: mio::Token) -> Option<Token> {
        Some(match t.0 {
            0 => Token::Tap,
            1 => Token::ExitFd,
            2 => Token::Signal,
            3 => Token::Target,
            4 => Token::Api,
            5 => Token::Netns,
            _ => return None,
        })
    }
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// `--exit-fd` hung up (or was never open).
    ExitFd,
    /// A termination signal arrived.
    Signal(Signal),
    /// The target process (`--netns-type=pid`) exited.
    TargetExited,
    /// The `tapir run` command exited with this shell-style status.
    ChildExited(i32),
    /// The network-namespace file was deleted (podman removed the container's namespace).
    NamespaceGone,
}

/// Runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// epoll setup or wait failed.
    #[error("event loop: {0}")]
    Poll(#[source] io::Error),
    /// The API socket could not be set up.
    #[error(transparent)]
    Api(#[from] crate::api::Error),
    /// A `-p/--publish` forward could not be opened.
    #[error("cannot publish {spec}: {err}")]
    Publish {
        /// The forward, as `proto host:port -> guest:port`.
        spec: String,
        /// Why.
        err: crate::forward::AddError,
    },
    /// Signal setup failed.
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] nix::Error),
    /// The tap device went away.
    #[error("tap device {name} is gone ({err}); was it deleted or its namespace destroyed?")]
    TapGone {
        /// Device name.
        name: String,
        /// The read/write error.
        err: io::Error,
    },
}

/// The running process: every descriptor plus the stack.
pub struct Runtime<'c> {
    cfg: &'c Config,
    poll: Poll,
    tap: OwnedFd,
    stack: Stack,
    proxy: Proxy,
    forwards: ForwardTable,
    /// `auto` port forwarding, when on ([`Runtime::set_auto_forward`]).
    auto: Option<forward::auto::AutoForwarder>,
    api: Option<api::Server>,
    /// Kept open (and registered) for the loop's lifetime.
    _exit_fd: Option<OwnedFd>,
    exit_fd_invalid: bool,
    signals: SignalFd,
    /// Kept open (and registered) for the loop's lifetime.
    _target: Option<OwnedFd>,
    /// pasta's quit-with-the-namespace watch.
    netns_watch: Option<sys::nswatch::NetnsWatch>,
    child: Option<Pid>,
    /// The terminating signal passed on to the `tapir run` command, and when to give up
    /// waiting for it to exit.
    stopping: Option<(Signal, std::time::Instant)>,
    epoch: std::time::Instant,
    /// Time the process spent stopped, left out of the runtime clock ([`Runtime::note_stopped`]).
    stopped: StdDuration,
    tap_readable: bool,
    tap_writable: bool,
    next_expiry_ms: u64,
}

/// Adaptive busy-polling before sleeping, after the kernel's cpuidle-haltpoll governor.
///
/// A request/response exchange through tapir wakes it twice per round trip, and each sleep and
/// wake-up costs a context switch, on a VM a halt and an interrupt as well: on a 2-vCPU VM
/// that is most of a ~60 us round trip. So before an `epoll_wait` that may sleep, poll without
/// sleeping for up to `window`. The window adapts to the traffic: a sleep that an event ended
/// within `max` means a longer spin would have caught the event, so the window grows (from
/// [`BusyPoll::GROW_START`], doubling, up to `max`); a sleep longer than `max` means spinning
/// was wasted, so the window halves (to zero below `GROW_START`). Idle or slow traffic
/// therefore never spins, bulk transfers never sleep (the loop comes back at once while the
/// tap has frames), and only fast request/response traffic spins, at most `max` per wait.
/// `max` is `--busy-poll` (0 turns it off).
struct BusyPoll {
    max: StdDuration,
    window: StdDuration,
}

impl BusyPoll {
    /// First non-zero window.
    const GROW_START: StdDuration = StdDuration::from_micros(10);

    fn new(max: StdDuration) -> Self {
        BusyPoll {
            max,
            window: StdDuration::ZERO,
        }
    }

    /// `Poll::poll`, spinning first when the window is open and `timeout` may sleep.
    fn wait(
        &mut self,
        poll: &mut Poll,
        events: &mut Events,
        timeout: Option<StdDuration>,
    ) -> io::Result<()> {
        if timeout == Some(StdDuration::ZERO) || self.max.is_zero() {
            return poll.poll(events, timeout);
        }
        let start = std::time::Instant::now();
        // Never spin past the timeout: a timer due sooner must not wait for the spin.
        let spin = timeout.map_or(self.window, |t| t.min(self.window));
        if !spin.is_zero() {
            loop {
                poll.poll(events, Some(StdDuration::ZERO))?;
                if !events.is_empty() {
                    return Ok(());
                }
                if start.elapsed() >= spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let spun = start.elapsed();
        let r = poll.poll(events, timeout.map(|t| t.saturating_sub(spun)));
        self.adapt(start.elapsed() - spun, !events.is_empty());
        r
    }

    /// Learn from a sleep of `slept` that an event ended (`woken`) or a timeout did.
    fn adapt(&mut self, slept: StdDuration, woken: bool) {
        if woken && slept <= self.max {
            self.window = (self.window * 2).max(Self::GROW_START).min(self.max);
        } else if slept > self.max {
            self.window /= 2;
            if self.window < Self::GROW_START {
                self.window = StdDuration::ZERO;
            }
        }
    }
}

/// Signals that end the process cleanly.
const TERMINATING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP];

/// How long `tapir run` keeps serving its command after passing a terminating signal on to it
/// (the command then dies with tapir: `sys::userns` sets its parent-death signal). podman's
/// default stop timeout.
pub const RUN_STOP_GRACE: StdDuration = StdDuration::from_secs(10);

/// Block the signals the loop handles and return a signalfd for them.
fn signal_fd() -> Result<SignalFd, Error> {
    let mut mask = SigSet::empty();
    for s in TERMINATING {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(Error::Signals)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(Error::Signals)
}

/// What ends the runtime besides signals.
#[derive(Debug, Default)]
pub struct Watch {
    /// The adopted `--exit-fd` (`None` when absent): its hang-up ends the loop.
    pub exit_fd: Option<OwnedFd>,
    /// `--exit-fd` was named but is not open.
    pub exit_fd_missing: bool,
    /// The target process, watched through a pidfd.
    pub target_pid: Option<i32>,
    /// `tapir run`'s command, reaped; its exit ends the loop.
    pub child: Option<Pid>,
    /// A network-namespace file whose deletion ends the loop.
    pub netns_file: Option<std::path::PathBuf>,
}

impl<'c> Runtime<'c> {
    /// Register everything. Spliced port forwards start once [`Runtime::set_broker`] gives
    /// the broker.
    pub fn new(
        cfg: &'c Config,
        tap: OwnedFd,
        tap_mode: TapMode,
        watch: Watch,
    ) -> Result<Self, Error> {
        let Watch {
            exit_fd,
            exit_fd_missing,
            target_pid,
            child,
            netns_file,
        } = watch;
        let poll = Poll::new().map_err(Error::Poll)?;
        let signals = signal_fd()?;
        // A write to a socket whose peer went away must be an EPIPE error, not a death.
        sys::ignore_sigpipe();

        let reg = poll.registry();
        reg.register(
            &mut SourceFd(&tap.as_raw_fd()),
            Token::Tap.to_mio(),
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(Error::Poll)?;
        reg.register(
            &mut SourceFd(&signals.as_fd().as_raw_fd()),
            Token::Signal.to_mio(),
            Interest::READABLE,
        )
        .map_err(Error::Poll)?;

        let mut exit_fd_invalid = exit_fd_missing;
        let exit_fd = match exit_fd {
            Some(fd) => {
                match reg.register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    Token::ExitFd.to_mio(),
                    Interest::READABLE,
                ) {
                    Ok(()) => Some(fd),
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                        // Regular files and /dev/null cannot be polled for hang-up; slirp4netns's
                        // poll() never reports anything on them either.
                        warn!("--exit-fd {} cannot signal hang-up (not a pipe or socket); ignoring it", fd.as_raw_fd());
                        None
                    }
                    Err(e) => {
                        debug!("exit fd cannot be watched ({e}); treating as hung up");
                        exit_fd_invalid = true;
                        None
                    }
                }
            }
            None => None,
        };

        let target = match target_pid {
            Some(pid) => match sys::fd::pidfd_open(pid) {
                Ok(fd) => {
                    reg.register(
                        &mut SourceFd(&fd.as_raw_fd()),
                        Token::Target.to_mio(),
                        Interest::READABLE,
                    )
                    .map_err(Error::Poll)?;
                    Some(fd)
                }
                Err(e) => {
                    debug!("cannot watch target process {pid}: {e}");
                    None
                }
            },
            None => None,
        };

        let netns_watch = match netns_file {
            Some(path) => match sys::nswatch::NetnsWatch::new(&path) {
                Ok(w) => {
                    reg.register(
                        &mut SourceFd(&w.as_raw_fd()),
                        Token::Netns.to_mio(),
                        Interest::READABLE,
                    )
                    .map_err(Error::Poll)?;
                    Some(w)
                }
                Err(e) => {
                    warn!(
                        "cannot watch {} for removal ({e}); exit follows signals only",
                        path.display()
                    );
                    None
                }
            },
            None => None,
        };

        let epoch = std::time::Instant::now();
        sys::tune_allocator();
        let stack = Stack::new(cfg, tap_mode, Instant::ZERO);
        match sys::net::raise_fd_limit() {
            Ok(n) => debug!("fd limit {n}"),
            Err(e) => warn!("cannot raise the fd limit: {e}"),
        }
        let proxy = Proxy::new(cfg, None);
        let mut forwards = ForwardTable::new();
        for spec in &cfg.publish {
            let id = forwards
                .add(*spec, poll.registry())
                .map_err(|err| Error::Publish {
                    spec: spec.to_string(),
                    err,
                })?;
            info!("forward {id}: {spec}");
        }
        let api = match &cfg.api_socket {
            Some(path) => Some(api::Server::bind(
                path,
                poll.registry(),
                Token::Api.to_mio(),
            )?),
            None => None,
        };
        Ok(Runtime {
            cfg,
            poll,
            tap,
            stack,
            proxy,
            forwards,
            auto: None,
            api,
            _exit_fd: exit_fd,
            exit_fd_invalid,
            signals,
            _target: target,
            netns_watch,
            child,
            stopping: None,
            epoch,
            stopped: StdDuration::ZERO,
            tap_readable: true,
            tap_writable: true,
            next_expiry_ms: 0,
        })
    }

    /// Renew the signalfd after a `fork` (pasta's daemon mode): a signalfd reports the signals
    /// of the process that reads it, but its readiness in an epoll set is that of the process
    /// that registered it, so the daemon child would never be woken for SIGTERM.
    pub fn after_fork(&mut self) -> Result<(), Error> {
        let fresh = signal_fd()?;
        let reg = self.poll.registry();
        reg.deregister(&mut SourceFd(&self.signals.as_fd().as_raw_fd()))
            .map_err(Error::Poll)?;
        reg.register(
            &mut SourceFd(&fresh.as_fd().as_raw_fd()),
            Token::Signal.to_mio(),
            Interest::READABLE,
        )
        .map_err(Error::Poll)?;
        self.signals = fresh;
        Ok(())
    }

    /// Give the proxy its socket broker (`--splice-forwards`), started after any daemon fork.
    pub fn set_broker(&mut self, broker: Option<crate::sys::nsbroker::Broker>) {
        self.proxy.set_broker(broker);
    }

    /// Turn on `auto` port forwarding; its first scan runs at the loop's first round.
    pub fn set_auto_forward(&mut self, auto: forward::auto::AutoForwarder) {
        self.auto = Some(auto);
    }

    /// Time on the runtime clock: since start, less the time the process spent stopped.
    fn elapsed(&self) -> StdDuration {
        self.epoch.elapsed().saturating_sub(self.stopped)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn now(&self) -> Instant {
        Instant::from_micros(i64::try_from(self.elapsed().as_micros()).unwrap_or(i64::MAX))
    }

    /// A wait that was asked to last at most `asked` took `took`: if it overran by more than
    /// [`STOPPED_SLACK`], the process was stopped meanwhile (SIGSTOP, a frozen cgroup), and
    /// the overrun is left out of the runtime clock. The guest could not talk to tapir then,
    /// so its flows' silence timers and idle expiries must not run on: a stopped helper
    /// would otherwise reset every idle connection when it resumes.
    fn note_stopped(&mut self, took: StdDuration, asked: Option<StdDuration>) {
        let Some(asked) = asked else { return };
        if took > asked + STOPPED_SLACK {
            let lost = took - asked;
            debug!("the process was stopped for about {lost:?}; the runtime clock skips it");
            self.stopped += lost;
        }
    }

    /// Run until an exit condition. Errors are fatal (the tap is gone, epoll failed).
    pub fn run(mut self) -> Result<Exit, Error> {
        if self.exit_fd_invalid {
            info!("exit fd is not open; exiting");
            return Ok(Exit::ExitFd);
        }
        if let Some(exit) = self.reap_child() {
            return Ok(exit);
        }
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut timeout = Some(StdDuration::ZERO);
        let mut busy = BusyPoll::new(StdDuration::from_micros(u64::from(self.cfg.busy_poll_us)));
        loop {
            let asleep = std::time::Instant::now();
            let waited = busy.wait(&mut self.poll, &mut events, timeout);
            self.note_stopped(asleep.elapsed(), timeout);
            match waited {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Poll(e)),
            }
            for ev in events.iter() {
                match Token::from_mio(ev.token()) {
                    Some(Token::Tap) => {
                        if ev.is_readable() || ev.is_error() || ev.is_read_closed() {
                            self.tap_readable = true;
                        }
                        if ev.is_writable() {
                            self.tap_writable = true;
                        }
                    }
                    // Data on the exit fd means nothing (slirp4netns polls for POLLHUP only).
                    Some(Token::ExitFd)
                        if ev.is_read_closed() || ev.is_error() || ev.is_write_closed() =>
                    {
                        info!("exitfd event");
                        return Ok(Exit::ExitFd);
                    }
                    Some(Token::ExitFd) => {}
                    Some(Token::Signal) => {
                        if let Some(exit) = self.on_signals() {
                            return Ok(exit);
                        }
                    }
                    Some(Token::Target) => {
                        info!("target process exited; its network namespace is no longer served");
                        return Ok(Exit::TargetExited);
                    }
                    Some(Token::Netns) => {
                        let gone = self.netns_watch.as_mut().is_some_and(|w| {
                            w.gone().unwrap_or_else(|e| {
                                warn!("namespace watch failed ({e}); exiting");
                                true
                            })
                        });
                        if gone {
                            info!("network namespace is gone, exiting");
                            return Ok(Exit::NamespaceGone);
                        }
                    }
                    Some(Token::Api) => {
                        let now_ms = self.now_ms();
                        if let Some(api) = self.api.as_mut() {
                            api.on_listener(self.poll.registry(), now_ms);
                        }
                    }
                    None => {
                        if let Some(slot) = api::token_conn(ev.token()) {
                            self.on_api_conn(slot);
                        } else if let Some(fid) = forward::token_forward(ev.token()) {
                            let now_ms = self.now_ms();
                            self.proxy.on_forward_ready(
                                &mut self.stack,
                                self.poll.registry(),
                                &self.forwards,
                                fid,
                                now_ms,
                            );
                        } else if let Some(id) = proxy::token_flow(ev.token()) {
                            let now_ms = self.now_ms();
                            let host_ev = proxy::HostEvent::from_mio(ev);
                            self.proxy.on_host_event(
                                &mut self.stack,
                                self.poll.registry(),
                                id,
                                host_ev,
                                now_ms,
                            );
                        }
                    }
                }
            }
            timeout = self.service()?;
            if let Some((sig, deadline)) = self.stopping {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    info!("the command did not exit within {RUN_STOP_GRACE:?} of {sig}; exiting");
                    return Ok(Exit::Signal(sig));
                }
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
        }
    }

    /// One round of data-plane work. Returns the poll timeout.
    fn service(&mut self) -> Result<Option<StdDuration>, Error> {
        if self.tap_readable {
            self.read_tap_batch()?;
        }
        let now = self.now();
        let now_ms = self.now_ms();
        let vhost_deadline = self.stack.on_timer(now);
        // Frames just read went to smoltcp as they came (each to its flow's socket); now every
        // flow with news moves bytes between smoltcp and its host socket, and smoltcp transmits
        // what that produced.
        self.proxy
            .after_poll(&mut self.stack, self.poll.registry(), &self.forwards, now);
        if let Some(due) = self.proxy.take_timer_due() {
            self.next_expiry_ms = self.next_expiry_ms.min(due);
        }
        if now_ms >= self.next_expiry_ms {
            self.next_expiry_ms = self.proxy.on_timer(now_ms).unwrap_or(u64::MAX);
        }
        // API clients past their request deadline are closed; an accept that ran out of
        // descriptors is tried again.
        let mut api_due = None;
        if let Some(api) = self.api.as_mut() {
            // New and closed flows for `watch_flows` (journaled only while someone watches).
            self.proxy.set_flow_journal(api.watchers() > 0);
            let (events, lost) = self.proxy.take_flow_events();
            if !events.is_empty() || lost > 0 {
                api.publish(&events, lost, now_ms);
            }
            api_due = api.due();
            if api_due.is_some_and(|t| t <= now_ms) {
                api_due = api.on_timer(self.poll.registry(), now_ms);
            }
        }
        // `auto` port forwarding: rescan the namespace's listeners when due.
        let mut auto_due = None;
        if let Some(auto) = self.auto.as_mut() {
            if auto.due_ms() <= now_ms {
                for fid in auto.scan(now_ms, &mut self.forwards, self.poll.registry()) {
                    self.proxy.on_forward_removed(fid);
                }
            }
            auto_due = Some(auto.due_ms());
        }
        self.flush_tap()?;

        // More frames wait in the tap: come back at once, unless we are holding back because the
        // guest is not draining what we owe it (then the tap's writable edge wakes us; spinning
        // here would burn a core).
        if self.tap_readable && self.stack.device.tx_has_room() {
            return Ok(Some(StdDuration::ZERO));
        }
        // Work no event will announce (a spliced flow at its batch limit, a forward's backlog).
        if self.proxy.has_pending() {
            return Ok(Some(StdDuration::ZERO));
        }
        // Sleep until the earliest deadline; with none, until an event: an idle helper makes
        // no wake-ups of its own (the flows' keep-alives share one grid, `proxy::tcp`).
        let mut wait: Option<StdDuration> = None;
        let mut until = |d: StdDuration| wait = Some(wait.map_or(d, |w| w.min(d)));
        if let Some(t) = self.proxy.next_deadline() {
            let d = if t > now { t - now } else { Duration::ZERO };
            until(StdDuration::from_micros(d.total_micros()));
        }
        if let Some(t) = vhost_deadline {
            let d = t - now;
            until(StdDuration::from_micros(d.total_micros()));
        }
        for t in [Some(self.next_expiry_ms), api_due, auto_due]
            .into_iter()
            .flatten()
            .filter(|t| *t != u64::MAX)
        {
            until(StdDuration::from_millis(t.saturating_sub(now_ms)));
        }
        Ok(wait)
    }

    fn on_api_conn(&mut self, slot: usize) {
        let now_ms = self.now_ms();
        let Some(server) = self.api.as_mut() else {
            return;
        };
        // The egress policy is out of the proxy only while this one request is answered.
        let mut policy = self.proxy.take_policy();
        let (proxy, device, vhost) = (&self.proxy, &self.stack.device, &self.stack.vhost);
        // Built only for get_info.
        let info = || {
            let d = device.counters();
            let mut v = proxy.info(now_ms);
            v["version"] = serde_json::json!(env!("CARGO_PKG_VERSION"));
            v["frames"] = serde_json::json!({
                "rx": d.rx_frames,
                "tx": d.tx_frames,
                "tx_dropped": d.tx_dropped,
                "tx_blocked": d.tx_blocked,
                "tx_coalesced": d.tx_coalesced,
            });
            let mode = device.mode();
            v["tap"] = serde_json::json!({
                "vnet_hdr_len": mode.vnet_hdr_len,
                "offload_to_guest": mode.tx_offload(),
                "tso_from_guest": mode.rx_gso,
            });
            v
        };
        // Built only for get_stats.
        let uptime_ms = now_ms;
        let stats = || {
            let mut s = crate::stats::Stats {
                uptime_ms,
                ..Default::default()
            };
            proxy.fill_stats(&mut s);
            let d = device.counters();
            (s.frames_from_guest, s.frames_to_guest) = (d.rx_frames, d.tx_frames);
            (s.bytes_from_guest, s.bytes_to_guest) = (d.rx_bytes, d.tx_bytes);
            s.drops.insert("to_guest".to_owned(), d.tx_dropped);
            s.drops
                .insert("malformed".to_owned(), vhost.counters().malformed);
            s
        };
        let mut h = api::Handler {
            forwards: &mut self.forwards,
            registry: self.poll.registry(),
            default_guest: self.cfg.net.guest(),
            net6: self.cfg.ipv6.then_some(self.cfg.net6),
            info: &info,
            removed: Vec::new(),
            table: proxy.table(),
            now_ms,
            stats: &stats,
            policy: &mut policy,
            kill_denied: false,
        };
        server.on_conn(slot, &mut h);
        let kill = h.kill_denied;
        for fid in std::mem::take(&mut h.removed) {
            self.proxy.on_forward_removed(fid);
        }
        self.proxy.set_policy(policy);
        // A new watcher sees the flows that change from now on, this very turn included.
        let watching = self.api.as_ref().is_some_and(|a| a.watchers() > 0);
        self.proxy.set_flow_journal(watching);
        if kill {
            let n = self.proxy.kill_denied();
            log::info!("egress policy changed: {n} open flows it denies were closed");
        }
    }

    fn tap_gone(&self, err: io::Error) -> Error {
        Error::TapGone {
            name: self.cfg.tap_name.clone(),
            err,
        }
    }

    fn read_tap_batch(&mut self) -> Result<(), Error> {
        for _ in 0..RX_BATCH {
            if !self.stack.device.tx_has_room() {
                // The guest is not draining what we already owe it; let it catch up first.
                return Ok(());
            }
            let mut buf = self.stack.device.rx_buffer();
            // The guest's offload header is not needed: partial checksums are never verified
            // here, and a super-segment is taken whole.
            let mut hdr = [0u8; vnet::MAX_HDR_LEN];
            let hdr = &mut hdr[..self.stack.device.mode().vnet_hdr_len];
            match sys::tap::read_frame(self.tap.as_fd(), hdr, &mut buf) {
                Ok(0) => {
                    self.stack.device.recycle_rx(buf);
                    return Err(self.tap_gone(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) if buf.is_empty() => {
                    self.stack.device.count_rx(0);
                    self.stack.device.recycle_rx(buf);
                }
                Ok(_) => {
                    self.stack.device.count_rx(buf.len());
                    let now = self.now();
                    if self.stack.filter_guest_frame(&mut buf, now) {
                        self.proxy.on_guest_frame(
                            &mut self.stack,
                            self.poll.registry(),
                            &self.forwards,
                            buf,
                            now,
                        );
                    } else {
                        self.stack.device.recycle_rx(buf);
                    }
                }
                Err(e) => {
                    self.stack.device.recycle_rx(buf);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.tap_readable = false;
                            return Ok(());
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(self.tap_gone(e)),
                    }
                }
            }
        }
        Ok(())
    }

    fn flush_tap(&mut self) -> Result<(), Error> {
        if !self.tap_writable || self.stack.device.tx_pending() == 0 {
            return Ok(());
        }
        let fd = self.tap.as_fd();
        let mut blocked = false;
        let r = self.stack.device.flush(|hdr, frame| {
            let r = sys::tap::write_frame(fd, hdr, frame);
            if matches!(&r, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                blocked = true;
            }
            r
        });
        if blocked {
            self.tap_writable = false;
        }
        match r {
            Ok(()) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EBADFD)
                    || e.raw_os_error() == Some(libc::ENODEV) =>
            {
                Err(self.tap_gone(e))
            }
            Err(e) => {
                // E.g. EINVAL for a malformed frame or EIO while the link is down: the frame
                // was dropped and counted; keep serving.
                debug!("tap write: {e}");
                Ok(())
            }
        }
    }

    fn on_signals(&mut self) -> Option<Exit> {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(i32::try_from(info.ssi_signo).unwrap_or(0))
                    else {
                        continue;
                    };
                    if TERMINATING.contains(&sig) {
                        if let (Some(child), None) = (self.child, self.stopping) {
                            info!("received {sig}, passing it on to the command");
                            let _ = nix::sys::signal::kill(child, sig);
                            self.stopping = Some((sig, std::time::Instant::now() + RUN_STOP_GRACE));
                            continue;
                        }
                        info!("received {sig}, exiting");
                        return Some(Exit::Signal(sig));
                    }
                    if sig == Signal::SIGCHLD {
                        if let Some(exit) = self.reap_child() {
                            return Some(exit);
                        }
                    }
                }
                Ok(None) => return None,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!("reading signals: {e}");
                    return None;
                }
            }
        }
    }

    /// Reap children; report the `tapir run` command's exit.
    fn reap_child(&mut self) -> Option<Exit> {
        let child = self.child?;
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                    return Some(Exit::ChildExited(code));
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                    return Some(Exit::ChildExited(128 + sig as i32));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The stack (for tests and diagnostics).
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The flows (for tests and diagnostics).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }
}

/// Undo the signal mask the runtime installed (for code that runs after it, e.g. tests).
pub fn unblock_signals() {
    let mut mask = SigSet::empty();
    for s in TERMINATING {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_unblock();
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: StdDuration = StdDuration::from_micros(1);

    #[test]
    fn busy_poll_grows_on_quick_wakeups_and_shrinks_on_long_sleeps() {
        let mut b = BusyPoll::new(50 * US);
        assert_eq!(b.window, StdDuration::ZERO, "starts without spinning");
        // Events arriving soon after each sleep: the window opens and doubles up to max.
        for want in [10, 20, 40, 50, 50] {
            b.adapt(30 * US, true);
            assert_eq!(b.window, want * US);
        }
        // A short timeout (no event) teaches nothing.
        b.adapt(5 * US, false);
        assert_eq!(b.window, 50 * US);
        // Long sleeps: halve, then close below the first step.
        for want_ns in [25_000, 12_500, 0, 0] {
            b.adapt(2000 * US, true);
            assert_eq!(b.window, StdDuration::from_nanos(want_ns));
        }
    }

    #[test]
    fn busy_poll_off_never_opens() {
        let mut b = BusyPoll::new(StdDuration::ZERO);
        b.adapt(StdDuration::ZERO, true);
        assert_eq!(b.window, StdDuration::ZERO);
    }

    #[test]
    fn busy_poll_returns_at_once_with_a_ready_event() {
        // A pipe with data is readable at once: the spin must return it, not sleep.
        let mut poll = Poll::new().unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"x").unwrap();
        poll.registry()
            .register(
                &mut SourceFd(&r.as_raw_fd()),
                mio::Token(7),
                Interest::READABLE,
            )
            .unwrap();
        let mut events = Events::with_capacity(4);
        let mut b = BusyPoll::new(50 * US);
        b.window = 50 * US;
        b.wait(&mut poll, &mut events, Some(StdDuration::from_secs(5)))
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.token()).collect::<Vec<_>>(),
            [mio::Token(7)]
        );
        // Nothing more: spins for the window, then sleeps out the (short) timeout.
        let t0 = std::time::Instant::now();
        b.wait(&mut poll, &mut events, Some(StdDuration::from_millis(20)))
            .unwrap();
        assert!(events.is_empty());
        assert!(t0.elapsed() >= StdDuration::from_millis(20));
    }
}
