//! Scraping a daemon's metrics endpoint inside a test namespace, and reading the text format.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::netns::NetNs;

/// `METHOD PATH` over HTTP/1.0 from inside `ns`: the status code and the body.
pub fn http(ns: &NetNs, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let raw = ns.enter(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to the metrics endpoint {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("reading the response");
        raw
    });
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw}"));
    (status, body.to_owned())
}

/// `GET /metrics`, asserting a 200 in the text format.
pub fn scrape(ns: &NetNs, addr: SocketAddr) -> String {
    let (status, body) = http(ns, addr, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// Every sample by its series as written (`name{label="v",...}`).
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}
