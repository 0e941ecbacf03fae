//! The egress-policy requests of the API (tapir extensions): `add_policy`, `list_policy`,
//! `remove_policy`.
//!
//! # Theory of operation
//!
//! Parsing follows the rest of the API ([`super::proto`]): fields are looked up in
//! `arguments`, unknown fields are ignored, and every error is an [`ApiError`] whose text is
//! spelled like slirp4netns's (`bad request: add_policy: bad arguments.rule: ...`).
//!
//! - `add_policy`: `rule` is `allow RULE` or `deny RULE` ([`crate::policy::Rule::parse_line`]);
//!   `position` (optional, a whole number from 0) is where it goes in evaluation order,
//!   default the end; replies `{"return":{"id":N}}`.
//! - `list_policy`: replies `{"return":{"default":"allow","denied":N,"rules":[{"id":..,
//!   "position":..,"rule":".."}]}}`, rules in evaluation order.
//! - `remove_policy`: `id` as `list_policy` gives it; replies `{"return":{}}`.
//!
//! `add_policy` and `remove_policy` take `kill_matching` (optional boolean): when true, the
//! open outbound flows the changed policy denies are closed; otherwise open flows go on and
//! only new flows (and later UDP datagrams) see the change. This module does no I/O.

use serde_json::{json, Map, Value};

use super::proto::{ApiError, Request};
use crate::policy::{Policy, Rule};

/// `add_policy`'s arguments.
pub(super) fn parse_add(args: &Map<String, Value>) -> Result<Request, ApiError> {
    let text = args
        .get("rule")
        .and_then(Value::as_str)
        .ok_or(ApiError::BadRule(crate::policy::RuleError::Empty))?;
    let rule = Rule::parse_line(text).map_err(ApiError::BadRule)?;
    let position = match args.get("position") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| usize::try_from(p).ok())
                .ok_or(ApiError::BadPosition)?,
        ),
    };
    Ok(Request::AddPolicy {
        rule,
        position,
        kill_matching: kill(args, ApiError::AddPolicyBadKill)?,
    })
}

/// `remove_policy`'s arguments.
pub(super) fn parse_remove(args: &Map<String, Value>) -> Result<Request, ApiError> {
    let id = args
        .get("id")
        .and_then(Value::as_u64)
        .ok_or(ApiError::RemovePolicyBadId)?;
    Ok(Request::RemovePolicy {
        id,
        kill_matching: kill(args, ApiError::RemovePolicyBadKill)?,
    })
}

fn kill(args: &Map<String, Value>, bad: ApiError) -> Result<bool, ApiError> {
    match args.get("kill_matching") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad),
    }
}

/// The `list_policy` reply's value.
pub fn list(p: &Policy) -> Value {
    let rules: Vec<Value> = p
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"id": e.id, "position": i, "rule": e.rule.to_string()}))
        .collect();
    json!({
        "default": p.default_action().name(),
        "denied": p.denied(),
        "rules": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::super::proto::parse_request;
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(s: &str) -> Result<Request, ApiError> {
        parse_request(s.as_bytes(), Ipv4Addr::new(10, 0, 2, 100))
    }

    #[test]
    fn requests() {
        let r = parse(
            r#"{"execute":"add_policy","arguments":{"rule":"deny 10.0.0.0/8:22/tcp","position":0,"extra":1}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::AddPolicy {
                rule: Rule::parse_line("deny 10.0.0.0/8:22/tcp").unwrap(),
                position: Some(0),
                kill_matching: false
            }
        );
        let r = parse(
            r#"{"execute":"add_policy","arguments":{"rule":"allow ::/0","kill_matching":true}}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::AddPolicy {
                position: None,
                kill_matching: true,
                ..
            }
        ));
        assert_eq!(
            parse(r#"{"execute":"list_policy"}"#),
            Ok(Request::ListPolicy)
        );
        assert_eq!(
            parse(r#"{"execute":"remove_policy","arguments":{"id":3}}"#),
            Ok(Request::RemovePolicy {
                id: 3,
                kill_matching: false
            })
        );
    }

    #[test]
    fn errors() {
        use crate::policy::RuleError;
        assert_eq!(
            parse(r#"{"execute":"add_policy","arguments":{"rule":"deny example.com"}}"#),
            Err(ApiError::BadRule(RuleError::HostName))
        );
        assert_eq!(
            parse(r#"{"execute":"add_policy"}"#),
            Err(ApiError::BadRule(RuleError::Empty))
        );
        assert_eq!(
            parse(r#"{"execute":"add_policy","arguments":{"rule":"deny 1.2.3.4","position":-1}}"#),
            Err(ApiError::BadPosition)
        );
        assert_eq!(
            parse(
                r#"{"execute":"add_policy","arguments":{"rule":"deny 1.2.3.4","kill_matching":"yes"}}"#
            ),
            Err(ApiError::AddPolicyBadKill)
        );
        assert_eq!(
            parse(r#"{"execute":"remove_policy","arguments":{"id":"x"}}"#),
            Err(ApiError::RemovePolicyBadId)
        );
        assert!(ApiError::BadRule(RuleError::BadPort)
            .to_string()
            .starts_with("bad request: add_policy: bad arguments.rule: bad port"));
    }

    #[test]
    fn list_reply() {
        let mut p = Policy::default();
        p.insert(Rule::parse_line("deny 10.0.0.0/8").unwrap(), None)
            .unwrap();
        p.insert(
            Rule::parse_line("allow 10.1.0.0/16:443/tcp").unwrap(),
            Some(0),
        )
        .unwrap();
        let v = list(&p);
        assert_eq!(v["default"], "allow");
        assert_eq!(v["rules"][0]["rule"], "allow 10.1.0.0/16:443/tcp");
        assert_eq!(v["rules"][0]["id"], 2);
        assert_eq!(v["rules"][1]["position"], 1);
    }
}
