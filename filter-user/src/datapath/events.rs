//! New-peer events: the datapath reports each unknown source on the `EVENTS` ring buffer;
//! this module reads the raw records and hands out typed [`NewPeer`]s, to the daemon and to
//! the kernel tests alike.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use anyhow::Result;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use filter_common::{EventWhy, FAMILY_V4, NewPeerEvent, map_names};
use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::{Interest, unix::AsyncFd};

/// A source the datapath has no decision for, as it saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPeer {
    pub ip: IpAddr,
    /// Destination port of its SYN.
    pub dst_port: u16,
    /// Interface the SYN arrived on.
    pub ifindex: u32,
    /// When, on the datapath's clock ([`super::clock`]).
    pub at_ns: u64,
    /// Why the datapath reported it: a first SYN, or a source that proved a real TCP stack.
    pub why: EventWhy,
}

impl NewPeer {
    /// A ring record as an event; `None` (and a warning) for a record of the wrong size,
    /// which would mean a datapath from another build.
    pub fn from_record(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<NewPeerEvent>() {
            tracing::warn!(
                len = bytes.len(),
                "ignoring a new-peer event of unexpected size"
            );
            return None;
        }
        // SAFETY: length checked; NewPeerEvent is plain old data, valid for any bytes.
        let ev = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NewPeerEvent>()) };
        let a = ev.addr;
        let ip = if ev.family == FAMILY_V4 {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            IpAddr::from(a)
        };
        Some(Self {
            ip,
            dst_port: ev.dst_port,
            ifindex: ev.ifindex,
            at_ns: ev.ts_ns,
            why: EventWhy::from_u8(ev.why),
        })
    }
}

/// The event ring of a loaded object.
pub struct Events {
    ring: RingBuf<MapData>,
}

impl Events {
    /// Takes the ring out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            ring: super::typed::take(ebpf, map_names::EVENTS)?,
        })
    }

    /// Every event waiting now.
    pub fn drain(&mut self) -> Vec<NewPeer> {
        let mut out = Vec::new();
        while let Some(record) = self.ring.next() {
            out.extend(NewPeer::from_record(&record));
        }
        out
    }

    /// The ring as an async source: [`AsyncEvents::next_batch`] waits for the kernel's wakeup
    /// or the drain timer.
    pub fn into_async(self) -> io::Result<AsyncEvents> {
        // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd
        // owns the ring.
        let ring = unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }?;
        // SAFETY: the timer owns its fd, which stays open while the AsyncFd owns the timer.
        let drain = unsafe {
            AsyncFd::register_with_interest(DrainTimer::every(DRAIN_EVERY)?, Interest::READABLE)
        }?;
        Ok(AsyncEvents { ring, drain })
    }
}

impl AsRawFd for Events {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// The event ring, polled by tokio.
pub struct AsyncEvents {
    ring: AsyncFd<Events>,
    drain: AsyncFd<DrainTimer>,
}

impl AsyncEvents {
    /// Waits until events arrive and returns all of them (never an empty batch twice in a
    /// row without a wakeup in between). The datapath wakes the reader when it writes the
    /// first record the reader has not read (the kernel's adaptive notification), so a lone
    /// new sender's event arrives at once; tokio does not clear a readiness that came after
    /// the drain began, so none is lost. The ring is also drained every [`DRAIN_EVERY`], a
    /// safety net that costs one wakeup a second. Cancel-safe: nothing is taken from the
    /// ring but what is returned.
    pub async fn next_batch(&mut self) -> io::Result<Vec<NewPeer>> {
        loop {
            tokio::select! {
                guard = self.ring.readable_mut() => {
                    let mut guard = guard?;
                    let batch = guard.get_inner_mut().drain();
                    guard.clear_ready();
                    return Ok(batch);
                }
                tick = self.drain.readable() => {
                    let mut tick = tick?;
                    // Reads the expirations, so the timer is readable again only at the next.
                    let _ = tick.try_io(|t| t.get_ref().0.wait().map_err(io::Error::from));
                    let batch = self.ring.get_mut().drain();
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
            }
        }
    }
}

/// How often the ring is drained without a wakeup from the datapath: a safety net only
/// (every record the reader has caught up to wakes it), so rare — an idle daemon's cost.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

/// The drain's clock: a periodic timerfd. One wakeup per period while idle; tokio's timer
/// wheel would add a second one most periods (a deadline past the next 64 ms boundary is
/// cascaded there first), and a new timer for every pass of the daemon's main loop.
struct DrainTimer(TimerFd);

impl DrainTimer {
    fn every(period: Duration) -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        timer.set(
            Expiration::Interval(TimeSpec::from_duration(period)),
            TimerSetTimeFlags::empty(),
        )?;
        Ok(Self(timer))
    }
}

impl AsRawFd for DrainTimer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_typed_events() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[192, 0, 2, 7]);
        let ev = NewPeerEvent::new(addr, FAMILY_V4, 25, 3, 99, EventWhy::First);
        // SAFETY: a plain-old-data struct viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<NewPeerEvent>())
        };
        let peer = NewPeer::from_record(bytes).unwrap();
        assert_eq!(
            peer,
            NewPeer {
                ip: "192.0.2.7".parse().unwrap(),
                dst_port: 25,
                ifindex: 3,
                at_ns: 99,
                why: EventWhy::First,
            }
        );
        let v6: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let ev = NewPeerEvent::new(
            v6.octets(),
            filter_common::FAMILY_V6,
            2525,
            1,
            5,
            EventWhy::Back,
        );
        // SAFETY: as above.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<NewPeerEvent>())
        };
        assert_eq!(NewPeer::from_record(bytes).unwrap().ip, IpAddr::V6(v6));
        assert!(NewPeer::from_record(&bytes[1..]).is_none());
    }
}
