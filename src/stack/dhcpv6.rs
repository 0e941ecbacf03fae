//! Stateless DHCPv6 (RFC 8415 §18.2.6, the RFC 3736 subset): the DNS server for guests that ask.
//!
//! # Theory of operation
//!
//! With `-6` the guest configures its address by SLAAC from the router advertisements, which
//! also carry the DNS server (RDNSS). Clients that take DNS from DHCPv6 instead (dhclient `-S`,
//! NetworkManager and systemd-networkd when the RA's "other configuration" flag is off but they
//! ask anyway) send an Information-Request to `ff02::1:2` port 547; libslirp answers it with the
//! DNS address `fd00::3`, and so does [`answer`]:
//!
//! - only Information-Request (type 11) is answered; every other message (Solicit, Request...,
//!   which ask for addresses we do not hand out) is ignored, as libslirp does;
//! - the Reply (type 7) echoes the transaction id and the Client Identifier (if any), names the
//!   server by a DUID-LL of the gateway's MAC (RFC 8415 requires a Server Identifier in a
//!   Reply; libslirp omits it, which strict clients reject), and carries the DNS Recursive Name
//!   Server option (23) with `fd00::3`, whether or not the Option Request option asked for it,
//!   as the DHCPv4 server always sends its DNS address.
//!
//! Parsing is bounds-checked throughout; a malformed message gets no answer.

use std::net::Ipv6Addr;

/// DHCPv6 server port.
pub const SERVER_PORT: u16 = 547;
/// DHCPv6 client port.
pub const CLIENT_PORT: u16 = 546;
/// All_DHCP_Relay_Agents_and_Servers.
pub const ALL_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

const MSG_REPLY: u8 = 7;
const MSG_INFORMATION_REQUEST: u8 = 11;
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_DNS_SERVERS: u16 = 23;
/// DUID-LL (RFC 8415 §11.4), hardware type 1 (Ethernet).
const DUID_LL: u16 = 3;
const HW_ETHERNET: u16 = 1;
/// Longest DUID (RFC 8415 §11.1): a longer Client Identifier is malformed.
const MAX_DUID_LEN: usize = 130;

/// The Reply to `msg` (a DHCPv6 message, the UDP payload) if it is an Information-Request;
/// `server_mac` names the server, `dns` is the address offered.
pub fn answer(msg: &[u8], server_mac: [u8; 6], dns: Ipv6Addr) -> Option<Vec<u8>> {
    let (&kind, rest) = msg.split_first()?;
    if kind != MSG_INFORMATION_REQUEST {
        return None;
    }
    let xid = rest.get(..3)?;
    let mut client_id: Option<&[u8]> = None;
    let mut options = rest.get(3..)?;
    while !options.is_empty() {
        let code = u16::from_be_bytes([*options.first()?, *options.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        let value = options.get(4..4 + len)?;
        if code == OPT_CLIENTID {
            if value.is_empty() || value.len() > MAX_DUID_LEN {
                return None;
            }
            client_id = Some(value);
        }
        options = &options[4 + len..];
    }
    let mut out = Vec::with_capacity(4 + 4 + 10 + 4 + MAX_DUID_LEN + 4 + 16);
    out.push(MSG_REPLY);
    out.extend_from_slice(xid);
    let mut duid = Vec::with_capacity(10);
    duid.extend_from_slice(&DUID_LL.to_be_bytes());
    duid.extend_from_slice(&HW_ETHERNET.to_be_bytes());
    duid.extend_from_slice(&server_mac);
    put_option(&mut out, OPT_SERVERID, &duid);
    if let Some(id) = client_id {
        put_option(&mut out, OPT_CLIENTID, id);
    }
    put_option(&mut out, OPT_DNS_SERVERS, &dns.octets());
    Some(out)
}

fn put_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    // Values here are at most MAX_DUID_LEN bytes.
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x55, 10, 0, 2, 2];
    const DNS: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

    /// An Information-Request as dhclient -6 -S sends it: client id, ORO (DNS), elapsed time.
    fn info_request() -> Vec<u8> {
        let mut m = vec![MSG_INFORMATION_REQUEST, 0xab, 0xcd, 0xef];
        m.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 9]); // client id
        m.extend_from_slice(&[0, 6, 0, 2, 0, 23]); // ORO: DNS servers
        m.extend_from_slice(&[0, 8, 0, 2, 0, 0]); // elapsed time
        m
    }

    #[test]
    fn information_request_gets_dns() {
        let r = answer(&info_request(), MAC, DNS).unwrap();
        let mut want = vec![MSG_REPLY, 0xab, 0xcd, 0xef];
        want.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 0x52, 0x55, 10, 0, 2, 2]);
        want.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 9]);
        want.extend_from_slice(&[0, 23, 0, 16]);
        want.extend_from_slice(&DNS.octets());
        assert_eq!(r, want);
    }

    #[test]
    fn other_messages_and_malformed_ones_get_nothing() {
        let mut solicit = info_request();
        solicit[0] = 1;
        assert_eq!(answer(&solicit, MAC, DNS), None);
        let m = info_request();
        for cut in 0..m.len() {
            // Every truncation inside an option is malformed; cutting exactly between options
            // leaves a shorter, valid request.
            let r = answer(&m[..cut], MAC, DNS);
            let boundary = [4, 18, 24].contains(&cut);
            assert_eq!(r.is_some(), boundary, "cut at {cut}");
        }
        let mut bad_id = vec![MSG_INFORMATION_REQUEST, 1, 2, 3, 0, 1, 0, 0];
        assert_eq!(answer(&bad_id, MAC, DNS), None, "empty client id");
        bad_id.truncate(4);
        bad_id.extend_from_slice(&[0, 1, 0, 131]);
        bad_id.extend_from_slice(&[7; 131]);
        assert_eq!(answer(&bad_id, MAC, DNS), None, "overlong client id");
    }

    #[test]
    fn a_request_without_options_still_gets_the_server_and_dns() {
        let r = answer(&[MSG_INFORMATION_REQUEST, 0, 0, 1], MAC, DNS).unwrap();
        assert_eq!(r.len(), 4 + 14 + 20);
        assert_eq!(&r[r.len() - 16..], &DNS.octets());
    }
}
