//! [`NewPeerEvent`]: what the datapath tells userspace about a new unknown peer.

/// A new unknown peer, sent from the datapath to userspace over the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewPeerEvent {
    /// Source address, network byte order; IPv4 uses the first 4 bytes, the rest are zero.
    pub addr: [u8; 16],
    /// [`crate::FAMILY_V4`] or [`crate::FAMILY_V6`].
    pub family: u8,
    pub _pad: u8,
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
    pub const fn new(addr: [u8; 16], family: u8, dst_port: u16, ifindex: u32, ts_ns: u64) -> Self {
        Self {
            addr,
            family,
            _pad: 0,
            dst_port,
            ifindex,
            ts_ns,
        }
    }
}
