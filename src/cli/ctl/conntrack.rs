//! The words of `tapir ctl SOCKET conntrack ...` and `tapir ctl SOCKET stats ...`.
//!
//! # Theory of operation
//!
//! Options come after the action word, in any order, each once at most:
//! `conntrack [-p|--proto PROTO] [--addr ADDR] [--dst ADDR] [--state STATE] [-o json]
//! [-w|--watch]` and `stats [--prometheus | -o json]`. Values are checked here (protocol and
//! state names, IP addresses) with the server's own parsers, so a typo is a usage error, not a
//! server round trip.

use std::net::IpAddr;

use crate::api::flows::{parse_proto, parse_state};
use crate::cli::CliError;

/// Options of `tapir ctl SOCKET conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackOpts {
    /// `-p PROTO`.
    pub proto: Option<String>,
    /// `--addr ADDR`: any endpoint.
    pub addr: Option<IpAddr>,
    /// `--dst ADDR`: the destination.
    pub dst: Option<IpAddr>,
    /// `--state STATE`.
    pub state: Option<String>,
    /// `-o json`: print JSON instead of the table.
    pub json: bool,
    /// `--watch`: stream new and closed flows.
    pub watch: bool,
}

fn usage(msg: String) -> CliError {
    CliError::usage(format!("tapir ctl: {msg}"))
}

fn set<T>(slot: &mut Option<T>, v: T, name: &str) -> Result<(), CliError> {
    if slot.replace(v).is_some() {
        return Err(usage(format!("{name} given twice")));
    }
    Ok(())
}

/// Parse the words after `conntrack`.
pub fn parse_conntrack(words: &[&str]) -> Result<ConntrackOpts, CliError> {
    let mut o = ConntrackOpts::default();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .copied()
                .ok_or_else(|| usage(format!("{name} needs a value")))
        };
        match *w {
            "-p" | "--proto" => {
                let v = value(w)?;
                parse_proto(v).ok_or_else(|| usage(format!("bad protocol {v:?}")))?;
                set(&mut o.proto, v.to_owned(), w)?;
            }
            "--addr" | "--dst" => {
                let v = value(w)?;
                let a: IpAddr = v.parse().map_err(|_| usage(format!("bad address {v:?}")))?;
                set(
                    if *w == "--addr" {
                        &mut o.addr
                    } else {
                        &mut o.dst
                    },
                    a,
                    w,
                )?;
            }
            "--state" => {
                let v = value(w)?;
                parse_state(v).ok_or_else(|| usage(format!("bad state {v:?}")))?;
                set(&mut o.state, v.to_owned(), w)?;
            }
            "-o" => match value(w)? {
                "json" => o.json = true,
                v => return Err(usage(format!("bad output format {v:?}"))),
            },
            "-w" | "--watch" => o.watch = true,
            _ => return Err(usage(format!("conntrack: unknown option {w:?}"))),
        }
    }
    Ok(o)
}

/// Parse the words after `stats`: whether `--prometheus` was given.
pub fn parse_stats(words: &[&str]) -> Result<bool, CliError> {
    match words {
        [] | ["-o", "json"] => Ok(false),
        ["--prometheus"] => Ok(true),
        _ => Err(usage("stats takes --prometheus or -o json".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_options() {
        assert_eq!(parse_conntrack(&[]), Ok(ConntrackOpts::default()));
        let o = parse_conntrack(&[
            "-p",
            "tcp",
            "--addr",
            "10.0.2.100",
            "--state",
            "established",
            "-o",
            "json",
            "-w",
        ])
        .unwrap();
        assert_eq!(o.proto.as_deref(), Some("tcp"));
        assert_eq!(o.addr, Some("10.0.2.100".parse().unwrap()));
        assert_eq!(o.state.as_deref(), Some("established"));
        assert!(o.json && o.watch);
        assert_eq!(
            parse_conntrack(&["--dst", "::1"]).unwrap().dst,
            Some("::1".parse().unwrap())
        );
        for bad in [
            &["-p"][..],
            &["-p", "sctp"],
            &["--addr", "x"],
            &["--state", "nope"],
            &["-o", "yaml"],
            &["--bogus"],
            &["-p", "tcp", "-p", "udp"],
        ] {
            assert!(parse_conntrack(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stats_options() {
        assert_eq!(parse_stats(&[]), Ok(false));
        assert_eq!(parse_stats(&["--prometheus"]), Ok(true));
        assert_eq!(parse_stats(&["-o", "json"]), Ok(false));
        assert!(parse_stats(&["x"]).is_err());
    }
}
