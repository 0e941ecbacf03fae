//! `tapir ctl SOCKET conntrack` and `tapir ctl SOCKET stats`: the flow table as `conntrack -L`
//! prints it, the event stream as `conntrack -E` does, statistics as JSON or Prometheus text.
//!
//! # Theory of operation
//!
//! `conntrack` sends `list_flows` with the filters as arguments and prints one line per flow
//! (or the reply itself with `-o json`). `--watch` sends `watch_flows` without shutting down
//! its writing side (the server ends a subscription whose client shut it down), then prints
//! every event line as it arrives until the server closes the connection: `[NEW]` and
//! `[DESTROY]` lines, or the JSON lines themselves with `-o json`. `stats` sends `get_stats`
//! and prints the reply, or renders it with [`crate::stats::to_prometheus`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::cli::ConntrackOpts;
use crate::stats::{to_prometheus, Stats};

/// The request for `o`: `list_flows`, or `watch_flows` with `--watch`.
pub fn request(o: &ConntrackOpts) -> String {
    let mut args = Map::new();
    if let Some(p) = &o.proto {
        args.insert("proto".into(), json!(p));
    }
    if let Some(a) = o.addr {
        args.insert("addr".into(), json!(a.to_string()));
    }
    if let Some(a) = o.dst {
        args.insert("dst".into(), json!(a.to_string()));
    }
    if let Some(s) = &o.state {
        args.insert("state".into(), json!(s));
    }
    let execute = if o.watch { "watch_flows" } else { "list_flows" };
    json!({"execute": execute, "arguments": args}).to_string()
}

fn seconds(v: &Value) -> String {
    let ms = v.as_u64().unwrap_or(0);
    format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// One flow as a `conntrack -L`-style line.
pub fn format_flow(f: &Value) -> String {
    // UDP and ICMP flows are endpoint-independent: their remote is the last destination.
    let remote = match text(&f["remote"]) {
        r if r.starts_with("0.0.0.0:") || r.starts_with("[::]:") => text(&f["target"]),
        r => r,
    };
    format!(
        "{:<5} {:<11} guest={} remote={} local={} packets_out={} bytes_out={} packets_in={} bytes_in={} age={} idle={} id={}",
        text(&f["proto"]),
        text(&f["state"]),
        text(&f["guest"]),
        remote,
        text(&f["host_local"]),
        f["packets_out"],
        f["bytes_out"],
        f["packets_in"],
        f["bytes_in"],
        seconds(&f["age_ms"]),
        seconds(&f["idle_ms"]),
        f["id"],
    )
}

/// One event line of `--watch` as text (`None` for lines that are not events).
pub fn format_event(ev: &Value) -> Option<String> {
    match ev["event"].as_str()? {
        "new" => Some(format!("[NEW] {}", format_flow(ev))),
        "closed" => Some(format!(
            "[DESTROY] {} reason={}",
            format_flow(ev),
            text(&ev["reason"])
        )),
        "lost" => Some(format!("[LOST] {} events", ev["count"])),
        _ => None,
    }
}

/// Print an error reply's description; whether `v` was one.
fn is_error(v: &Value) -> bool {
    match v.get("error") {
        Some(e) => {
            eprintln!("tapir ctl: {}", e["desc"].as_str().unwrap_or("error"));
            true
        }
        None => false,
    }
}

fn parse_reply(reply: &str) -> Result<Value, i32> {
    serde_json::from_str(reply).map_err(|_| {
        eprintln!("tapir ctl: the reply is not JSON");
        1
    })
}

/// Run `conntrack`; returns the exit status.
pub fn run(socket: &Path, o: &ConntrackOpts) -> i32 {
    if o.watch {
        return watch(socket, o);
    }
    let reply = match super::call(socket, &request(o)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tapir ctl: {e}");
            return 1;
        }
    };
    let v = match parse_reply(&reply) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if is_error(&v) {
        return 1;
    }
    if o.json {
        println!("{reply}");
        return 0;
    }
    let flows = v["return"]["flows"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for f in &flows {
        let _ = writeln!(out, "{}", format_flow(f));
    }
    eprintln!("tapir ctl: {} flow entries have been shown.", flows.len());
    0
}

fn watch(socket: &Path, o: &ConntrackOpts) -> i32 {
    let stream = UnixStream::connect(socket).and_then(|mut s| {
        s.write_all(request(o).as_bytes())?;
        Ok(s)
    });
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tapir ctl: {}: {e}", socket.display());
            return 1;
        }
    };
    let mut out = std::io::stdout().lock();
    let mut first = true;
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if std::mem::take(&mut first) {
            // The subscription's answer: `{"return":{}}` or an error.
            if is_error(&v) {
                return 1;
            }
            continue;
        }
        let printed = if o.json {
            writeln!(out, "{line}")
        } else {
            match format_event(&v) {
                Some(t) => writeln!(out, "{t}"),
                None => Ok(()),
            }
        };
        if printed.and_then(|()| out.flush()).is_err() {
            return 0; // stdout closed (e.g. `| head`)
        }
    }
    eprintln!("tapir ctl: the server ended the subscription");
    1
}

/// Run `stats`; returns the exit status.
pub fn run_stats(socket: &Path, prometheus: bool) -> i32 {
    let reply = match super::call(socket, r#"{"execute":"get_stats"}"#) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tapir ctl: {e}");
            return 1;
        }
    };
    let v = match parse_reply(&reply) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if is_error(&v) {
        return 1;
    }
    if !prometheus {
        println!("{reply}");
        return 0;
    }
    match serde_json::from_value::<Stats>(v["return"].clone()) {
        Ok(s) => {
            print!("{}", to_prometheus(&s));
            0
        }
        Err(e) => {
            eprintln!("tapir ctl: unexpected get_stats reply: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let o = ConntrackOpts {
            proto: Some("tcp".into()),
            addr: Some("10.0.2.100".parse().unwrap()),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&request(&o)).unwrap();
        assert_eq!(v["execute"], "list_flows");
        assert_eq!(v["arguments"]["proto"], "tcp");
        assert_eq!(v["arguments"]["addr"], "10.0.2.100");
        assert!(v["arguments"].get("state").is_none());
        let w: Value = serde_json::from_str(&request(&ConntrackOpts {
            watch: true,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(w["execute"], "watch_flows");
    }

    #[test]
    fn lines() {
        let f = json!({"id":3,"proto":"udp","state":"active","guest":"10.0.2.100:5000",
            "remote":"0.0.0.0:0","target":"192.0.2.1:53","host_local":null,
            "bytes_out":10,"bytes_in":20,"packets_out":1,"packets_in":1,
            "age_ms":1500,"idle_ms":200});
        let l = format_flow(&f);
        assert!(
            l.starts_with("udp   active      guest=10.0.2.100:5000 remote=192.0.2.1:53 local=- "),
            "{l}"
        );
        assert!(l.contains("bytes_in=20 age=1.5s idle=0.2s id=3"), "{l}");
        let mut ev = f.clone();
        ev["event"] = json!("closed");
        ev["reason"] = json!("expired");
        assert!(format_event(&ev).unwrap().ends_with("reason=expired"));
        assert_eq!(format_event(&json!({"return":{}})), None);
    }
}
