//! The egress-policy options, shared by the slirp4netns front end and `tapir run` (and pasta
//! mode): `--allow=RULE`, `--deny=RULE`, `--policy-file=PATH`, `--deny-private`,
//! `--default-deny`, `--deny-icmp-reply`, `--no-user-policy`.
//!
//! # Theory of operation
//!
//! Each option appends to (or flags) a [`policy::Spec`] in command-line order, which is the
//! order rules are evaluated in. Rule text is parsed by [`crate::policy`]; the policy file is
//! read here, at parse time (like slirp4netns's existence check of `--userns-path`), at most
//! [`policy::MAX_FILE_BYTES`], so that an error names `file:line` before anything starts.
//! The per-user policy file is not read here: finding it takes the environment, which the
//! parsers do not touch; `app` reads it unless `--no-user-policy` set
//! [`Spec::no_user_policy`].

use std::ffi::OsStr;

use super::{utf8, CliError};
use crate::policy::{self, Action, Item, Rule, Spec};

/// One of the policy options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PolicyOpt {
    /// `--allow=RULE`.
    Allow,
    /// `--deny=RULE`.
    Deny,
    /// `--policy-file=PATH`.
    File,
    /// `--deny-private`.
    DenyPrivate,
    /// `--default-deny`.
    DefaultDeny,
    /// `--deny-icmp-reply`.
    DenyIcmpReply,
    /// `--no-user-policy`.
    NoUserPolicy,
}

/// Apply one policy option (`arg` is its value, for those that take one).
pub(super) fn apply(spec: &mut Spec, opt: PolicyOpt, arg: &OsStr) -> Result<(), CliError> {
    let value = |name: &str| -> Result<String, CliError> { utf8(arg, name) };
    match opt {
        PolicyOpt::Allow | PolicyOpt::Deny => {
            let (action, name) = if opt == PolicyOpt::Allow {
                (Action::Allow, "--allow")
            } else {
                (Action::Deny, "--deny")
            };
            let text = value(name)?;
            let rule = Rule::parse(action, &text)
                .map_err(|e| CliError::usage(format!("{name}={text}: {e}")))?;
            push(spec, Item::Rule(rule))?;
        }
        PolicyOpt::File => {
            let path = value("--policy-file")?;
            for rule in read_file(&path)? {
                push(spec, Item::Rule(rule))?;
            }
        }
        PolicyOpt::DenyPrivate => push(spec, Item::DenyPrivate)?,
        PolicyOpt::DefaultDeny => spec.default_deny = true,
        PolicyOpt::DenyIcmpReply => spec.deny_icmp_reply = true,
        PolicyOpt::NoUserPolicy => spec.no_user_policy = true,
    }
    Ok(())
}

fn push(spec: &mut Spec, item: Item) -> Result<(), CliError> {
    if spec.items.len() >= policy::MAX_RULES {
        return Err(CliError::plain(format!(
            "egress policy: more than {} rules",
            policy::MAX_RULES
        )));
    }
    spec.items.push(item);
    Ok(())
}

fn read_file(path: &str) -> Result<Vec<Rule>, CliError> {
    policy::read_file(std::path::Path::new(path), false)
        .map(Option::unwrap_or_default)
        .map_err(|e| CliError::plain(format!("--policy-file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_build_the_spec_in_order() {
        let mut s = Spec::default();
        apply(&mut s, PolicyOpt::Allow, OsStr::new("10.0.0.0/8:443/tcp")).unwrap();
        apply(&mut s, PolicyOpt::DenyPrivate, OsStr::new("")).unwrap();
        apply(&mut s, PolicyOpt::Deny, OsStr::new("0.0.0.0/0:25")).unwrap();
        apply(&mut s, PolicyOpt::DefaultDeny, OsStr::new("")).unwrap();
        apply(&mut s, PolicyOpt::DenyIcmpReply, OsStr::new("")).unwrap();
        assert!(!s.no_user_policy);
        apply(&mut s, PolicyOpt::NoUserPolicy, OsStr::new("")).unwrap();
        assert!(s.no_user_policy);
        assert_eq!(s.items.len(), 3);
        assert_eq!(s.items[1], Item::DenyPrivate);
        assert!(s.default_deny && s.deny_icmp_reply);
        let e = apply(&mut s, PolicyOpt::Deny, OsStr::new("example.com")).unwrap_err();
        assert!(
            e.to_string().starts_with("--deny=example.com: host names"),
            "{e}"
        );
    }

    #[test]
    fn file_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("tapir-policy-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p");
        std::fs::write(&p, "# x\nallow 1.2.3.4\ndeny 10.0.0.0/8:99999\n").unwrap();
        let mut s = Spec::default();
        let e = apply(&mut s, PolicyOpt::File, p.as_os_str()).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("{}:3: bad port", p.display())),
            "{e}"
        );
        std::fs::write(&p, "allow 1.2.3.4\n\ndeny 10.0.0.0/8:22\n").unwrap();
        apply(&mut s, PolicyOpt::File, p.as_os_str()).unwrap();
        assert_eq!(s.items.len(), 2);
        let missing = dir.join("missing");
        assert!(apply(&mut s, PolicyOpt::File, missing.as_os_str()).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
