//! Who listens on a loopback port: the owner uid of each listening socket that would take a
//! connection to it, from `/proc/net/tcp` and `/proc/net/tcp6`. Plain HTTP to loopback never
//! leaves the machine, but any local user can listen on a free port first, so secrets go over
//! it only to a listener of the user's own or root's. This module reads `/proc`; it sends nothing.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `st` of a socket in the LISTEN state.
const LISTEN: &str = "0A";

/// The uids owning the listening sockets that a connection to `host:port` could reach, where
/// `host` is a loopback name or address (`localhost`, `127.0.0.1`, `::1`). Empty when nothing
/// listens, or when the tables cannot be read.
pub fn listener_uids(host: &str, port: u16) -> Vec<u32> {
    let targets: Vec<IpAddr> = match host {
        "localhost" => vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .into_iter()
            .collect(),
    };
    let mut uids = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        // The kernel writes these tables; read line by line, so memory stays flat however
        // many sockets the machine has.
        let Ok(file) = File::open(table) else {
            continue;
        };
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            if let Some((addr, uid)) = listening(&line, port) {
                if targets.iter().any(|t| reaches(addr, *t)) {
                    uids.push(uid);
                }
            }
        }
    }
    uids
}

/// The local address and owner uid of a LISTEN socket on `port`, from one line of the table.
fn listening(line: &str, port: u16) -> Option<(IpAddr, u32)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
    if fields.len() < 8 || fields[3] != LISTEN {
        return None;
    }
    let (addr, p) = fields[1].split_once(':')?;
    if u16::from_str_radix(p, 16).ok()? != port {
        return None;
    }
    Some((parse_addr(addr)?, fields[7].parse().ok()?))
}

/// An address as the kernel prints it: 32-bit words in host byte order, in hex.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(Ipv6Addr::from(bytes).into())
        }
        _ => None,
    }
}

/// Whether a socket listening on `listen` takes a connection to `target`: the same address, a
/// wildcard, or (IPv6 sockets, unless V6ONLY, which the table does not show) its v4-mapped form.
fn reaches(listen: IpAddr, target: IpAddr) -> bool {
    match (listen, target) {
        (IpAddr::V4(l), IpAddr::V4(t)) => l == t || l.is_unspecified(),
        (IpAddr::V6(l), IpAddr::V4(t)) => l.is_unspecified() || l == t.to_ipv6_mapped(),
        (IpAddr::V6(l), IpAddr::V6(t)) => l == t || l.is_unspecified(),
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets_from_the_table() {
        let v4 = "   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 41234 1 0000000000000000 100 0 0 10 0";
        let est = "   4: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1002        0 41235 1 0000000000000000 20 4 30 10 -1";
        let any = "   5: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 41236 1 0000000000000000 100 0 0 10 0";
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1500        0 9 1 0 100 0 0 10 0";
        if cfg!(target_endian = "little") {
            assert_eq!(
                listening(v4, 8080),
                Some((Ipv4Addr::LOCALHOST.into(), 1002))
            );
            assert_eq!(
                listening(v6, 8080),
                Some((Ipv6Addr::LOCALHOST.into(), 1500))
            );
        }
        assert_eq!(listening(v4, 8081), None);
        assert_eq!(listening(est, 8080), None, "only LISTEN sockets count");
        assert_eq!(
            listening(any, 8080),
            Some((Ipv4Addr::UNSPECIFIED.into(), 0))
        );
        assert_eq!(
            listening("  sl  local_address rem_address   st", 8080),
            None
        );
    }

    #[test]
    fn wildcards_and_mapped_addresses_reach_loopback() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        assert!(reaches(lo, lo));
        assert!(reaches(Ipv4Addr::UNSPECIFIED.into(), lo));
        assert!(reaches(Ipv6Addr::UNSPECIFIED.into(), lo));
        assert!(reaches(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), lo));
        assert!(!reaches(Ipv4Addr::new(127, 0, 0, 2).into(), lo));
        assert!(!reaches(lo, Ipv6Addr::LOCALHOST.into()));
    }

    #[test]
    fn finds_its_own_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(listener_uids("127.0.0.1", port), vec![me]);
        assert!(listener_uids("localhost", port).contains(&me));
        drop(l);
        assert!(listener_uids("127.0.0.1", port).is_empty());
    }
}
