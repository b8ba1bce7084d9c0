//! Reading what the table counted: the named counters (one per outcome, named as the eBPF
//! datapath's `Counter`s, and one per feed) and the per-element counters of the sets that have
//! them, through `nft -j` (reads happen on `stats`, `list` and metrics scrapes, not per SYN).

use std::{collections::HashMap, net::IpAddr, os::fd::OwnedFd};

use anyhow::{Context as _, Result};
use filter_common::Counter;
use serde_json::Value;

use super::ruleset;

/// The `nftables` array of an `nft -j` answer.
fn objects(json: &str) -> Result<Vec<Value>> {
    let v: Value = serde_json::from_str(json).context("nft -j printed something else than JSON")?;
    Ok(v.get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

/// Every named counter of the table: name → packets.
pub fn named(netns: &OwnedFd, table: &str) -> Result<HashMap<String, u64>> {
    let out = ruleset::query(netns, &["-j", "list", "counters", "table", "netdev", table])?;
    let mut m = HashMap::new();
    for o in objects(&out)? {
        if let Some(c) = o.get("counter") {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            let packets = c.get("packets").and_then(Value::as_u64).unwrap_or(0);
            m.insert(name.to_owned(), packets);
        }
    }
    Ok(m)
}

/// The outcome counters, indexed by [`Counter`] (missing ones read 0).
pub fn outcomes(named: &HashMap<String, u64>) -> [u64; Counter::COUNT as usize] {
    let mut out = [0; Counter::COUNT as usize];
    for c in Counter::ALL {
        out[c as usize] = named.get(c.name()).copied().unwrap_or(0);
    }
    out
}

/// The hits of every element of a set with counters: key (an address, or a prefix's network)
/// → packets.
pub fn element_hits(
    netns: &OwnedFd,
    table: &str,
    set: &str,
    map: bool,
) -> Result<HashMap<IpAddr, u64>> {
    let what = if map { "map" } else { "set" };
    let out = ruleset::query(netns, &["-j", "list", what, "netdev", table, set])?;
    let mut m = HashMap::new();
    for o in objects(&out)? {
        let Some(s) = o.get(what) else { continue };
        for e in s
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some((net, packets)) = element(e) {
                m.insert(net, packets);
            }
        }
    }
    Ok(m)
}

/// One element of `nft -j`: a bare key, `{"elem": {"val": KEY, "counter": …}}`, or a map's
/// `[that, DATA]`.
fn element(e: &Value) -> Option<(IpAddr, u64)> {
    let e = match e.as_array() {
        Some(pair) => pair.first()?,
        None => e,
    };
    let (val, packets) = match e.get("elem") {
        Some(inner) => (
            inner.get("val")?,
            inner
                .get("counter")
                .and_then(|c| c.get("packets"))
                .and_then(Value::as_u64)
                .unwrap_or(0),
        ),
        None => (e, 0),
    };
    Some((val.as_str()?.parse().ok()?, packets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_counters_and_elements() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"counter": {"family": "netdev", "name": "dropped_deny", "table": "mxscreen", "handle": 4, "packets": 7, "bytes": 420}}]}"#;
        let objs = objects(json).unwrap();
        assert_eq!(objs.len(), 2);
        let map = r#"{"elem": {"val": "2001:db8::1", "counter": {"packets": 3, "bytes": 0}, "timeout": 100, "expires": 97}}"#;
        let v: Value = serde_json::from_str(map).unwrap();
        assert_eq!(element(&v), Some(("2001:db8::1".parse().unwrap(), 3)));
        let pair: Value = serde_json::from_str(&format!(
            "[{map}, {{\"goto\": {{\"target\": \"v_drop\"}}}}]"
        ))
        .unwrap();
        assert_eq!(element(&pair).unwrap().1, 3);
    }
}
