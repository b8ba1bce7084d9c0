//! [`NewPeerEvent`]: what the datapath tells userspace about a new unknown peer.

/// A new unknown peer, sent from the datapath to userspace over the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPeerEvent {
    /// Source address, network byte order; IPv4 uses the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    /// Why the datapath reported this SYN: an [`EventWhy`] as u8.
    pub why: u8,
    /// Destination port of the SYN, host byte order.
    pub dst_port: u16,
    /// Interface the SYN arrived on.
    pub ifindex: u32,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the SYN.
    pub ts_ns: u64,
}

impl NewPeerEvent {
    /// An event for a source address in the datapath's 16-byte form (IPv4 in the first four
    /// bytes, `family` saying which).
    pub const fn new(
        addr: [u8; 16],
        family: u8,
        dst_port: u16,
        ifindex: u32,
        ts_ns: u64,
        why: EventWhy,
    ) -> Self {
        Self {
            addr,
            family,
            why: why as u8,
            dst_port,
            ifindex,
            ts_ns,
        }
    }
}

/// Why a [`NewPeerEvent`] was sent: lets userspace tell sources with a real TCP stack (they
/// retransmit, or come back) from one-SYN spoofed sources.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventWhy {
    /// The first SYN the datapath reports for this source.
    First = 0,
    /// Another SYN while the source is held/unknown and not yet evaluated (a retransmit, or
    /// its earlier event was not sent for the event budget, or the engine turned it away):
    /// proof of a real TCP stack.
    Again = 1,
    /// The source had a verdict that expired, or was last reported more than
    /// `dedup_window` ago: a returning sender.
    Back = 2,
}

impl EventWhy {
    /// The value of a stored byte; an unknown one reads as [`EventWhy::First`].
    pub const fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Again,
            2 => Self::Back,
            _ => Self::First,
        }
    }
}
