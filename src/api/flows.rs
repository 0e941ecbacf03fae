//! The conntrack view: flow filters, flow records and flow events as the API renders them.
//!
//! # Theory of operation
//!
//! `list_flows` and `watch_flows` take the same optional arguments, parsed by
//! [`parse_filter`] into a [`Filter`]:
//!
//! - `proto`: `tcp`, `udp` or `icmp`;
//! - `addr`: an IP address that any endpoint of the flow has (guest, remote, host-side target,
//!   host-side local);
//! - `dst`: an IP address the flow goes to (remote as the guest addressed it, or the host-side
//!   target);
//! - `state`: `connecting`, `open` (alias `established`), `half-closed`, `active`.
//!
//! A flow is rendered by [`render_flow`] (one JSON object), an event by [`render_event`] (one
//! line: the object plus `"event"`, and `"reason"` for `closed`). `list_flows` returns at
//! most [`MAX_LIST_FLOWS`] flows, which is every flow the table can hold. Pure: no I/O.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::proto::ApiError;
use crate::nat::journal::Event;
use crate::nat::{
    Entry, FlowId, Proto, State, Table, MAX_ICMP_FLOWS, MAX_TCP_FLOWS, MAX_UDP_FLOWS,
};

/// Flows `list_flows` returns at most: the table's whole capacity, so the reply is complete
/// yet bounded (about 350 bytes a flow, under 2 MiB).
pub const MAX_LIST_FLOWS: usize = MAX_TCP_FLOWS + MAX_UDP_FLOWS + MAX_ICMP_FLOWS;

/// Which flows a request wants. Empty: all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this protocol.
    pub proto: Option<Proto>,
    /// Only flows with an endpoint at this address.
    pub addr: Option<IpAddr>,
    /// Only flows going to this address.
    pub dst: Option<IpAddr>,
    /// Only flows in this state.
    pub state: Option<State>,
}

/// A protocol by name.
pub fn parse_proto(s: &str) -> Option<Proto> {
    match s {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        "icmp" => Some(Proto::Icmp),
        _ => None,
    }
}

/// A state by name (`established` is `open`, `half_closed` is `half-closed`).
pub fn parse_state(s: &str) -> Option<State> {
    match s {
        "connecting" => Some(State::Connecting),
        "open" | "established" => Some(State::Open),
        "half-closed" | "half_closed" => Some(State::HalfClosed),
        "active" => Some(State::Active),
        _ => None,
    }
}

fn field<T>(
    args: &Map<String, Value>,
    name: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(s).map(Some).ok_or(ApiError::BadFilter(name)),
        Some(_) => Err(ApiError::BadFilter(name)),
    }
}

/// The filter in a request's `arguments`. Unknown fields are ignored, as elsewhere in the API.
pub fn parse_filter(args: &Map<String, Value>) -> Result<Filter, ApiError> {
    Ok(Filter {
        proto: field(args, "proto", parse_proto)?,
        addr: field(args, "addr", |s| s.parse().ok())?,
        dst: field(args, "dst", |s| s.parse().ok())?,
        state: field(args, "state", parse_state)?,
    })
}

fn same(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

impl Filter {
    /// Whether flow `e` passes.
    pub fn matches(&self, e: &Entry) -> bool {
        if self.proto.is_some_and(|p| p != e.key.proto) || self.state.is_some_and(|s| s != e.state)
        {
            return false;
        }
        if let Some(a) = self.addr {
            let mut ends = [
                Some(e.key.guest),
                Some(e.key.remote),
                Some(e.target),
                e.host_local,
            ]
            .into_iter()
            .flatten();
            if !ends.any(|s| same(s.ip(), a)) {
                return false;
            }
        }
        if let Some(d) = self.dst {
            if !same(e.key.remote.ip(), d) && !same(e.target.ip(), d) {
                return false;
            }
        }
        true
    }
}

/// One flow as the API shows it.
pub fn render_flow(id: FlowId, e: &Entry, now_ms: u64) -> Map<String, Value> {
    let v = json!({
        "id": id,
        "proto": e.key.proto.name(),
        "state": e.state.name(),
        "guest": e.key.guest.to_string(),
        "remote": e.key.remote.to_string(),
        "target": e.target.to_string(),
        "host_local": e.host_local.map(|a| a.to_string()),
        "bytes_out": e.bytes_out,
        "bytes_in": e.bytes_in,
        "packets_out": e.packets_out,
        "packets_in": e.packets_in,
        "age_ms": now_ms.saturating_sub(e.created_ms),
        "idle_ms": now_ms.saturating_sub(e.active_ms),
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The `list_flows` reply: `{"return":{"flows":[...],"count":N}}`, flows in table order,
/// at most [`MAX_LIST_FLOWS`].
pub fn render_list(table: &Table, filter: &Filter, now_ms: u64) -> String {
    let flows: Vec<Value> = table
        .iter()
        .filter(|(_, e)| filter.matches(e))
        .take(MAX_LIST_FLOWS)
        .map(|(id, e)| Value::Object(render_flow(id, e, now_ms)))
        .collect();
    let n = flows.len();
    json!({"return": {"flows": flows, "count": n}}).to_string()
}

/// One event line (with its `\n`) for a watcher with `filter`, or `None` if the flow does not
/// pass.
pub fn render_event(ev: &Event, filter: &Filter, now_ms: u64) -> Option<String> {
    let (kind, id, e, reason) = match ev {
        Event::New(id, e) => ("new", *id, e, None),
        Event::Closed(id, e, r) => ("closed", *id, e, Some(r)),
    };
    if !filter.matches(e) {
        return None;
    }
    let mut m = Map::new();
    m.insert("event".into(), json!(kind));
    m.extend(render_flow(id, e, now_ms));
    if let Some(r) = reason {
        m.insert("reason".into(), json!(r.name()));
        if let crate::nat::journal::CloseReason::Policy { rule } = r {
            // The rule that closed it (null: the policy's default).
            m.insert("rule".into(), json!(rule));
        }
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    Some(s)
}

/// The line telling watchers that `n` events were lost (the journal overflowed).
pub fn render_lost(n: u64) -> String {
    format!("{{\"event\":\"lost\",\"count\":{n}}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::journal::CloseReason;
    use crate::nat::Key;

    fn tcp() -> Entry {
        Entry {
            key: Key::tcp(
                "10.0.2.100:40000".parse().unwrap(),
                "198.51.100.7:80".parse().unwrap(),
            ),
            target: "198.51.100.7:80".parse().unwrap(),
            host_local: Some("192.0.2.5:51000".parse().unwrap()),
            state: State::Open,
            bytes_out: 10,
            bytes_in: 20,
            packets_out: 1,
            packets_in: 2,
            created_ms: 100,
            active_ms: 150,
        }
    }

    fn args(s: &str) -> Map<String, Value> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn filters_parse() {
        assert_eq!(parse_filter(&args("{}")), Ok(Filter::default()));
        let f = parse_filter(&args(
            r#"{"proto":"tcp","addr":"10.0.2.100","dst":"::1","state":"established","x":1}"#,
        ))
        .unwrap();
        assert_eq!(f.proto, Some(Proto::Tcp));
        assert_eq!(f.state, Some(State::Open));
        assert_eq!(f.dst, Some("::1".parse().unwrap()));
        assert_eq!(
            parse_filter(&args(r#"{"proto":"sctp"}"#)),
            Err(ApiError::BadFilter("proto"))
        );
        assert_eq!(
            parse_filter(&args(r#"{"addr":5}"#)),
            Err(ApiError::BadFilter("addr"))
        );
        assert_eq!(
            parse_filter(&args(r#"{"state":"gone"}"#)),
            Err(ApiError::BadFilter("state"))
        );
        assert_eq!(
            parse_filter(&args(r#"{"proto":null}"#)),
            Ok(Filter::default())
        );
    }

    #[test]
    fn filters_match() {
        let e = tcp();
        let f = |s: &str| parse_filter(&args(s)).unwrap();
        assert!(f("{}").matches(&e));
        assert!(f(r#"{"proto":"tcp"}"#).matches(&e));
        assert!(!f(r#"{"proto":"udp"}"#).matches(&e));
        assert!(f(r#"{"addr":"10.0.2.100"}"#).matches(&e));
        assert!(f(r#"{"addr":"192.0.2.5"}"#).matches(&e));
        assert!(f(r#"{"addr":"::ffff:198.51.100.7"}"#).matches(&e));
        assert!(!f(r#"{"addr":"10.0.2.101"}"#).matches(&e));
        assert!(f(r#"{"dst":"198.51.100.7"}"#).matches(&e));
        assert!(!f(r#"{"dst":"10.0.2.100"}"#).matches(&e));
        assert!(f(r#"{"state":"open"}"#).matches(&e));
        assert!(!f(r#"{"state":"connecting"}"#).matches(&e));
    }

    #[test]
    fn records_and_events() {
        let e = tcp();
        let m = render_flow(3, &e, 400);
        assert_eq!(m["age_ms"], 300);
        assert_eq!(m["idle_ms"], 250);
        assert_eq!(m["packets_in"], 2);
        assert_eq!(m["host_local"], "192.0.2.5:51000");
        let line = render_event(&Event::New(3, e.clone()), &Filter::default(), 100).unwrap();
        assert!(line.contains(r#""event":"new""#), "{line}");
        assert!(line.contains(r#""id":3,"#), "{line}");
        assert!(line.ends_with("}\n"));
        let closed = Event::Closed(3, e, CloseReason::Done);
        let v: Value = serde_json::from_str(
            render_event(&closed, &Filter::default(), 100)
                .unwrap()
                .trim_end(),
        )
        .unwrap();
        assert_eq!(v["event"], "closed");
        assert_eq!(v["reason"], "done");
        let udp_only = Filter {
            proto: Some(Proto::Udp),
            ..Filter::default()
        };
        assert_eq!(render_event(&closed, &udp_only, 100), None);
        assert_eq!(render_lost(4), "{\"event\":\"lost\",\"count\":4}\n");
    }

    #[test]
    fn list_reply() {
        let mut t = Table::new();
        t.insert(tcp()).unwrap();
        let v: Value = serde_json::from_str(&render_list(&t, &Filter::default(), 200)).unwrap();
        assert_eq!(v["return"]["count"], 1);
        assert_eq!(v["return"]["flows"][0]["proto"], "tcp");
        let none = Filter {
            proto: Some(Proto::Icmp),
            ..Filter::default()
        };
        let v: Value = serde_json::from_str(&render_list(&t, &none, 200)).unwrap();
        assert_eq!(v["return"]["count"], 0);
    }
}
