//! tapir: a rootless userspace network stack for containers, drop-in for slirp4netns and pasta.
//!
//! # Theory of operation
//!
//! A `tapir` process is started per container. It attaches to the container's network namespace
//! (joining its user namespace first), opens a tap device there and hands the descriptor back to
//! the main process, which stays in the caller's ("host") namespaces. From then on every Ethernet
//! frame the guest sends is terminated here:
//!
//! ```text
//! tap fd -> device (frame queues) -> stack::vhost (ARP, ICMP echo, DHCP of the virtual hosts)
//!                                 -> smoltcp Interface -> proxy flows -> host sockets
//! ```
//!
//! and back the same way. The control plane is `cli -> config` (immutable) plus the API socket.
//! `cli` has two network front ends, slirp4netns's command line and pasta's (chosen by the
//! program name or `tapir pasta`); both end in the same [`config::Config`], whose address plan
//! is either slirp4netns's virtual network or pasta's copy of the host's interface.
//! [`runtime`] owns the single mio event loop and is the only module that knows every kind of fd.
//!
//! Unsafe code lives only in [`sys`].
#![deny(unsafe_code)]

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod device;
pub mod error;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod isolation;
pub mod logger;
pub mod nat;
pub mod policy;
pub mod proxy;
pub mod runtime;
pub mod stack;
pub mod stats;
pub mod sys;
