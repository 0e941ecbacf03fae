//! `tapir ctl`: a client for the API socket, so nobody needs ncat and hand-written JSON.
//!
//! One request per connection, exactly as podman and rootlesskit talk to slirp4netns: connect,
//! write the JSON request, shut down the writing side, read the reply until EOF. Works against
//! slirp4netns too. The reply is printed as is (one line); an `error` reply prints its
//! description on stderr and makes the exit status 1.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::cli::CtlAction;
use crate::config::forward::{parse_publish, Proto};
use crate::config::Network;

pub mod conntrack;

/// How long to wait for the server's reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Build the JSON request for `action`.
pub fn request(action: &CtlAction) -> Result<String, String> {
    Ok(match action {
        CtlAction::List => r#"{"execute":"list_hostfwd"}"#.to_owned(),
        CtlAction::Info => r#"{"execute":"get_info"}"#.to_owned(),
        CtlAction::Conntrack(o) => conntrack::request(o),
        CtlAction::Stats(_) => r#"{"execute":"get_stats"}"#.to_owned(),
        CtlAction::PolicyList => r#"{"execute":"list_policy"}"#.to_owned(),
        CtlAction::PolicyAdd(rule, position) => {
            // Checked here too, so a typo is reported without a round trip.
            crate::policy::Rule::parse_line(rule).map_err(|e| format!("{rule}: {e}"))?;
            let mut args = serde_json::json!({"rule": rule});
            if let Some(p) = position {
                args["position"] = serde_json::json!(p);
            }
            serde_json::json!({"execute": "add_policy", "arguments": args}).to_string()
        }
        CtlAction::PolicyRemove(id) => {
            serde_json::json!({"execute": "remove_policy", "arguments": {"id": id}}).to_string()
        }
        CtlAction::Remove(id) => {
            serde_json::json!({"execute": "remove_hostfwd", "arguments": {"id": id}}).to_string()
        }
        CtlAction::Add(spec) => {
            // Without a bracketed IPv6 guest address the guest address is left empty: the server
            // defaults it to its own N+100, which the client cannot know (it may run with
            // another --cidr).
            let f = parse_publish(spec, &Network::default()).map_err(|e| e.to_string())?;
            let guest = match f.guest_addr {
                std::net::IpAddr::V6(a) => a.to_string(),
                std::net::IpAddr::V4(_) => String::new(),
            };
            serde_json::json!({
                "execute": "add_hostfwd",
                "arguments": {
                    "proto": match f.proto { Proto::Tcp => "tcp", Proto::Udp => "udp" },
                    "host_addr": f.host_addr.to_string(),
                    "host_port": f.host_port,
                    "guest_addr": guest,
                    "guest_port": f.guest_port,
                }
            })
            .to_string()
        }
    })
}

/// Send one request and return the raw reply.
pub fn call(socket: &Path, request: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
    s.write_all(request.as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    Ok(reply)
}

/// Run `tapir ctl`; returns the exit status.
pub fn run(socket: &Path, action: &CtlAction) -> i32 {
    match action {
        CtlAction::Conntrack(o) => return conntrack::run(socket, o),
        CtlAction::Stats(prometheus) => return conntrack::run_stats(socket, *prometheus),
        _ => {}
    }
    let result = request(action).and_then(|req| call(socket, &req));
    match result {
        Ok(reply) => {
            println!("{reply}");
            match serde_json::from_str::<serde_json::Value>(&reply) {
                Ok(v) if v.get("error").is_some() => {
                    let desc = v["error"]["desc"].as_str().unwrap_or("error");
                    eprintln!("tapir ctl: {desc}");
                    1
                }
                Ok(_) => 0,
                Err(_) => {
                    eprintln!("tapir ctl: the reply is not JSON");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("tapir ctl: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_what_slirp4netns_expects() {
        assert_eq!(
            request(&CtlAction::List).unwrap(),
            r#"{"execute":"list_hostfwd"}"#
        );
        let add = request(&CtlAction::Add("127.0.0.1:8080:80/udp".into())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&add).unwrap();
        assert_eq!(v["execute"], "add_hostfwd");
        assert_eq!(v["arguments"]["proto"], "udp");
        assert_eq!(v["arguments"]["host_addr"], "127.0.0.1");
        assert_eq!(v["arguments"]["host_port"], 8080);
        assert_eq!(v["arguments"]["guest_port"], 80);
        assert_eq!(v["arguments"]["guest_addr"], "");
        let rm = request(&CtlAction::Remove(3)).unwrap();
        assert_eq!(rm, r#"{"arguments":{"id":3},"execute":"remove_hostfwd"}"#);
        assert!(request(&CtlAction::Add("nonsense".into())).is_err());
        let add = request(&CtlAction::Add("[::1]:8080:[::]:80".into())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&add).unwrap();
        assert_eq!(v["arguments"]["host_addr"], "::1");
        assert_eq!(v["arguments"]["guest_addr"], "::");
    }
}
