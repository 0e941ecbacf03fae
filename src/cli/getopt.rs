//! A GNU `getopt_long` scanner, generic over an option table, shared by the front ends.
//!
//! # Theory of operation
//!
//! Both programs tapir stands in for parse argv with glibc's `getopt_long`, and their clients
//! depend on its details (podman greps pasta's `unrecognized option` diagnostic), so this is a
//! reproduction of glibc's behaviour rather than a general argument parser:
//!
//! - short options in clusters (`-c6`), with the argument attached (`-m1500`) or in the next
//!   element (`-m 1500`); a required argument is taken from the next element whatever it looks
//!   like (`-m --` sets the MTU to `--`, which then fails validation);
//! - long options as `--name=value` or `--name value`, and any unambiguous prefix of a name
//!   (`--conf`); an exact name wins over a longer name it is a prefix of (`--outbound-addr`).
//!   As in glibc, several prefix matches are ambiguous only if they differ in argument
//!   requirement or in the option they stand for (two names of one option are not ambiguous),
//!   and the `possibilities` listed are the first match plus those that differ from it, in table
//!   order;
//! - ordering: with `permute` (GNU's default), options may follow operands and operands keep
//!   their relative order; without it (a leading `+` in the optstring) the scan stops at the
//!   first operand and everything from there on is an operand. Either way `--` ends the options
//!   and `-` alone is an operand;
//! - glibc's diagnostics, byte for byte, with argv\[0\] as given (`{argv0}: unrecognized option
//!   '--foo'`, `{argv0}: option '--dis' is ambiguous; possibilities: '--disable-host-loopback'
//!   '--disable-dns'`, `{argv0}: invalid option -- 'x'`, ...), as [`CliError`]s that ask for the
//!   usage text.
//!
//! A [`Table`] may carry tapir's own long options apart from the program's ([`Table::extra`]):
//! those match exactly, or by a prefix that matches none of the program's own names, so adding
//! them never changes how the real program's abbreviations resolve (`--a` stays `--address` in
//! pasta mode even though tapir adds `--api-socket`).
//!
//! The scanner is pull-based ([`Getopt::next_opt`]): the caller acts on each option as it comes,
//! so the first failure wins in argv order, as in the C programs that exit from inside their
//! option loop. Nothing here prints or exits.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::CliError;

/// One `struct option` entry: a long name, whether it takes a (required) argument, and the
/// option it stands for.
#[derive(Debug)]
pub(super) struct LongOpt<O> {
    /// The name without the leading `--`.
    pub name: &'static str,
    /// `required_argument` (true) or `no_argument` (false).
    pub takes_arg: bool,
    /// The option; two entries with equal `opt` and `takes_arg` are two names of one option.
    pub opt: O,
}

/// Shorthand for a [`LongOpt`] in a `const` table.
pub(super) const fn long<O>(name: &'static str, takes_arg: bool, opt: O) -> LongOpt<O> {
    LongOpt {
        name,
        takes_arg,
        opt,
    }
}

/// One character of the optstring (`c` or `c:`).
#[derive(Debug)]
pub(super) struct ShortOpt<O> {
    /// The option character.
    pub c: u8,
    /// Followed by `:` in the optstring.
    pub takes_arg: bool,
    /// The option.
    pub opt: O,
}

/// Shorthand for a [`ShortOpt`] in a `const` table.
pub(super) const fn short<O>(c: u8, takes_arg: bool, opt: O) -> ShortOpt<O> {
    ShortOpt { c, takes_arg, opt }
}

/// An option table: the optstring and the `longopts` of one program.
#[derive(Debug)]
pub(super) struct Table<O: 'static> {
    /// The program's `longopts`, in its order (the order of an ambiguity message).
    pub long: &'static [LongOpt<O>],
    /// tapir's own long options, abbreviated only by prefixes that match nothing in `long`.
    pub extra: &'static [LongOpt<O>],
    /// The optstring's characters.
    pub short: &'static [ShortOpt<O>],
}

impl<O: Copy + PartialEq> Table<O> {
    /// The first long name of `opt`, if it has one (for messages about a short option).
    pub fn long_name(&self, opt: O) -> Option<&'static str> {
        self.long
            .iter()
            .chain(self.extra)
            .find(|l| l.opt == opt)
            .map(|l| l.name)
    }
}

/// How an option was written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spelling {
    /// As a long option; the full name of the entry it resolved to.
    Long(&'static str),
    /// As a short option character.
    Short(u8),
}

/// One option found by the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found<'a, O> {
    /// The option.
    pub opt: O,
    /// Its argument: always present for an option that takes one, never for the others.
    pub arg: Option<&'a OsStr>,
    /// How it was written.
    pub spelling: Spelling,
}

impl<'a, O> Found<'a, O> {
    /// The argument, or the empty string for an option without one.
    pub fn arg(&self) -> &'a OsStr {
        self.arg.unwrap_or_default()
    }
}

/// A GNU `getopt_long` scanner over `args` (argv without argv\[0\]).
pub(super) struct Getopt<'a, O: 'static> {
    argv0: &'a str,
    args: &'a [OsString],
    table: &'static Table<O>,
    /// Index of the next element to examine.
    next: usize,
    /// Inside a short-option cluster: (element index, byte offset of the next option character).
    cluster: Option<(usize, usize)>,
    /// Permute (GNU default) or stop at the first operand (`+` in the optstring).
    permute: bool,
    /// Operands, in order; after the scan, also everything after `--` (or, without
    /// permutation, from the first operand on).
    operands: Vec<&'a OsStr>,
}

impl<'a, O: Copy + PartialEq> Getopt<'a, O> {
    /// A scanner over `args`; diagnostics start with `argv0`.
    pub fn new(
        argv0: &'a str,
        args: &'a [OsString],
        table: &'static Table<O>,
        permute: bool,
    ) -> Self {
        Getopt {
            argv0,
            args,
            table,
            next: 0,
            cluster: None,
            permute,
            operands: Vec::new(),
        }
    }

    /// The operands seen so far; all of them once [`Getopt::next_opt`] has returned `None`.
    pub fn into_operands(self) -> Vec<&'a OsStr> {
        self.operands
    }

    /// Move every element from `from` on into the operands and end the scan.
    fn finish(&mut self, from: usize) {
        self.operands
            .extend(self.args[from..].iter().map(OsString::as_os_str));
        self.next = self.args.len();
    }

    /// The next option and its argument, `None` at the end of the options.
    pub fn next_opt(&mut self) -> Result<Option<Found<'a, O>>, CliError> {
        if let Some((index, offset)) = self.cluster.take() {
            return self.short(index, offset).map(Some);
        }
        let args = self.args;
        while let Some(arg) = args.get(self.next) {
            let bytes = arg.as_bytes();
            if bytes == b"--" {
                self.finish(self.next + 1);
                return Ok(None);
            }
            if bytes.len() < 2 || bytes[0] != b'-' {
                if !self.permute {
                    self.finish(self.next);
                    return Ok(None);
                }
                self.operands.push(arg);
                self.next += 1;
                continue;
            }
            self.next += 1;
            return if bytes[1] == b'-' {
                self.long(&bytes[2..]).map(Some)
            } else {
                self.short(self.next - 1, 1).map(Some)
            };
        }
        Ok(None)
    }

    /// The option character at `args[index][offset]`.
    fn short(&mut self, index: usize, offset: usize) -> Result<Found<'a, O>, CliError> {
        let args = self.args;
        let bytes = args[index].as_bytes();
        let c = bytes[offset];
        let rest = &bytes[offset + 1..];
        let Some(entry) = self.table.short.iter().find(|s| s.c == c) else {
            let shown = String::from_utf8_lossy(&[c]).into_owned();
            return Err(CliError::usage(format!(
                "{}: invalid option -- '{shown}'",
                self.argv0
            )));
        };
        let found = |arg| Found {
            opt: entry.opt,
            arg,
            spelling: Spelling::Short(c),
        };
        if !entry.takes_arg {
            if !rest.is_empty() {
                self.cluster = Some((index, offset + 1));
            }
            return Ok(found(None));
        }
        if !rest.is_empty() {
            return Ok(found(Some(OsStr::from_bytes(rest))));
        }
        match args.get(self.next) {
            Some(value) => {
                self.next += 1;
                Ok(found(Some(value.as_os_str())))
            }
            None => Err(CliError::usage(format!(
                "{}: option requires an argument -- '{}'",
                self.argv0,
                char::from(c)
            ))),
        }
    }

    /// The entry `name` (without `--` and `=value`) resolves to; `shown` is the element without
    /// its leading `--`, for diagnostics.
    fn lookup(&self, name: &[u8], shown: &str) -> Result<&'static LongOpt<O>, CliError> {
        let table = self.table;
        if let Some(exact) = table
            .long
            .iter()
            .chain(table.extra)
            .find(|o| o.name.as_bytes() == name)
        {
            return Ok(exact);
        }
        let prefixed = |list: &'static [LongOpt<O>]| -> Vec<&'static LongOpt<O>> {
            list.iter()
                .filter(|o| o.name.as_bytes().starts_with(name))
                .collect()
        };
        let mut candidates = prefixed(table.long);
        if candidates.is_empty() {
            candidates = prefixed(table.extra);
        }
        let Some((&first, rest)) = candidates.split_first() else {
            return Err(CliError::usage(format!(
                "{}: unrecognized option '--{shown}'",
                self.argv0
            )));
        };
        let differing: Vec<&LongOpt<O>> = rest
            .iter()
            .copied()
            .filter(|o| o.takes_arg != first.takes_arg || o.opt != first.opt)
            .collect();
        if differing.is_empty() {
            return Ok(first);
        }
        let possibilities: String = std::iter::once(first)
            .chain(differing)
            .map(|o| format!(" '--{}'", o.name))
            .collect();
        Err(CliError::usage(format!(
            "{}: option '--{shown}' is ambiguous; possibilities:{possibilities}",
            self.argv0
        )))
    }

    /// A long option; `body` is the element without its leading `--`.
    fn long(&mut self, body: &'a [u8]) -> Result<Found<'a, O>, CliError> {
        let (name, value) = match body.iter().position(|&b| b == b'=') {
            Some(eq) => (&body[..eq], Some(OsStr::from_bytes(&body[eq + 1..]))),
            None => (body, None),
        };
        let entry = self.lookup(name, &String::from_utf8_lossy(body))?;
        let found = |arg| Found {
            opt: entry.opt,
            arg,
            spelling: Spelling::Long(entry.name),
        };
        match (entry.takes_arg, value) {
            (false, Some(_)) => Err(CliError::usage(format!(
                "{}: option '--{}' doesn't allow an argument",
                self.argv0, entry.name
            ))),
            (false, None) => Ok(found(None)),
            (true, Some(v)) => Ok(found(Some(v))),
            (true, None) => match self.args.get(self.next) {
                Some(v) => {
                    self.next += 1;
                    Ok(found(Some(v.as_os_str())))
                }
                None => Err(CliError::usage(format!(
                    "{}: option '--{}' requires an argument",
                    self.argv0, entry.name
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine on a small table of its own; its behaviour through the real tables is tested
    //! in `slirp4netns` and `pasta`.

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum T {
        Alpha,
        Beta,
        Bet,
        Gamma,
        Extra,
    }

    static TABLE: Table<T> = Table {
        long: &[
            long("alpha", false, T::Alpha),
            long("alphabet", false, T::Alpha),
            long("beta", true, T::Beta),
            long("bet", false, T::Bet),
            long("gamma", true, T::Gamma),
            long("gamma-ray", true, T::Gamma),
            long("gamma-x", false, T::Gamma),
        ],
        extra: &[long("alpine", false, T::Extra)],
        short: &[short(b'a', false, T::Alpha), short(b'b', true, T::Beta)],
    };

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// Options with their arguments, and operands.
    type Scanned = (Vec<(T, Option<String>)>, Vec<String>);

    /// Scan everything: the options and the operands, or the first error.
    fn scan(v: &[&str], permute: bool) -> Result<Scanned, String> {
        let a = args(v);
        let mut g = Getopt::new("prog", &a, &TABLE, permute);
        let mut opts = Vec::new();
        loop {
            match g.next_opt() {
                Ok(Some(f)) => opts.push((f.opt, f.arg.map(|a| a.to_string_lossy().into()))),
                Ok(None) => break,
                Err(e) => {
                    assert!(e.show_usage);
                    return Err(e.message);
                }
            }
        }
        let operands = g
            .into_operands()
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect();
        Ok((opts, operands))
    }

    #[test]
    fn names_of_one_option_are_not_ambiguous() {
        // "alph" matches alpha and alphabet, both T::Alpha without argument: the first wins.
        assert_eq!(scan(&["--alph"], true).unwrap().0, vec![(T::Alpha, None)]);
        // gamma / gamma-ray share T::Gamma with an argument, gamma-x differs (no argument).
        assert_eq!(
            scan(&["--gam", "x"], true).unwrap_err(),
            "prog: option '--gam' is ambiguous; possibilities: '--gamma' '--gamma-x'"
        );
        assert_eq!(
            scan(&["--gamma-r=1"], true).unwrap().0,
            vec![(T::Gamma, Some("1".into()))]
        );
    }

    #[test]
    fn exact_names_win() {
        assert_eq!(scan(&["--bet"], true).unwrap().0, vec![(T::Bet, None)]);
        assert_eq!(
            scan(&["--be"], true).unwrap_err(),
            "prog: option '--be' is ambiguous; possibilities: '--beta' '--bet'"
        );
    }

    #[test]
    fn extras_only_when_the_program_has_no_match() {
        // "alp" is a prefix of alpha/alphabet (program) and alpine (extra): the program wins.
        assert_eq!(scan(&["--alp"], true).unwrap().0, vec![(T::Alpha, None)]);
        assert_eq!(scan(&["--alpi"], true).unwrap().0, vec![(T::Extra, None)]);
        assert_eq!(scan(&["--alpine"], true).unwrap().0, vec![(T::Extra, None)]);
        assert_eq!(
            scan(&["--alpinex"], true).unwrap_err(),
            "prog: unrecognized option '--alpinex'"
        );
    }

    #[test]
    fn ordering() {
        let (opts, ops) = scan(&["x", "-a", "y", "-bz"], true).unwrap();
        assert_eq!(opts, vec![(T::Alpha, None), (T::Beta, Some("z".into()))]);
        assert_eq!(ops, vec!["x", "y"]);
        let (opts, ops) = scan(&["-a", "x", "-a", "--", "-b"], false).unwrap();
        assert_eq!(opts, vec![(T::Alpha, None)]);
        assert_eq!(ops, vec!["x", "-a", "--", "-b"]);
        let (_, ops) = scan(&["-a", "--", "-b"], false).unwrap();
        assert_eq!(ops, vec!["-b"]);
        let (_, ops) = scan(&["-", "-a"], false).unwrap();
        assert_eq!(ops, vec!["-", "-a"]);
    }

    #[test]
    fn spelling_and_long_name() {
        let a = args(&["-ab", "v", "--alphab", "--beta=w"]);
        let mut g = Getopt::new("prog", &a, &TABLE, true);
        let mut spellings = Vec::new();
        while let Some(f) = g.next_opt().unwrap() {
            spellings.push(f.spelling);
        }
        assert_eq!(
            spellings,
            vec![
                Spelling::Short(b'a'),
                Spelling::Short(b'b'),
                Spelling::Long("alphabet"),
                Spelling::Long("beta"),
            ]
        );
        assert_eq!(TABLE.long_name(T::Gamma), Some("gamma"));
        assert_eq!(TABLE.long_name(T::Extra), Some("alpine"));
    }
}
