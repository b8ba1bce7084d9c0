//! Query names: RFC 5782 DNSBL names and the reverse (PTR) names they share a layout with.
use std::{
    fmt::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// The address's labels in reverse order, without a zone: `2.2.0.192` for 192.0.2.2, and the
/// 32 nibbles of an IPv6 address, least significant first (RFC 5782 section 2.1 and 2.4).
pub fn reversed_labels(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut out = String::with_capacity(63);
            for byte in v6.octets().iter().rev() {
                if !out.is_empty() {
                    out.push('.');
                }
                let _ = write!(out, "{:x}.{:x}", byte & 0x0f, byte >> 4);
            }
            out
        }
    }
}

/// The fully qualified DNSBL query name for `ip` in `zone` (`2.2.0.192.zen.spamhaus.org.`).
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> String {
    format!("{}.{}.", reversed_labels(ip), zone.trim_end_matches('.'))
}

/// The fully qualified PTR name (`2.2.0.192.in-addr.arpa.`, `....8.b.d.0.1.0.0.2.ip6.arpa.`).
pub fn ptr_name(ip: IpAddr) -> String {
    let zone = match ip {
        IpAddr::V4(_) => "in-addr.arpa",
        IpAddr::V6(_) => "ip6.arpa",
    };
    format!("{}.{zone}.", reversed_labels(ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are IPv4 peers: lists and PTRs know them
/// under their IPv4 form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is of the same family as `a` (used for FCrDNS: A for IPv4, AAAA for IPv6).
pub fn is_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// The IPv6 form, if `ip` is IPv6.
pub fn is_v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(v6) => Some(v6),
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5782_ipv4_example() {
        // RFC 5782 section 2.1: 192.0.2.99 in bad.example.com.
        let ip: IpAddr = "192.0.2.99".parse().unwrap();
        assert_eq!(
            dnsbl_name(ip, "bad.example.com"),
            "99.2.0.192.bad.example.com."
        );
        assert_eq!(
            dnsbl_name(ip, "bad.example.com."),
            "99.2.0.192.bad.example.com."
        );
        assert_eq!(ptr_name(ip), "99.2.0.192.in-addr.arpa.");
    }

    #[test]
    fn rfc5782_ipv6_example() {
        // RFC 5782 section 2.4: 2001:db8:1:2:3:4:567:89ab in ugly.example.com.
        let ip: IpAddr = "2001:db8:1:2:3:4:567:89ab".parse().unwrap();
        assert_eq!(
            dnsbl_name(ip, "ugly.example.com"),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com."
        );
        assert!(ptr_name(ip).ends_with(".1.0.0.2.ip6.arpa."));
        assert_eq!(reversed_labels(ip).split('.').count(), 32);
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
