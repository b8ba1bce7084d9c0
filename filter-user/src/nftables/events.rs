//! New peers, as the table reports them: the rule that first sees an unknown source adds it
//! to the dedup set and logs the SYN to an NFLOG group (at most once per dedup window); this
//! socket, bound to that group, turns each logged SYN into a [`NewPeer`].
//!
//! Why NFLOG and not NFQUEUE: a queued SYN could be released the moment its verdict is
//! written, but the `queue` expression is a kernel option (CONFIG_NFT_QUEUE) that kernels
//! ship without — this machine's among them — while NFLOG is part of every netfilter build.
//! NFLOG also never holds a packet in the kernel: a daemon that stops reading loses reports
//! (the socket overflows), never mail. Hold works as in the eBPF datapath: the peer's SYNs
//! are dropped for `hold_max`, and TCP's retransmission meets the verdict.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context as _, Result};
use filter_common::EventWhy;
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    nflog::{ConfigCmd, ConfigMode, ConfigNla, PacketNla, ULogMessage, config_request},
};
use netlink_sys::{Socket, constants::NETLINK_NETFILTER};
use tokio::io::{Interest, unix::AsyncFd};

use super::unknown::{BACK, FIRST};
use crate::datapath::{NewPeer, clock};

/// `SO_MEMINFO`'s array length and the index of its drop count (`SK_MEMINFO_VARS`,
/// `SK_MEMINFO_DROPS` in linux/sock_diag.h).
const SK_MEMINFO_VARS: usize = 9;
const SK_MEMINFO_DROPS: usize = 8;

/// Bytes of each logged SYN copied to the daemon: the IP header, extension headers and
/// the TCP ports fit.
pub const SNAPLEN: u32 = 128;

/// The NFLOG group socket.
pub struct NfLog {
    sock: Socket,
    buf: Vec<u8>,
    /// Reports the kernel dropped on a full socket, as it counts them (`SO_MEMINFO`'s
    /// drops): part of `events_lost` (`counters::Outcomes`).
    lost: Arc<AtomicU64>,
}

fn send_config(
    sock: &Socket,
    family: NetfilterProtoFamily,
    group: u16,
    cmd: Vec<ConfigNla>,
) -> Result<()> {
    let msg = config_request(family, group, cmd);
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    sock.send(&buf, 0).context("configuring NFLOG")?;
    let mut reply = vec![0u8; 4096];
    let n = sock
        .recv(&mut &mut reply[..], 0)
        .context("reading NFLOG's answer")?;
    let nl = NetlinkBuffer::new_checked(&reply[..n]).context("NFLOG's answer")?;
    if nl.message_type() == 2 {
        let code = i32::from_ne_bytes(nl.payload()[..4].try_into().expect("4 bytes"));
        if code != 0 {
            return Err(io::Error::from_raw_os_error(-code))
                .context("NFLOG refused the configuration");
        }
    }
    Ok(())
}

/// Whether this process holds CAP_NET_ADMIN (its effective set, `CapEff` in
/// /proc/self/status; a capability over its own user namespace's network namespaces).
fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps >> CAP_NET_ADMIN & 1 == 1)
}

impl NfLog {
    /// Binds NFLOG group `group` in the calling thread's network namespace, counting the
    /// reports a full socket loses into `lost`. Fails if another process holds the group
    /// (two daemons in one namespace) or without CAP_NET_ADMIN (EPERM both).
    pub fn bind(group: u16, lost: Arc<AtomicU64>) -> Result<Self> {
        let mut sock = Socket::new(NETLINK_NETFILTER).context("opening an NFLOG socket")?;
        sock.bind_auto().context("binding an NFLOG socket")?;
        send_config(
            &sock,
            NetfilterProtoFamily::Unspec,
            group,
            // Each report is sent at once (the kernel's default batches up to 100 for a second).
            vec![
                ConfigCmd::Bind.into(),
                ConfigMode::new_packet(SNAPLEN).into(),
                ConfigNla::QThresh(1),
            ],
        )
        .map_err(|e| {
            // The two ways it fails in practice, each with what to do about it.
            // The kernel answers EPERM both to a process without the capability and to one
            // asking for a group another socket holds: told apart by what this one may do.
            let hint = match super::errno(&e) {
                Some(libc::EPERM) if !has_net_admin() => {
                    " (it needs CAP_NET_ADMIN in this network namespace)"
                }
                Some(libc::EPERM | libc::EBUSY) => {
                    " (another process holds it: is another mxscreen running in this network namespace?)"
                }
                _ => "",
            };
            e.context(format!("binding NFLOG group {group}{hint}"))
        })?;
        // A burst of new peers must not be lost to a small buffer; beyond it, the socket
        // drops reports (ENOBUFS once, and the kernel counts each in the socket's drops:
        // `events_lost`), never packets. Without CAP_NET_ADMIN in the initial namespace
        // (an unprivileged container) the kernel refuses FORCE and the default size stays.
        let size: libc::c_int = 4 * 1024 * 1024;
        // SAFETY: setsockopt with a c_int.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.set_non_blocking(true).context("NFLOG socket")?;
        Ok(Self {
            sock,
            buf: vec![0; 256 * 1024],
            lost,
        })
    }

    /// The reports the kernel dropped on this socket so far (`SK_MEMINFO_DROPS`).
    fn drops(&self) -> Option<u64> {
        let mut mem = [0u32; SK_MEMINFO_VARS];
        let mut len = size_of_val(&mem) as libc::socklen_t;
        // SAFETY: getsockopt into an array of the given size; the kernel writes at most that.
        let r = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MEMINFO,
                mem.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        (r == 0 && len as usize >= (SK_MEMINFO_DROPS + 1) * 4)
            .then(|| u64::from(mem[SK_MEMINFO_DROPS]))
    }

    /// Every report waiting now; `Err(WouldBlock)` when there is none.
    pub fn drain(&mut self) -> io::Result<Vec<NewPeer>> {
        let mut out = Vec::new();
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Reports were lost to a full socket (counted below); the next ones are read
                // as usual.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!(
                        "NFLOG socket overflowed: some new peers were not reported (events_lost)"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off + 16 <= n {
                let Ok(nl) = NetlinkBuffer::new_checked(&self.buf[off..n]) else {
                    break;
                };
                let len = (nl.length() as usize).max(16);
                if let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(
                    &self.buf[off..(off + len).min(n)],
                ) {
                    out.extend(peer(msg));
                }
                off += len.next_multiple_of(4);
            }
        }
        if let Some(n) = self.drops() {
            self.lost.store(n, Ordering::Relaxed);
        }
        if out.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(out)
    }

    /// The socket as an async source.
    pub fn into_async(self) -> io::Result<AsyncNfLog> {
        // SAFETY: the socket owns its fd, which stays open and unchanged while the AsyncFd
        // owns the socket.
        let fd = unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }?;
        Ok(AsyncNfLog(fd))
    }
}

impl AsRawFd for NfLog {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The NFLOG socket, polled by tokio.
pub struct AsyncNfLog(AsyncFd<NfLog>);

impl AsyncNfLog {
    /// Waits for reports and returns all of them.
    pub async fn next_batch(&mut self) -> io::Result<Vec<NewPeer>> {
        loop {
            let mut guard = self.0.readable_mut().await?;
            match guard.try_io(|fd| fd.get_mut().drain()) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The new peer a logged SYN reports.
fn peer(msg: NetlinkMessage<NetfilterMessage>) -> Option<NewPeer> {
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
        ..
    }) = msg.payload
    else {
        return None;
    };
    let mut ifindex = 0;
    let mut payload = None;
    // A report without a prefix this build writes (a table of an older build, adopted):
    // a real sender's, as all reports were before the prefixes.
    let mut why = EventWhy::Again;
    for nla in nlas {
        match nla {
            PacketNla::IfIndexInDev(i) => ifindex = i,
            PacketNla::Payload(p) => payload = Some(p),
            PacketNla::Prefix(p) if p.as_bytes() == FIRST.as_bytes() => why = EventWhy::First,
            PacketNla::Prefix(p) if p.as_bytes() == BACK.as_bytes() => why = EventWhy::Back,
            _ => {}
        }
    }
    let (ip, dst_port) = parse_syn(&payload?)?;
    Some(NewPeer {
        ip,
        dst_port,
        ifindex,
        at_ns: clock::now_ns(),
        why,
    })
}

/// Source address and destination port of a logged packet (from its IP header on).
pub fn parse_syn(p: &[u8]) -> Option<(IpAddr, u16)> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(p.get(12..16)?).ok()?);
            let port = p
                .get(ihl + 2..ihl + 4)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            Some((IpAddr::V4(src), port))
        }
        6 => {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(p.get(8..24)?).ok()?);
            Some((IpAddr::V6(src), v6_port(p).unwrap_or(0)))
        }
        _ => None,
    }
}

/// The TCP destination port after the IPv6 header and its extension headers.
fn v6_port(p: &[u8]) -> Option<u16> {
    let (mut next, mut off) = (*p.get(6)?, 40usize);
    for _ in 0..8 {
        match next {
            6 => {
                return p
                    .get(off + 2..off + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]));
            }
            // Hop-by-hop, routing, destination options: length in 8-byte units after 8.
            0 | 43 | 60 => {
                next = *p.get(off)?;
                off += (usize::from(*p.get(off + 1)?) + 1) * 8;
            }
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_logged_syns() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[12..16].copy_from_slice(&[192, 0, 2, 9]);
        v4[22..24].copy_from_slice(&25u16.to_be_bytes());
        assert_eq!(parse_syn(&v4), Some(("192.0.2.9".parse().unwrap(), 25)));
        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 6;
        let a: Ipv6Addr = "2001:db8::9".parse().unwrap();
        v6[8..24].copy_from_slice(&a.octets());
        v6[42..44].copy_from_slice(&2525u16.to_be_bytes());
        assert_eq!(parse_syn(&v6), Some((IpAddr::V6(a), 2525)));
        assert_eq!(parse_syn(&[0x10]), None);
        assert_eq!(parse_syn(&v6[..30]).map(|x| x.1), Some(0));
    }
}
