//! Which interface to screen when the operator names none: the one mail arrives on, i.e. the
//! interface of the default route (IPv4, else IPv6).

use anyhow::{Result, bail};

/// Interfaces carrying a default route, IPv4 first, without duplicates.
pub fn default_route_interfaces() -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for iface in parse_v4(&v4) {
        if !out.contains(&iface) {
            out.push(iface);
        }
    }
    if out.is_empty() {
        let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
        for iface in parse_v6(&v6) {
            if !out.contains(&iface) {
                out.push(iface);
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no default route to find the mail interface by: name one with --iface or datapath.interfaces"
        );
    }
    Ok(out)
}

/// `/proc/net/route`: columns Iface, Destination (hex), ..., Mask; default = dest 0, mask 0.
fn parse_v4(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_owned())
        })
        .collect()
}

/// `/proc/net/ipv6_route`: dest (32 hex), dest prefix len (hex), ..., device last; default =
/// ::/0, excluding the unreachable catch-all on `lo`.
fn parse_v6(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dev = *f.last()?;
            (f.len() >= 10 && f[0].chars().all(|c| c == '0') && f[1] == "00" && dev != "lo")
                .then(|| dev.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_interface() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(parse_v4(v4), ["eth0"]);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth1\n\
                  00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";
        assert_eq!(parse_v6(v6), ["eth1"]);
    }
}
