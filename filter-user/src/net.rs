//! Addresses and prefixes as operators write them: `203.0.113.7` is the same as
//! `203.0.113.7/32` (and an IPv6 address its /128), on the command line and in the config.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

/// `ADDR` or `ADDR/LEN`; a bare address is its own /32 or /128.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    s.parse::<IpNet>()
        .map_err(|_| format!("not an IP address or CIDR prefix: {s:?}"))
}

/// Serde `deserialize_with` for a list of [`parse_net`] strings.
pub fn deserialize_nets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse_net(s).map_err(de::Error::custom))
        .collect()
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
}
