//! The API socket protocol: request parsing and response rendering, byte-compatible with
//! slirp4netns (`api.c`).
//!
//! # Theory of operation
//!
//! The server (the caller) accepts a connection, reads one request of fewer than
//! [`MAX_REQUEST`] bytes, hands the bytes to [`parse_request`], performs the [`Request`] on the
//! forward table, writes exactly one string produced by a `render_*` function (compact JSON, no
//! trailing newline) and closes the connection. This module does no I/O and keeps no state.
//!
//! Parsing follows what slirp4netns does with parson, as seen by a client:
//!
//! 1. The bytes are a C string: anything from the first NUL on is ignored; a UTF-8 BOM and
//!    leading whitespace are skipped.
//! 2. The first JSON value is parsed; whatever follows it is ignored (a trailing `\n` from
//!    podman or rootlesskit's `json.Encoder`, or even a second object). Nothing, invalid JSON,
//!    or an object with a duplicated key (parson refuses those) is `cannot parse JSON`.
//! 3. The value must be an object (`json_object() failed`) with a string `execute`
//!    (`no execute found`) naming a known command (`unknown execute`).
//! 4. `arguments` is looked up per field; if it is missing or not an object every field is
//!    missing. Unknown fields are ignored (slirp4netns ignores them).
//!
//! `add_hostfwd` validates in slirp4netns's order: `proto`, `host_addr`, `host_port`,
//! `guest_addr`, `guest_port`, and reports the first bad one. Deliberate differences, all of
//! them turning something slirp4netns mishandles into its own error message:
//!
//! - a missing or non-string `proto` is `bad arguments.proto` (slirp4netns dereferences NULL);
//! - a port is a JSON number truncated toward zero as slirp4netns's `(int)` cast does
//!   (`23508.9` is 23508), but must then lie in 1..=65535 (slirp4netns accepts 70000 and binds
//!   70000 & 0xffff);
//! - an address that is present but neither a string nor `null` is bad (slirp4netns silently
//!   takes the default);
//! - a `remove_hostfwd` id must be a number that truncates to at least 1;
//! - `host_addr` and `guest_addr` may be IPv6 (slirp4netns refuses them: slirp4netns #253,
//!   podman #13229); a missing guest address is still N+100, also for an IPv6 host address,
//!   and `::` is the guest's learned IPv6 address (the server checks the IPv6 ones against its
//!   network: [`crate::config::forward::check_guest`]).
//!
//! `get_info`, `get_stats`, `list_flows` and `watch_flows` are tapir extensions; the caller
//! supplies counters and flows, and `super::flows` parses the flow filters.
//! Errors that only the forward table can detect (an id that does not exist, a failed bind)
//! are [`ApiError`] variants too, so every reply string is spelled in this one place.

use std::net::{IpAddr, Ipv4Addr};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::config::forward::{ForwardSpec, Proto};

/// Size of slirp4netns's request buffer. It does a single `read()` of at most this many bytes
/// and rejects a request that fills the buffer (`too large message`), so a request must be
/// shorter than this; the bound also caps what one connection can make the server hold.
pub const MAX_REQUEST: usize = 4096;

/// A parsed, validated API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `add_hostfwd`: open a host listener and relay it to the guest.
    AddHostfwd(ForwardSpec),
    /// `list_hostfwd`: list the active forwards.
    ListHostfwd,
    /// `remove_hostfwd`: close the forward with this id.
    RemoveHostfwd(u64),
    /// `get_info` (tapir extension): report counters.
    GetInfo,
    /// `list_flows` (tapir extension): the flow table, filtered ([`super::flows`]).
    ListFlows(super::flows::Filter),
    /// `watch_flows` (tapir extension): stream new and closed flows, filtered.
    WatchFlows(super::flows::Filter),
    /// `get_stats` (tapir extension): the statistics ([`crate::stats::Stats`]).
    GetStats,
    /// `add_policy` (tapir extension, [`super::policy`]): insert an egress rule.
    AddPolicy {
        /// The rule.
        rule: crate::policy::Rule,
        /// Where in evaluation order (`None`: last).
        position: Option<usize>,
        /// Close open flows the changed policy denies.
        kill_matching: bool,
    },
    /// `list_policy` (tapir extension): the egress rules.
    ListPolicy,
    /// `remove_policy` (tapir extension): remove an egress rule by id.
    RemovePolicy {
        /// The rule's id.
        id: u64,
        /// Close open flows the changed policy denies.
        kill_matching: bool,
    },
}

/// Everything that makes the API answer with an error. `Display` is slirp4netns's `desc` string,
/// byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request filled the whole [`MAX_REQUEST`] buffer.
    #[error("bad request: too large message")]
    TooLarge,
    /// Empty request or invalid JSON.
    #[error("bad request: cannot parse JSON")]
    CannotParse,
    /// The top-level JSON value is not an object.
    #[error("bad request: json_object() failed")]
    NotObject,
    /// `execute` is missing or not a string.
    #[error("bad request: no execute found")]
    NoExecute,
    /// `execute` names no known command.
    #[error("bad request: unknown execute")]
    UnknownExecute,
    /// `add_hostfwd`: `proto` is not exactly `"tcp"` or `"udp"`.
    #[error("bad request: add_hostfwd: bad arguments.proto")]
    BadProto,
    /// `add_hostfwd`: `host_addr` is not an IPv4 or IPv6 address.
    #[error("bad request: add_hostfwd: bad arguments.host_addr")]
    BadHostAddr,
    /// `add_hostfwd`: `host_port` is not a number in 1..=65535.
    #[error("bad request: add_hostfwd: bad arguments.host_port")]
    BadHostPort,
    /// `add_hostfwd`: `guest_addr` is not an IPv4 or IPv6 address, or not usable.
    #[error("bad request: add_hostfwd: bad arguments.guest_addr")]
    BadGuestAddr,
    /// `add_hostfwd`: `guest_port` is not a number in 1..=65535.
    #[error("bad request: add_hostfwd: bad arguments.guest_port")]
    BadGuestPort,
    /// `add_hostfwd`: the forward could not be set up (duplicate, bind or listen failed).
    #[error("bad request: add_hostfwd: slirp_add_hostfwd failed")]
    AddFailed,
    /// `remove_hostfwd`: `id` is missing, not a number, or names no forward.
    #[error("bad request: remove_hostfwd: bad arguments.id")]
    RemoveBadId,
    /// `remove_hostfwd`: the forward exists but could not be torn down.
    #[error("bad request: remove_hostfwd: slirp_remove_hostfwd failed")]
    RemoveFailed,
    /// `list_flows`/`watch_flows`: a filter argument is not a string of the right kind.
    #[error("bad request: flows: bad arguments.{0}")]
    BadFilter(&'static str),
    /// `list_flows`/`watch_flows`: the server holds too much unsent output, or has
    /// [`super::MAX_WATCHERS`] watchers already; try again later.
    #[error("bad request: flows: too busy")]
    Busy,
    /// `add_policy`: `rule` is missing or not a rule.
    #[error("bad request: add_policy: bad arguments.rule: {0}")]
    BadRule(crate::policy::RuleError),
    /// `add_policy`: `position` is not a whole number, or past the end.
    #[error("bad request: add_policy: bad arguments.position")]
    BadPosition,
    /// `add_policy`: the policy is full.
    #[error("bad request: add_policy: at most {} rules", crate::policy::MAX_RULES)]
    PolicyFull,
    /// `add_policy`: `kill_matching` is not a boolean.
    #[error("bad request: add_policy: bad arguments.kill_matching")]
    AddPolicyBadKill,
    /// `remove_policy`: `id` is missing, not a number, or names no rule.
    #[error("bad request: remove_policy: bad arguments.id")]
    RemovePolicyBadId,
    /// `remove_policy`: `kill_matching` is not a boolean.
    #[error("bad request: remove_policy: bad arguments.kill_matching")]
    RemovePolicyBadKill,
}

/// Parse one request (the bytes of one `read()`), with `default_guest` (N+100) as the guest
/// address when `add_hostfwd` omits it.
pub fn parse_request(bytes: &[u8], default_guest: Ipv4Addr) -> Result<Request, ApiError> {
    if bytes.len() >= MAX_REQUEST {
        return Err(ApiError::TooLarge);
    }
    let root = parse_first_value(bytes)?;
    let obj = root.as_object().ok_or(ApiError::NotObject)?;
    let execute = obj
        .get("execute")
        .and_then(Value::as_str)
        .ok_or(ApiError::NoExecute)?;
    let empty = Map::new();
    let args = obj
        .get("arguments")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    match execute {
        "add_hostfwd" => parse_add_hostfwd(args, default_guest).map(Request::AddHostfwd),
        "list_hostfwd" => Ok(Request::ListHostfwd),
        "remove_hostfwd" => parse_id(args.get("id")).map(Request::RemoveHostfwd),
        "get_info" => Ok(Request::GetInfo),
        "list_flows" => super::flows::parse_filter(args).map(Request::ListFlows),
        "watch_flows" => super::flows::parse_filter(args).map(Request::WatchFlows),
        "get_stats" => Ok(Request::GetStats),
        "add_policy" => super::policy::parse_add(args),
        "list_policy" => Ok(Request::ListPolicy),
        "remove_policy" => super::policy::parse_remove(args),
        _ => Err(ApiError::UnknownExecute),
    }
}

/// The first JSON value of `bytes`, read the way `json_parse_string` reads a C string.
fn parse_first_value(bytes: &[u8]) -> Result<Value, ApiError> {
    let mut s = bytes.split(|&b| b == 0).next().unwrap_or_default();
    if let Some(rest) = s.strip_prefix(b"\xEF\xBB\xBF") {
        s = rest;
    }
    // parson skips with isspace(), which also takes \v and \f.
    let start = s
        .iter()
        .position(|b| !b" \t\n\r\x0b\x0c".contains(b))
        .unwrap_or(s.len());
    let s = s.get(start..).unwrap_or_default();
    match serde_json::Deserializer::from_slice(s)
        .into_iter::<ParsonValue>()
        .next()
    {
        Some(Ok(ParsonValue(v))) => Ok(v),
        _ => Err(ApiError::CannotParse),
    }
}

fn parse_add_hostfwd(
    args: &Map<String, Value>,
    default_guest: Ipv4Addr,
) -> Result<ForwardSpec, ApiError> {
    let proto = match args.get("proto").and_then(Value::as_str) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(ApiError::BadProto),
    };
    let host_addr = parse_addr(args.get("host_addr"), Ipv4Addr::UNSPECIFIED.into())
        .ok_or(ApiError::BadHostAddr)?;
    let host_port = parse_port(args.get("host_port")).ok_or(ApiError::BadHostPort)?;
    let guest_addr =
        parse_addr(args.get("guest_addr"), default_guest.into()).ok_or(ApiError::BadGuestAddr)?;
    let guest_port = parse_port(args.get("guest_port")).ok_or(ApiError::BadGuestPort)?;
    Ok(ForwardSpec {
        proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    })
}

/// An address field: missing, `null` or `""` is `default`; otherwise a dotted quad
/// (`inet_pton(AF_INET)` rules: no leading zeros) or an IPv6 address (no brackets, no scope).
fn parse_addr(v: Option<&Value>, default: IpAddr) -> Option<IpAddr> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::String(s)) if s.is_empty() => Some(default),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    }
}

/// A JSON number truncated toward zero (slirp4netns's `(int)` cast of a double); `None` for
/// anything that is not a number or truncates to less than 1.
fn truncated(v: Option<&Value>) -> Option<u64> {
    let n = v?.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u).filter(|&u| u >= 1);
    }
    let f = n.as_f64()?.trunc();
    // 2^64 is exactly representable; anything at or above it does not fit.
    if !(1.0..18_446_744_073_709_551_616.0).contains(&f) {
        return None;
    }
    // In range and integral, so the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let u = f as u64;
    Some(u)
}

fn parse_port(v: Option<&Value>) -> Option<u16> {
    truncated(v).and_then(|p| u16::try_from(p).ok())
}

fn parse_id(v: Option<&Value>) -> Result<u64, ApiError> {
    truncated(v).ok_or(ApiError::RemoveBadId)
}

/// A JSON value deserialized like parson does it: an object with a repeated key is an error
/// (serde_json's own `Value` would silently keep the last one).
struct ParsonValue(Value);

impl<'de> Deserialize<'de> for ParsonValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParsonVisitor).map(ParsonValue)
    }
}

struct ParsonVisitor;

impl<'de> Visitor<'de> for ParsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(ParsonValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let ParsonValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                return Err(de::Error::custom("duplicate key"));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Serialize a reply. The reply types hold only strings, numbers and sequences, so this cannot
/// fail; the fallback exists only to avoid a panic path.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| r#"{"error":{"desc":"bad request: internal error"}}"#.to_owned())
}

#[derive(Serialize)]
struct ErrorReply<'a> {
    error: ErrorDesc<'a>,
}

#[derive(Serialize)]
struct ErrorDesc<'a> {
    desc: &'a str,
}

#[derive(Serialize)]
struct Return<T> {
    #[serde(rename = "return")]
    ret: T,
}

#[derive(Serialize)]
struct Added {
    id: u64,
}

#[derive(Serialize)]
struct Empty {}

/// One `list_hostfwd` entry, fields in slirp4netns's order.
#[derive(Serialize)]
struct ListEntry {
    id: u64,
    proto: &'static str,
    host_addr: String,
    host_port: u16,
    guest_addr: String,
    guest_port: u16,
}

#[derive(Serialize)]
struct Entries<'a> {
    entries: &'a [ListEntry],
}

#[derive(Serialize)]
struct ListReply<'a> {
    #[serde(rename = "return")]
    ret: Entries<'a>,
    entries: &'a [ListEntry],
}

/// `{"error":{"desc":"..."}}` for `e`.
pub fn render_error(e: &ApiError) -> String {
    let desc = e.to_string();
    to_json(&ErrorReply {
        error: ErrorDesc { desc: &desc },
    })
}

/// `{"return":{"id":N}}`: reply to a successful `add_hostfwd`.
pub fn render_added(id: u64) -> String {
    to_json(&Return { ret: Added { id } })
}

/// `{"return":{}}`: reply to a successful `remove_hostfwd`.
pub fn render_removed() -> String {
    to_json(&Return { ret: Empty {} })
}

/// Reply to `list_hostfwd`: `{"return":{"entries":[...]},"entries":[...]}`. slirp4netns sends
/// only the bare `entries` while its man page documents the `return` form; both keys satisfy
/// readers of either shape. Entries appear in the order given (insertion order).
pub fn render_list(entries: &[(u64, ForwardSpec)]) -> String {
    let list: Vec<ListEntry> = entries
        .iter()
        .map(|(id, f)| ListEntry {
            id: *id,
            proto: f.proto.name(),
            host_addr: f.host_addr.to_string(),
            host_port: f.host_port,
            guest_addr: f.guest_addr.to_string(),
            guest_port: f.guest_port,
        })
        .collect();
    to_json(&ListReply {
        ret: Entries { entries: &list },
        entries: &list,
    })
}

/// `{"return":<v>}`: reply to `get_info`, with counters supplied by the caller.
pub fn render_info(v: &Value) -> String {
    to_json(&Return { ret: v })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

    fn parse(s: &str) -> Result<Request, ApiError> {
        parse_request(s.as_bytes(), GUEST)
    }

    fn add(args: &str) -> Result<Request, ApiError> {
        parse(&format!(
            r#"{{"execute":"add_hostfwd","arguments":{{{args}}}}}"#
        ))
    }

    fn spec(
        proto: Proto,
        host: [u8; 4],
        host_port: u16,
        guest: [u8; 4],
        guest_port: u16,
    ) -> ForwardSpec {
        ForwardSpec {
            proto,
            host_addr: IpAddr::from(host),
            host_port,
            guest_addr: IpAddr::from(guest),
            guest_port,
        }
    }

    fn err_reply(r: Result<Request, ApiError>) -> String {
        render_error(&r.unwrap_err())
    }

    #[test]
    fn error_strings_exact() {
        let all = [
            (ApiError::TooLarge, "bad request: too large message"),
            (ApiError::CannotParse, "bad request: cannot parse JSON"),
            (ApiError::NotObject, "bad request: json_object() failed"),
            (ApiError::NoExecute, "bad request: no execute found"),
            (ApiError::UnknownExecute, "bad request: unknown execute"),
            (
                ApiError::BadProto,
                "bad request: add_hostfwd: bad arguments.proto",
            ),
            (
                ApiError::BadHostAddr,
                "bad request: add_hostfwd: bad arguments.host_addr",
            ),
            (
                ApiError::BadHostPort,
                "bad request: add_hostfwd: bad arguments.host_port",
            ),
            (
                ApiError::BadGuestAddr,
                "bad request: add_hostfwd: bad arguments.guest_addr",
            ),
            (
                ApiError::BadGuestPort,
                "bad request: add_hostfwd: bad arguments.guest_port",
            ),
            (
                ApiError::AddFailed,
                "bad request: add_hostfwd: slirp_add_hostfwd failed",
            ),
            (
                ApiError::RemoveBadId,
                "bad request: remove_hostfwd: bad arguments.id",
            ),
            (
                ApiError::RemoveFailed,
                "bad request: remove_hostfwd: slirp_remove_hostfwd failed",
            ),
        ];
        for (e, s) in all {
            assert_eq!(e.to_string(), s);
            assert_eq!(render_error(&e), format!(r#"{{"error":{{"desc":"{s}"}}}}"#));
        }
    }

    #[test]
    fn top_level_errors() {
        assert_eq!(
            err_reply(parse("[1,2]")),
            r#"{"error":{"desc":"bad request: json_object() failed"}}"#
        );
        assert_eq!(parse("\"str\""), Err(ApiError::NotObject));
        assert_eq!(parse("42"), Err(ApiError::NotObject));
        assert_eq!(
            err_reply(parse(r#"{"execute":1}"#)),
            r#"{"error":{"desc":"bad request: no execute found"}}"#
        );
        assert_eq!(parse("{}"), Err(ApiError::NoExecute));
        assert_eq!(parse(r#"{"execute":null}"#), Err(ApiError::NoExecute));
        assert_eq!(
            err_reply(parse("")),
            r#"{"error":{"desc":"bad request: cannot parse JSON"}}"#
        );
        assert_eq!(parse(" \n"), Err(ApiError::CannotParse));
        assert_eq!(parse(r#"{"execute":"#), Err(ApiError::CannotParse));
        assert_eq!(parse("nonsense"), Err(ApiError::CannotParse));
        assert_eq!(
            parse_request(&[0xff, 0xfe], GUEST),
            Err(ApiError::CannotParse)
        );
        assert_eq!(
            err_reply(parse(r#"{"execute":"nope"}"#)),
            r#"{"error":{"desc":"bad request: unknown execute"}}"#
        );
    }

    #[test]
    fn duplicate_keys_rejected_like_parson() {
        assert_eq!(
            parse(r#"{"execute":"nope","execute":"list_hostfwd"}"#),
            Err(ApiError::CannotParse)
        );
        assert_eq!(
            add(r#""proto":"tcp","proto":"udp","host_port":1,"guest_port":2"#),
            Err(ApiError::CannotParse)
        );
    }

    #[test]
    fn too_large() {
        let mut big = br#"{"execute":"list_hostfwd"}"#.to_vec();
        big.resize(MAX_REQUEST - 1, b' ');
        assert_eq!(parse_request(&big, GUEST), Ok(Request::ListHostfwd));
        big.push(b' ');
        assert_eq!(parse_request(&big, GUEST), Err(ApiError::TooLarge));
        assert_eq!(
            render_error(&ApiError::TooLarge),
            r#"{"error":{"desc":"bad request: too large message"}}"#
        );
    }

    #[test]
    fn framing_quirks() {
        assert_eq!(
            parse("{\"execute\":\"list_hostfwd\"}\n"),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(
            parse(r#"{"execute":"list_hostfwd"}{"execute":"nope"}"#),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(
            parse(r#"{"execute":"list_hostfwd"} trailing garbage"#),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(
            parse("\u{feff} \x0b\x0c{\"execute\":\"list_hostfwd\"}"),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(
            parse_request(b"{\"execute\":\"list_hostfwd\"}\0{", GUEST),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(
            parse_request(b"{\"execute\":\0\"list_hostfwd\"}", GUEST),
            Err(ApiError::CannotParse)
        );
        assert_eq!(
            parse(r#"{"execute":"list_hostfwd","arguments":[1]}"#),
            Ok(Request::ListHostfwd)
        );
        assert_eq!(parse(r#"{"execute":"get_info"}"#), Ok(Request::GetInfo));
        assert_eq!(parse(r#"{"execute":"get_stats"}"#), Ok(Request::GetStats));
        assert_eq!(
            parse(r#"{"execute":"list_flows","arguments":{"proto":"udp"}}"#),
            Ok(Request::ListFlows(super::super::flows::Filter {
                proto: Some(crate::nat::Proto::Udp),
                ..Default::default()
            }))
        );
        assert_eq!(
            parse(r#"{"execute":"watch_flows"}"#),
            Ok(Request::WatchFlows(Default::default()))
        );
        assert_eq!(
            render_error(&ApiError::BadFilter("state")),
            r#"{"error":{"desc":"bad request: flows: bad arguments.state"}}"#
        );
    }

    #[test]
    fn add_transcript_cases() {
        // Appendix C, first request (no guest_addr) with rootlesskit-style trailing newline.
        assert_eq!(
            parse(
                "{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":23500,\"guest_port\":8080}}\n"
            ),
            Ok(Request::AddHostfwd(spec(Proto::Tcp, [127, 0, 0, 1], 23500, [10, 0, 2, 100], 8080)))
        );
        assert_eq!(
            add(r#""proto":"udp","host_port":23501,"guest_addr":"10.0.2.100","guest_port":53"#),
            Ok(Request::AddHostfwd(spec(
                Proto::Udp,
                [0, 0, 0, 0],
                23501,
                [10, 0, 2, 100],
                53
            )))
        );
        assert_eq!(
            err_reply(add(r#""proto":"tcp","host_port":"23502","guest_port":80"#)),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}"#
        );
        // IPv6 (refused by slirp4netns): the guest is still N+100 unless named.
        let v6 = |h: &str, g: &str| ForwardSpec {
            proto: Proto::Tcp,
            host_addr: h.parse().unwrap(),
            host_port: 23503,
            guest_addr: g.parse().unwrap(),
            guest_port: 80,
        };
        assert_eq!(
            add(r#""proto":"tcp","host_addr":"::1","host_port":23503,"guest_port":80"#),
            Ok(Request::AddHostfwd(v6("::1", "10.0.2.100")))
        );
        assert_eq!(
            add(
                r#""proto":"tcp","host_addr":"::","host_port":23503,"guest_addr":"::","guest_port":80"#
            ),
            Ok(Request::AddHostfwd(v6("::", "::")))
        );
        assert_eq!(
            add(r#""proto":"tcp","host_addr":"[::1]","host_port":23503,"guest_port":80"#),
            Err(ApiError::BadHostAddr)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_addr":"fe80::1%lo","host_port":23503,"guest_port":80"#),
            Err(ApiError::BadHostAddr)
        );
        assert_eq!(
            err_reply(add(r#""proto":"sctp","host_port":23504,"guest_port":80"#)),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}"#
        );
        // slirp4netns crashes on this one.
        assert_eq!(
            add(r#""host_port":23599,"guest_port":80"#),
            Err(ApiError::BadProto)
        );
        assert_eq!(
            parse(r#"{"execute":"add_hostfwd"}"#),
            Err(ApiError::BadProto)
        );
        assert_eq!(
            parse(r#"{"execute":"add_hostfwd","arguments":"x"}"#),
            Err(ApiError::BadProto)
        );
        assert_eq!(
            add(r#""proto":"TCP","host_port":1,"guest_port":1"#),
            Err(ApiError::BadProto)
        );
        assert_eq!(
            add(r#""proto":6,"host_port":1,"guest_port":1"#),
            Err(ApiError::BadProto)
        );
    }

    #[test]
    fn port_rules() {
        assert_eq!(
            add(r#""proto":"tcp","host_port":70000,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":0,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":-1,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":0.9,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":1e30,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":true,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":null,"guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","guest_port":80"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":23508.9,"guest_port":80.5"#),
            Ok(Request::AddHostfwd(spec(
                Proto::Tcp,
                [0, 0, 0, 0],
                23508,
                [10, 0, 2, 100],
                80
            )))
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":65535.0,"guest_port":1e3"#),
            Ok(Request::AddHostfwd(spec(
                Proto::Tcp,
                [0, 0, 0, 0],
                65535,
                [10, 0, 2, 100],
                1000
            )))
        );
        assert_eq!(
            err_reply(add(r#""proto":"tcp","host_port":8080,"guest_port":0"#)),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}"#
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":8080,"guest_port":65536"#),
            Err(ApiError::BadGuestPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":8080,"guest_port":"80""#),
            Err(ApiError::BadGuestPort)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":8080"#),
            Err(ApiError::BadGuestPort)
        );
    }

    #[test]
    fn address_rules_and_order() {
        assert_eq!(
            add(r#""proto":"tcp","host_addr":null,"host_port":1,"guest_addr":null,"guest_port":2"#),
            Ok(Request::AddHostfwd(spec(
                Proto::Tcp,
                [0, 0, 0, 0],
                1,
                [10, 0, 2, 100],
                2
            )))
        );
        assert_eq!(
            add(r#""proto":"tcp","host_addr":"010.0.0.1","host_port":1,"guest_port":2"#),
            Err(ApiError::BadHostAddr)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_addr":5,"host_port":1,"guest_port":2"#),
            Err(ApiError::BadHostAddr)
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":1,"guest_addr":"fd00::100","guest_port":2"#),
            Ok(Request::AddHostfwd(ForwardSpec {
                guest_addr: "fd00::100".parse().unwrap(),
                ..spec(Proto::Tcp, [0, 0, 0, 0], 1, [0, 0, 0, 0], 2)
            }))
        );
        assert_eq!(
            add(r#""proto":"tcp","host_port":1,"guest_addr":"fd00::1::2","guest_port":2"#),
            Err(ApiError::BadGuestAddr)
        );
        assert_eq!(
            err_reply(add(
                r#""proto":"tcp","host_port":1,"guest_addr":"10.0.2","guest_port":2"#
            )),
            r#"{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}"#
        );
        // Order: proto, host_addr, host_port, guest_addr, guest_port.
        assert_eq!(
            add(r#""host_addr":"x","host_port":0,"guest_addr":"x","guest_port":0"#),
            Err(ApiError::BadProto)
        );
        assert_eq!(
            add(r#""proto":"udp","host_addr":"x","host_port":0,"guest_addr":"x","guest_port":0"#),
            Err(ApiError::BadHostAddr)
        );
        assert_eq!(
            add(r#""proto":"udp","host_port":0,"guest_addr":"x","guest_port":0"#),
            Err(ApiError::BadHostPort)
        );
        assert_eq!(
            add(r#""proto":"udp","host_port":1,"guest_addr":"x","guest_port":0"#),
            Err(ApiError::BadGuestAddr)
        );
        // The caller's default guest address is used.
        assert_eq!(
            parse_request(
                br#"{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_port":1,"guest_port":2}}"#,
                Ipv4Addr::new(10, 0, 135, 228)
            ),
            Ok(Request::AddHostfwd(spec(Proto::Tcp, [0, 0, 0, 0], 1, [10, 0, 135, 228], 2)))
        );
    }

    #[test]
    fn podman_and_rootlesskit_requests() {
        assert_eq!(
            parse("{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"0.0.0.0\",\"host_port\":8080,\"guest_addr\":\"\",\"guest_port\":80}}\n"),
            Ok(Request::AddHostfwd(spec(Proto::Tcp, [0, 0, 0, 0], 8080, [10, 0, 2, 100], 80)))
        );
        assert_eq!(
            parse("{\"execute\":\"add_hostfwd\",\"arguments\":{\"proto\":\"tcp\",\"host_addr\":\"127.0.0.1\",\"host_port\":24080,\"guest_addr\":\"10.0.2.100\",\"guest_port\":8080}}\n"),
            Ok(Request::AddHostfwd(spec(Proto::Tcp, [127, 0, 0, 1], 24080, [10, 0, 2, 100], 8080)))
        );
        // Unknown extra fields are ignored.
        assert_eq!(
            add(
                r#""proto":"udp","host_port":5353,"guest_port":53,"comment":"x","nested":{"a":[1]}"#
            ),
            Ok(Request::AddHostfwd(spec(
                Proto::Udp,
                [0, 0, 0, 0],
                5353,
                [10, 0, 2, 100],
                53
            )))
        );
        assert_eq!(
            parse("{\"execute\":\"remove_hostfwd\",\"arguments\":{\"id\":3}}\n"),
            Ok(Request::RemoveHostfwd(3))
        );
    }

    #[test]
    fn remove_id_rules() {
        let rm = |args: &str| parse(&format!(r#"{{"execute":"remove_hostfwd"{args}}}"#));
        assert_eq!(
            rm(r#","arguments":{"id":2}"#),
            Ok(Request::RemoveHostfwd(2))
        );
        assert_eq!(
            rm(r#","arguments":{"id":2.7}"#),
            Ok(Request::RemoveHostfwd(2))
        );
        assert_eq!(
            rm(r#","arguments":{"id":18446744073709551615}"#),
            Ok(Request::RemoveHostfwd(u64::MAX))
        );
        assert_eq!(
            err_reply(rm("")),
            r#"{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}"#
        );
        assert_eq!(rm(r#","arguments":{}"#), Err(ApiError::RemoveBadId));
        assert_eq!(rm(r#","arguments":{"id":0}"#), Err(ApiError::RemoveBadId));
        assert_eq!(rm(r#","arguments":{"id":-1}"#), Err(ApiError::RemoveBadId));
        assert_eq!(rm(r#","arguments":{"id":0.5}"#), Err(ApiError::RemoveBadId));
        assert_eq!(rm(r#","arguments":{"id":"2"}"#), Err(ApiError::RemoveBadId));
        assert_eq!(
            rm(r#","arguments":{"id":1e20}"#),
            Err(ApiError::RemoveBadId)
        );
    }

    #[test]
    fn replies_exact() {
        assert_eq!(render_added(1), r#"{"return":{"id":1}}"#);
        assert_eq!(render_removed(), r#"{"return":{}}"#);
        assert_eq!(
            render_list(&[]),
            r#"{"return":{"entries":[]},"entries":[]}"#
        );
        let list = [
            (
                1,
                spec(Proto::Tcp, [127, 0, 0, 1], 23500, [10, 0, 2, 100], 8080),
            ),
            (
                2,
                spec(Proto::Udp, [0, 0, 0, 0], 23501, [10, 0, 2, 100], 53),
            ),
        ];
        let e = concat!(
            r#"[{"id":1,"proto":"tcp","host_addr":"127.0.0.1","host_port":23500,"guest_addr":"10.0.2.100","guest_port":8080},"#,
            r#"{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":23501,"guest_addr":"10.0.2.100","guest_port":53}]"#
        );
        assert_eq!(
            render_list(&list),
            format!(r#"{{"return":{{"entries":{e}}},"entries":{e}}}"#)
        );
        let v6 = [(
            7,
            ForwardSpec {
                host_addr: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                ..list[0].1
            },
        )];
        assert!(render_list(&v6).contains(r#""host_addr":"::1""#));
        assert_eq!(
            render_info(&serde_json::json!({"frames_in": 3})),
            r#"{"return":{"frames_in":3}}"#
        );
    }
}
