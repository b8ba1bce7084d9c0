//! Addresses and prefixes as operators write them: `203.0.113.7` is the same as
//! `203.0.113.7/32` (and an IPv6 address its /128), on the command line and in the config.
//!
//! An IPv4-mapped IPv6 address (`::ffff:192.0.2.25`, as dual-stack MTAs and Dovecot write
//! IPv4 peers in their logs) means its IPv4 address everywhere mxscreen takes one: the
//! datapath sees an IPv4 sender's SYN as IPv4, so an entry kept in its mapped form would
//! never match it. [`unmap`] is that rule, for prefixes: `::ffff:a.b.c.d/N` with N ≥ 96 is
//! `a.b.c.d/(N-96)`; a mapped prefix shorter than /96 is refused (it reaches outside the
//! mapped range, so it is no IPv4 prefix, and as IPv6 it would match no sender).

use std::net::{IpAddr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, de};

/// `ADDR` or `ADDR/LEN`; a bare address is its own /32 or /128; an IPv4-mapped one is its
/// IPv4 form ([`unmap`]).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let net = match s.parse::<IpAddr>() {
        Ok(ip) => IpNet::from(ip),
        Err(_) => s
            .parse::<IpNet>()
            .map_err(|_| format!("not an IP address or CIDR prefix: {s:?}"))?,
    };
    unmap(net)
}

/// One address, an IPv4-mapped one as its IPv4 form.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("not an IP address: {s:?}"))
}

/// `net` as mxscreen keeps it: an IPv4-mapped prefix (`::ffff:0:0/96` and within) as the
/// IPv4 prefix it means; an error for a mapped address with a prefix shorter than /96.
pub fn unmap(net: IpNet) -> Result<IpNet, String> {
    let IpNet::V6(v6) = net else {
        return Ok(net);
    };
    let Some(v4) = v6.addr().to_ipv4_mapped() else {
        return Ok(net);
    };
    let Some(len) = v6.prefix_len().checked_sub(96) else {
        return Err(format!(
            "{net} is an IPv4-mapped address with a prefix shorter than /96, which is no \
             IPv4 prefix: write the IPv4 prefix ({v4}/N) or a plain IPv6 one"
        ));
    };
    Ok(IpNet::V4(Ipv4Net::new(v4, len).expect("0..=32")))
}

/// [`unmap`] for a prefix already split into bits (the feed readers' form): the IPv4
/// network and length when `addr` is mapped, `None` when it is not.
pub fn unmap_bits(addr: u128, len: u8) -> Result<Option<(u32, u8)>, String> {
    let v6 = Ipv6Addr::from_bits(addr);
    if v6.to_ipv4_mapped().is_none() {
        return Ok(None);
    }
    let net = ipnet::Ipv6Net::new(v6, len).map_err(|_| format!("/{len} is longer than /128"))?;
    match unmap(IpNet::V6(net))? {
        IpNet::V4(n) => Ok(Some((n.addr().to_bits(), n.prefix_len()))),
        IpNet::V6(_) => unreachable!("a mapped prefix unmaps to IPv4 or is refused"),
    }
}

/// Serde `deserialize_with` for a list of [`parse_net`] strings.
pub fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_net(s).map_err(de::Error::custom))
        .collect()
}

/// Serde `deserialize_with` for one [`parse_net`] string.
pub fn deserialize_net<'de, D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
    parse_net(&String::deserialize(d)?).map_err(de::Error::custom)
}

/// Serde `deserialize_with` for one [`parse_ip`] string.
pub fn deserialize_ip<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_ip(&String::deserialize(d)?).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_are_host_prefixes() {
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_net("2001:db8::7").unwrap().to_string(),
            "2001:db8::7/128"
        );
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(parse_net("192.0.2.0/33").is_err());
        assert!(parse_net("example.org").is_err());
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_form() {
        let net = |s| parse_net(s).map(|n| n.to_string());
        assert_eq!(net("::ffff:192.0.2.25").unwrap(), "192.0.2.25/32");
        assert_eq!(net("::FFFF:192.0.2.25/128").unwrap(), "192.0.2.25/32");
        assert_eq!(net("::ffff:c000:219").unwrap(), "192.0.2.25/32");
        assert_eq!(net("::ffff:192.0.2.0/120").unwrap(), "192.0.2.0/24");
        assert_eq!(net("::ffff:0:0/96").unwrap(), "0.0.0.0/0");
        let short = net("::ffff:192.0.2.0/80").unwrap_err();
        assert!(short.contains("shorter than /96"), "{short}");
        // Not mapped: IPv6 as written (`::/0` covers the mapped range but is no IPv4
        // prefix; IPv4-compatible `::a.b.c.d` is deprecated and not IPv4 either).
        assert_eq!(net("::/0").unwrap(), "::/0");
        assert_eq!(net("::192.0.2.25").unwrap(), "::c000:219/128");
        assert_eq!(
            net("2001:db8::ffff:c000:219").unwrap(),
            "2001:db8::ffff:c000:219/128"
        );

        assert_eq!(
            parse_ip(" ::ffff:192.0.2.25".trim()).unwrap(),
            "192.0.2.25".parse::<IpAddr>().unwrap()
        );
        assert!(parse_ip("192.0.2.0/24").is_err());

        let mapped = 0xffff_c000_0200u128;
        assert_eq!(unmap_bits(mapped, 120), Ok(Some((0xc000_0200, 24))));
        assert_eq!(unmap_bits(0x2001_0db8 << 96, 32), Ok(None));
        assert!(unmap_bits(mapped, 64).is_err());
    }

    #[test]
    fn config_lists_take_the_ipv4_form() {
        #[derive(Deserialize)]
        struct Lists {
            #[serde(deserialize_with = "deserialize_nets")]
            deny: Vec<IpNet>,
        }
        let l: Lists = toml::from_str(r#"deny = ["::ffff:192.0.2.25", "2001:db8::/32"]"#).unwrap();
        assert_eq!(
            l.deny,
            ["192.0.2.25/32", "2001:db8::/32"].map(|s| s.parse::<IpNet>().unwrap())
        );
        let e = toml::from_str::<Lists>(r#"deny = ["::ffff:192.0.2.0/64"]"#)
            .err()
            .unwrap();
        assert!(e.to_string().contains("shorter than /96"), "{e}");
    }
}
