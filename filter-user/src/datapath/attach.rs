//! Attaching the datapath to interfaces: native XDP, tc (tcx on kernels that have it) or
//! generic XDP, with `auto` trying them in that order ([`AUTO_ORDER`]) and saying which it
//! got.

use std::{fmt, io};

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        tc::{NlOptions, SchedClassifierLinkId, TcAttachOptions, qdisc_add_clsact},
        xdp::XdpLinkId,
    },
};
use filter_common::program_names;
use serde::{Deserialize, Serialize};

/// What the operator asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AttachMode {
    /// Native XDP, else tc, else generic XDP.
    #[default]
    Auto,
    /// Native (driver) XDP only: fastest, drops before any skb is allocated.
    Xdp,
    /// Generic (skb) XDP: works on any interface, after skb allocation, and runs for every
    /// packet the interface receives (tc runs only for what reaches the stack's ingress).
    XdpGeneric,
    /// tc ingress (tcx link on kernels >= 6.6, clsact otherwise).
    Tc,
}

/// What an interface actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttachedMode {
    XdpNative,
    XdpGeneric,
    Tc,
    /// The nftables backend's rules on the interface's netdev ingress hook.
    Nftables,
}

impl AttachedMode {
    /// The name `status --json` and the metrics use (`xdp-native`, `xdp-generic`, `tc`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::XdpNative => "xdp-native",
            Self::XdpGeneric => "xdp-generic",
            Self::Tc => "tc",
            Self::Nftables => "nftables",
        }
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp (native)",
            Self::XdpGeneric => "xdp (generic)",
            Self::Tc => "tc",
            Self::Nftables => "nftables (netdev ingress)",
        })
    }
}

enum Link {
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
}

/// One attachment. Links are file-descriptor based (bpf_link / tcx), so they go away with the
/// process even on `kill -9`. The tc path of kernels before 6.6 (netlink) outlives the
/// process; there the daemon's heartbeat in the config map makes the datapath pass
/// everything within seconds. Either way a dead daemon never keeps dropping mail. Call
/// [`Attached::detach`] for an orderly exit.
pub struct Attached {
    pub iface: String,
    pub mode: AttachedMode,
    /// The interface's index when attached: the same name under another index is another
    /// interface (deleted and made again), which the program is not on.
    pub ifindex: u32,
    link: Link,
}

impl Attached {
    pub fn detach(self, ebpf: &mut Ebpf) -> Result<()> {
        match self.link {
            Link::Xdp(id) => xdp(ebpf)?.detach(id)?,
            Link::Tc(id) => tc(ebpf)?.detach(id)?,
        }
        Ok(())
    }
}

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let p = ebpf
        .program_mut(program_names::XDP)
        .ok_or_else(|| anyhow!("XDP program missing"))?;
    Ok(p.try_into()?)
}

fn tc(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let p = ebpf
        .program_mut(program_names::TC)
        .ok_or_else(|| anyhow!("tc program missing"))?;
    Ok(p.try_into()?)
}

/// The kernel's index of interface `iface`; 0 when there is none of that name.
pub fn ifindex_of(iface: &str) -> u32 {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return 0;
    };
    // SAFETY: a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// Attaches to `iface` in `mode` (see [`AttachMode`]).
pub fn attach(ebpf: &mut Ebpf, iface: &str, mode: AttachMode) -> Result<Attached> {
    let ifindex = ifindex_of(iface);
    let attached = |mode, link| Attached {
        iface: iface.to_owned(),
        mode,
        ifindex,
        link,
    };
    match mode {
        AttachMode::Xdp => {
            attach_xdp(ebpf, iface, XdpMode::Driver).map(|l| attached(AttachedMode::XdpNative, l))
        }
        AttachMode::XdpGeneric => {
            attach_xdp(ebpf, iface, XdpMode::Skb).map(|l| attached(AttachedMode::XdpGeneric, l))
        }
        AttachMode::Tc => attach_tc(ebpf, iface).map(|l| attached(AttachedMode::Tc, l)),
        AttachMode::Auto => attach_auto(ebpf, iface).map(|(mode, link)| attached(mode, link)),
    }
}

/// What `auto` tries, in order. Native XDP first: it drops before the kernel allocates
/// anything. Then tc before generic XDP: both see the packet as an skb, but generic XDP
/// runs for every packet the interface receives and may first copy it into one linear
/// buffer with XDP's headroom, while a tc classifier reads the skb as it is.
pub const AUTO_ORDER: [AttachedMode; 3] = [
    AttachedMode::XdpNative,
    AttachedMode::Tc,
    AttachedMode::XdpGeneric,
];

/// `auto`: each mode of [`AUTO_ORDER`] until one works; a missing interface or privilege
/// stops at once (no other mode would fare better). Each failure is logged with its reason,
/// and all of them are in the error if none worked.
fn attach_auto(ebpf: &mut Ebpf, iface: &str) -> Result<(AttachedMode, Link)> {
    let mut failed: Vec<(AttachedMode, anyhow::Error)> = Vec::new();
    for mode in AUTO_ORDER {
        let tried = match mode {
            AttachedMode::XdpNative => attach_xdp(ebpf, iface, XdpMode::Driver),
            AttachedMode::Tc => attach_tc(ebpf, iface),
            AttachedMode::XdpGeneric => attach_xdp(ebpf, iface, XdpMode::Skb),
            // Not an eBPF mode: never in AUTO_ORDER.
            AttachedMode::Nftables => continue,
        };
        match tried {
            Ok(link) => return Ok((mode, link)),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                tracing::info!(iface, mode = %mode, reason = %e, "attach mode unavailable; trying the next");
                failed.push((mode, e));
            }
        }
    }
    let why: Vec<String> = failed
        .iter()
        .map(|(mode, e)| format!("{mode}: {e:#}"))
        .collect();
    Err(anyhow!(
        "{iface}: no attach mode worked: {}",
        why.join("; ")
    ))
}

fn attach_xdp(ebpf: &mut Ebpf, iface: &str, mode: XdpMode) -> Result<Link> {
    let what = if mode == XdpMode::Driver {
        "native XDP"
    } else {
        "generic XDP"
    };
    xdp(ebpf)?
        .attach(iface, mode)
        .map(Link::Xdp)
        .map_err(|e| explain(iface, what, e))
}

/// Set (to anything) to force the pre-6.6 tc path — a clsact qdisc and a netlink filter — on
/// any kernel. Such a filter outlives the daemon's process, so the tests use this to prove
/// that the heartbeat still fails open there (`datapath.stale_after`, see daemon::reactor).
pub const FORCE_NETLINK_ENV: &str = "MXSCREEN_TC_NETLINK";

fn attach_tc(ebpf: &mut Ebpf, iface: &str) -> Result<Link> {
    let prog = tc(ebpf)?;
    if std::env::var_os(FORCE_NETLINK_ENV).is_some() {
        // EEXIST when the qdisc is there already, which is what we want.
        let _ = qdisc_add_clsact(iface);
        return prog
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::Netlink(NlOptions::default()),
            )
            .map(Link::Tc)
            .map_err(|e| explain(iface, "tc (netlink)", e));
    }
    match prog.attach(iface, TcAttachType::Ingress) {
        Ok(id) => Ok(Link::Tc(id)),
        // Before tcx (kernel < 6.6) the classifier needs a clsact qdisc; add it and retry.
        Err(first) => {
            if qdisc_add_clsact(iface).is_ok()
                && let Ok(id) = prog.attach(iface, TcAttachType::Ingress)
            {
                return Ok(Link::Tc(id));
            }
            Err(explain(iface, "tc", first))
        }
    }
}

fn errno(e: &ProgramError) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        source = err.source();
    }
    None
}

/// The error tagged with `AttachError` so `auto` knows not to fall back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FinalAttachError(String);

fn is_final(e: &anyhow::Error) -> bool {
    e.downcast_ref::<FinalAttachError>().is_some()
}

/// Turns the kernel's answer into a sentence naming the interface and what to do.
fn explain(iface: &str, what: &str, e: ProgramError) -> anyhow::Error {
    if let ProgramError::UnknownInterface { .. } = e {
        return FinalAttachError(format!("{iface}: no such interface (see `ip link`)")).into();
    }
    match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => FinalAttachError(format!(
            "{iface}: {what}: permission denied: run as root (CAP_BPF and CAP_NET_ADMIN)"
        ))
        .into(),
        Some(libc::EBUSY) | Some(libc::EEXIST) => anyhow!(
            "{iface}: {what}: another program is already attached (see `bpftool net show dev {iface}`)"
        ),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
            anyhow!(
                "{iface}: {what}: not supported by this interface or driver ({})",
                chain(&e)
            )
        }
        Some(libc::ENODEV) => FinalAttachError(format!("{iface}: no such interface")).into(),
        _ => anyhow!("{iface}: {what}: {}", chain(&e)),
    }
}

/// The error and its causes on one line: aya's syscall errors keep the kernel's errno in the
/// source, which is the part the operator needs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One spelling of each mode: `name` is what serde writes in `status --json`.
    /// `auto` tries tc before generic XDP (which runs for every packet of the interface).
    #[test]
    fn auto_tries_native_then_tc_then_generic() {
        assert_eq!(
            AUTO_ORDER,
            [
                AttachedMode::XdpNative,
                AttachedMode::Tc,
                AttachedMode::XdpGeneric
            ]
        );
    }

    #[test]
    fn attached_mode_names_match_json() {
        for m in [
            AttachedMode::XdpNative,
            AttachedMode::XdpGeneric,
            AttachedMode::Tc,
        ] {
            assert_eq!(serde_json::to_value(m).unwrap(), m.name());
        }
    }
}
