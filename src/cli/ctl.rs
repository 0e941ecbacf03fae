//! `tapir ctl SOCKET ACTION`: the command line of the API-socket client.
//!
//! # Theory of operation
//!
//! Selected when argv\[1\] is exactly `ctl`. No getopt here: the words after `ctl` are matched
//! as a whole (`SOCKET list`, `SOCKET add SPEC`, `SOCKET remove ID`, `SOCKET info`; the options
//! of `SOCKET conntrack ...` and `SOCKET stats ...` in [`conntrack`]), and
//! `-h`/`--help` as the first word asks for [`ctl_usage`]. The action is carried out by
//! `crate::ctl`; this module only recognises it.

use std::ffi::OsString;
use std::path::PathBuf;

use super::{CliError, Command};

pub mod conntrack;
pub use conntrack::ConntrackOpts;

/// Actions of `tapir ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlAction {
    /// `list`: the forwards.
    List,
    /// `add [ADDR:]HPORT:[[GUEST6]:]GPORT[/udp]`: a new forward (`-p`'s syntax).
    Add(String),
    /// `remove ID`.
    Remove(u64),
    /// `info`: counters.
    Info,
    /// `conntrack [OPTIONS]`: the flow table, or (`--watch`) its new and closed flows.
    Conntrack(ConntrackOpts),
    /// `stats [--prometheus]`: statistics, as JSON or (true) Prometheus text.
    Stats(bool),
    /// `policy list`: the egress rules.
    PolicyList,
    /// `policy add RULE [POSITION]`: an egress rule (`allow CIDR...` or `deny CIDR...`, one
    /// word or two).
    PolicyAdd(String, Option<u64>),
    /// `policy remove ID`.
    PolicyRemove(u64),
}

/// Usage of `tapir ctl`.
pub fn ctl_usage(argv0: &str) -> String {
    format!(
        "Usage: {argv0} ctl SOCKET list\n\
         \x20      {argv0} ctl SOCKET add [HOST_ADDR:]HOST_PORT:[[GUEST6]:]GUEST_PORT[/udp]\n\
         \x20      {argv0} ctl SOCKET remove ID\n\
         \x20      {argv0} ctl SOCKET info\n\
         \x20      {argv0} ctl SOCKET conntrack [-p PROTO] [--addr ADDR] [--dst ADDR] [--state STATE] [-o json] [--watch]\n\
         \x20      {argv0} ctl SOCKET stats [--prometheus | -o json]\n\
         \x20      {argv0} ctl SOCKET policy list|add 'allow|deny RULE' [POSITION]|remove ID\n\
         Talk to the API socket (--api-socket) of a running tapir or slirp4netns and print the\n\
         JSON reply. Exit status 1 if the reply is an error.\n"
    )
}

/// Whether `argv` is a `tapir ctl` command line.
pub fn is_ctl(argv: &[OsString]) -> bool {
    argv.get(1).is_some_and(|a| a == "ctl")
}

pub(super) fn parse_ctl(args: &[OsString]) -> Result<Command, CliError> {
    let words: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().unwrap_or("\u{fffd}"))
        .collect();
    if matches!(words.first(), Some(&"-h") | Some(&"--help")) {
        return Ok(Command::CtlHelp);
    }
    let bad = || CliError::usage("tapir ctl: expected SOCKET list|add SPEC|remove ID|info");
    let socket = args.first().ok_or_else(bad)?;
    let action = match words.get(1..).unwrap_or_default() {
        ["list"] => CtlAction::List,
        ["info"] => CtlAction::Info,
        ["conntrack", rest @ ..] => CtlAction::Conntrack(conntrack::parse_conntrack(rest)?),
        ["stats", rest @ ..] => CtlAction::Stats(conntrack::parse_stats(rest)?),
        ["add", spec] => CtlAction::Add((*spec).to_owned()),
        ["policy", rest @ ..] => parse_policy(rest)?,
        ["remove", id] => CtlAction::Remove(
            id.parse()
                .map_err(|_| CliError::usage(format!("tapir ctl: bad forward id {id:?}")))?,
        ),
        _ => return Err(bad()),
    };
    Ok(Command::Ctl {
        socket: PathBuf::from(socket),
        action,
    })
}

/// `policy list`, `policy add RULE [POSITION]` (RULE as one word `deny 10.0.0.0/8` or two
/// `deny 10.0.0.0/8`), `policy remove ID`.
fn parse_policy(words: &[&str]) -> Result<CtlAction, CliError> {
    let bad = || CliError::usage("tapir ctl: expected policy list|add RULE [POSITION]|remove ID");
    let number = |w: &str, what: &str| {
        w.parse::<u64>()
            .map_err(|_| CliError::usage(format!("tapir ctl: bad policy {what} {w:?}")))
    };
    Ok(match words {
        ["list"] => CtlAction::PolicyList,
        ["remove", id] => CtlAction::PolicyRemove(number(id, "id")?),
        ["add", action @ ("allow" | "deny"), rule, pos @ ..] if pos.len() <= 1 => {
            CtlAction::PolicyAdd(
                format!("{action} {rule}"),
                pos.first().map(|p| number(p, "position")).transpose()?,
            )
        }
        ["add", rule, pos @ ..] if pos.len() <= 1 => CtlAction::PolicyAdd(
            (*rule).to_owned(),
            pos.first().map(|p| number(p, "position")).transpose()?,
        ),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Command, CliError> {
        let args: Vec<OsString> = words.iter().map(OsString::from).collect();
        parse_ctl(&args)
    }

    #[test]
    fn actions() {
        let ctl = |action| Command::Ctl {
            socket: PathBuf::from("/s"),
            action,
        };
        assert_eq!(parse_words(&["/s", "list"]), Ok(ctl(CtlAction::List)));
        assert_eq!(parse_words(&["/s", "info"]), Ok(ctl(CtlAction::Info)));
        assert_eq!(
            parse_words(&["/s", "add", "8080:80"]),
            Ok(ctl(CtlAction::Add("8080:80".into())))
        );
        assert_eq!(
            parse_words(&["/s", "remove", "7"]),
            Ok(ctl(CtlAction::Remove(7)))
        );
        assert_eq!(parse_words(&["--help", "x"]), Ok(Command::CtlHelp));
        assert_eq!(parse_words(&["-h"]), Ok(Command::CtlHelp));
    }

    #[test]
    fn policy_actions() {
        let ctl = |action| Command::Ctl {
            socket: PathBuf::from("/s"),
            action,
        };
        assert_eq!(
            parse_words(&["/s", "policy", "list"]),
            Ok(ctl(CtlAction::PolicyList))
        );
        assert_eq!(
            parse_words(&["/s", "policy", "add", "deny 10.0.0.0/8", "0"]),
            Ok(ctl(CtlAction::PolicyAdd("deny 10.0.0.0/8".into(), Some(0))))
        );
        assert_eq!(
            parse_words(&["/s", "policy", "add", "deny", "10.0.0.0/8"]),
            Ok(ctl(CtlAction::PolicyAdd("deny 10.0.0.0/8".into(), None)))
        );
        assert_eq!(
            parse_words(&["/s", "policy", "remove", "4"]),
            Ok(ctl(CtlAction::PolicyRemove(4)))
        );
        assert!(parse_words(&["/s", "policy", "remove", "x"]).is_err());
        assert!(parse_words(&["/s", "policy"]).is_err());
    }

    #[test]
    fn errors_ask_for_usage() {
        let bad = CliError::usage("tapir ctl: expected SOCKET list|add SPEC|remove ID|info");
        for words in [
            &[][..],
            &["/s"],
            &["/s", "add"],
            &["/s", "list", "x"],
            &["/s", "nope"],
        ] {
            assert_eq!(parse_words(words), Err(bad.clone()), "{words:?}");
        }
        assert_eq!(
            parse_words(&["/s", "remove", "x"]),
            Err(CliError::usage("tapir ctl: bad forward id \"x\""))
        );
        assert!(is_ctl(&[OsString::from("tapir"), OsString::from("ctl")]));
        assert!(!is_ctl(&[OsString::from("ctl")]));
        assert!(ctl_usage("t").starts_with("Usage: t ctl SOCKET list\n"));
    }
}
