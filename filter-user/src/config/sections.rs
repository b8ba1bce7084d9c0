//! The daemon's own sections: `[datapath]`, `[control]`, `[state]` and `[metrics]`. (The reputation
//! engine's sections live with the engine, in [`crate::reputation::config`].)
//!
//! A field's doc comment is what `mxscreen config default` prints above the key, so it is
//! written for the operator: what the key does, its default and why.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use documented::DocumentedFields;
use filter_common::MAX_PORTS;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{AttachMode, BackendChoice, FirstContact, MapSizes},
    duration,
    invalid_key::InvalidKey,
};

/// `[datapath]`: where and how the kernel program screens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct DatapathSection {
    /// Interfaces to attach to. Default: empty, meaning the interface of the default route.
    pub interfaces: Vec<String>,
    /// What refuses the SYNs. "auto" (default): the eBPF program when it loads and
    /// attaches, else nftables (status says why eBPF was not used). "ebpf": the eBPF program
    /// only. "nftables": a table of its own on the interfaces' netdev ingress hook, for hosts
    /// where BPF cannot load (LXC and Docker containers, OpenVZ, BPF forbidden); needs only
    /// CAP_NET_ADMIN.
    pub backend: BackendChoice,
    /// With the eBPF backend: auto (native XDP, else tc, else generic XDP), xdp,
    /// xdp-generic or tc. Default auto.
    pub mode: AttachMode,
    /// Destination ports screened, 1 to 64 of them. Default [25]: the MX port. Submission
    /// ports (587, 465) carry authenticated users and are better left to the MTA.
    pub ports: Vec<u16>,
    /// What an unknown peer meets before its verdict exists. "hold" (default): its SYNs are
    /// dropped for at most hold_max, so the retransmitted SYN (1 s later) meets the verdict
    /// and even a listed bot's first connection never reaches the MTA; a clean sender's
    /// first connection costs one SYN retransmit (about a second), its later ones within
    /// policy.pass_ttl nothing. Sources in lists.allow, allow entries and feeds, and sources
    /// with a cached pass are never held; observe mode never holds. "pass": its SYNs pass
    /// while it is resolved, so no mail is ever delayed, and every new sender's first
    /// connection reaches the MTA, listed or not.
    pub first_contact: FirstContact,
    /// Longest hold of an unknown peer with first_contact = "hold", above 0s and at most
    /// 30s. Default 3s:
    /// covers TCP's first SYN retransmit (1 s) and a slow DNSBL answer, and never more.
    #[serde(with = "duration")]
    pub hold_max: Duration,
    /// An unknown peer is reported to the daemon at most once per this window. Default 30s.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
    /// Map capacities (per address family). Changing them recreates the maps, losing the
    /// cached verdicts (lists are rebuilt from the config and the state file).
    pub maps: MapSizes,
    /// Where the maps are pinned (on the BPF filesystem) so verdicts survive restarts.
    /// Default /sys/fs/bpf/mxscreen.
    pub pin_dir: PathBuf,
}

impl Default for DatapathSection {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            backend: BackendChoice::Auto,
            mode: AttachMode::Auto,
            ports: vec![25],
            first_contact: FirstContact::Hold,
            hold_max: Duration::from_secs(3),
            dedup_window: Duration::from_secs(30),
            maps: MapSizes::default(),
            pin_dir: crate::datapath::load::DEFAULT_PIN_DIR.into(),
        }
    }
}

impl DatapathSection {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        let bad = |k: &str, m: String| Err(InvalidKey::new(format!("datapath.{k}"), m));
        for (i, name) in self.interfaces.iter().enumerate() {
            if let Err(why) = check_ifname(name) {
                return bad(&format!("interfaces[{i}]"), format!("{name:?} {why}"));
            }
        }
        if self.ports.is_empty() || self.ports.len() > MAX_PORTS {
            return bad(
                "ports",
                format!(
                    "{} ports given; 1 to {MAX_PORTS} are allowed",
                    self.ports.len()
                ),
            );
        }
        for (i, p) in self.ports.iter().enumerate() {
            if *p == 0 {
                return bad("ports", "port 0 is not a port; use 1 to 65535".into());
            }
            if self.ports[..i].contains(p) {
                return bad("ports", format!("port {p} is listed twice"));
            }
        }
        if self.hold_max > Duration::from_secs(30) {
            return bad(
                "hold_max",
                "more than 30s would make clean senders give up; use at most 30s".into(),
            );
        }
        if self.first_contact == FirstContact::Hold && self.hold_max.is_zero() {
            return bad(
                "hold_max",
                "0s holds nothing; set datapath.first_contact = \"pass\" not to hold new peers"
                    .into(),
            );
        }
        if self.dedup_window.is_zero() {
            return bad(
                "dedup_window",
                "must be above 0s, or every SYN of an unknown peer is reported".into(),
            );
        }
        self.maps.validate()?;
        if !self.pin_dir.is_absolute() {
            return bad(
                "pin_dir",
                format!(
                    "{:?} is relative; use an absolute path on the BPF filesystem",
                    self.pin_dir
                ),
            );
        }
        Ok(())
    }
}

/// Linux interface names: 1 to 15 bytes, no `/`, no whitespace, not `.` or `..`.
fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 15 {
        return Err("is not an interface name: 1 to 15 characters are allowed");
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err("is not an interface name: no '/', ':' or spaces, not '.' or '..'");
    }
    Ok(())
}

/// `[control]`: the operator's socket and the guard rails on what it may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct ControlSection {
    /// Unix socket of the daemon (mode 0600, root only). Default /run/mxscreen/control.sock.
    pub socket: PathBuf,
    /// Widest IPv4 prefix `block` accepts without --force, and `lists.deny` at all. Default
    /// 16: a /16 is already 65 536 addresses; a typo like `block 0.0.0.0/0` must not shut
    /// the MX.
    pub widest_block_v4: u8,
    /// Widest IPv6 prefix `block` accepts without --force, and `lists.deny` at all. Default
    /// 32 (one allocation).
    pub widest_block_v6: u8,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: crate::control::DEFAULT_SOCKET.into(),
            widest_block_v4: 16,
            widest_block_v6: 32,
        }
    }
}

impl ControlSection {
    /// The bound `net` exceeds, as (its length, the key's family suffix `v4`/`v6`), if it
    /// is wider than `widest_block_v4`/`_v6`: what a block by hand may not be without
    /// --force, and a `lists.deny` entry may not be at all.
    pub fn too_wide(&self, net: &IpNet) -> Option<(u8, &'static str)> {
        let (widest, family) = match net {
            IpNet::V4(_) => (self.widest_block_v4, "v4"),
            IpNet::V6(_) => (self.widest_block_v6, "v6"),
        };
        (net.prefix_len() < widest).then_some((widest, family))
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.socket.as_os_str().is_empty() {
            return Err(InvalidKey::new(
                "control.socket",
                "must not be empty; the default is /run/mxscreen/control.sock",
            ));
        }
        super::check_socket_path("control.socket", &self.socket)?;
        if self.widest_block_v4 > 32 {
            return Err(InvalidKey::new(
                "control.widest_block_v4",
                "an IPv4 prefix length is 0 to 32",
            ));
        }
        if self.widest_block_v6 > 128 {
            return Err(InvalidKey::new(
                "control.widest_block_v6",
                "an IPv6 prefix length is 0 to 128",
            ));
        }
        Ok(())
    }
}

/// `[state]`: where manual blocks and allows are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct StateSection {
    /// JSON file of the manual blocks and allows, written atomically on every change.
    /// Default /var/lib/mxscreen/state.json.
    pub file: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        Self {
            file: crate::state::DEFAULT_STATE_FILE.into(),
        }
    }
}

impl StateSection {
    pub fn validate(&self) -> Result<(), InvalidKey> {
        if self.file.as_os_str().is_empty() {
            return Err(InvalidKey::new(
                "state.file",
                "must not be empty; the default is /var/lib/mxscreen/state.json",
            ));
        }
        Ok(())
    }
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, DocumentedFields)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address and port to serve `GET /metrics` on (Prometheus text format), e.g.
    /// "127.0.0.1:9725" or "[::1]:9725". Default "" = off. The numbers are those of
    /// `mxscreen stats` and `status`; keep it on loopback or a management network. A change
    /// needs a restart (a reload keeps the running endpoint).
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
}

/// `Option<SocketAddr>` as a string, `""` meaning none, so `config default` can print the key.
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.map(|a| a.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            de::Error::custom(format!(
                "{text:?} is not an address and port: write e.g. \"127.0.0.1:9725\" or \"[::1]:9725\", or \"\" for off"
            ))
        })
    }
}
