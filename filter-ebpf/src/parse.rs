//! Header walk from Ethernet to the TCP flags, bounded and verifier-friendly: every read is
//! checked against the end of the packet, every variable offset is clamped, every loop has
//! a fixed bound. Anything the walk does not understand is *not* subject to screening.
//!
//! Fragments: a later fragment (a non-zero offset) has no TCP header and is passed, counted
//! `fragment`. A first fragment, or an IPv6 atomic one (a fragment header with offset 0 and
//! no more to come: a whole packet), is walked like an unfragmented packet: its TCP header is
//! all the screening needs, so fragmenting a SYN does not get it past a deny list. A first
//! fragment too short to hold the whole TCP header (the tiny-fragment trick; no real stack
//! sends one) cannot be told a SYN: counted `fragment` and passed.

use core::mem::size_of;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// 802.1ad (QinQ) plus 802.1Q: the outer and inner tag.
pub const MAX_VLAN_TAGS: usize = 2;

const IPPROTO_TCP: u8 = 6;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers walked before giving up (RFC 8200 allows each at most once or twice).
const MAX_IPV6_EXT: usize = 6;
/// No header chain we screen ends beyond this offset. Keeps every variable offset bounded for
/// the verifier; a SYN buried deeper is counted as malformed and passed.
const MAX_L4_OFFSET: usize = 1024;
/// The farthest byte the walk reads: a TCP header (up to 60 bytes) at [`MAX_L4_OFFSET`].
/// What the tc program pulls into the linear part of a paged skb whose headers go on past
/// its first pull.
pub const READ_MAX: usize = MAX_L4_OFFSET + 64;
/// IPv4 flags and fragment offset: More Fragments, and the offset (8-octet units).
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET: u16 = 0x1fff;
/// IPv6 fragment header, bytes 2-3: the offset (8-octet units, the top 13 bits) and M.
const IPV6_FRAG_OFFSET: u16 = 0xfff8;
const IPV6_FRAG_MORE: u16 = 0x0001;

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
/// Bytes of TCP header read at once: ports (0..4) up to the flags byte (13).
const TCP_MIN_READ: usize = 14;

/// Source address of a subject SYN: where it is in the frame (valid for the whole run;
/// handed to map lookups as the key itself, with no copy).
#[derive(Clone, Copy)]
pub enum Source {
    V4(*const [u8; 4]),
    V6(*const [u8; 16]),
}

/// What the walk found.
pub enum Parsed {
    /// A TCP segment with SYN set and ACK clear; the port is checked against the config later.
    Syn { src: Source, dst_port: u16 },
    /// Well-formed, but not a TCP SYN (other protocol, SYN-ACK, established traffic...).
    Other,
    /// An IPv4 or IPv6 fragment.
    Fragment,
    /// Truncated or invalid headers, or a header chain too long to walk.
    Malformed,
}

/// Bounds-checked view of the packet between `data` and `data_end`.
pub struct Packet {
    data: usize,
    end: usize,
}

impl Packet {
    #[inline(always)]
    pub fn new(data: usize, end: usize) -> Self {
        Self { data, end }
    }

    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        if off > READ_MAX {
            return None;
        }
        let start = self.data + off;
        if start + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: [start, start + size_of::<T>()) lies inside the packet (checked above).
        Some(unsafe { core::ptr::read_unaligned(start as *const T) })
    }

    #[inline(always)]
    fn at<T>(&self, off: usize) -> *const T {
        (self.data + off) as *const T
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.read::<u8>(off)
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.read::<[u8; 2]>(off).map(u16::from_be_bytes)
    }
}

/// Walks Ethernet → (VLAN tags) → IPv4/IPv6 (→ extension headers) → TCP. `tags` is how
/// many VLAN tags the frame may still carry in its data: [`MAX_VLAN_TAGS`], less one the
/// kernel already took off into the skb (tc), so a third tag is passed on every path.
#[inline(always)]
pub fn parse(pkt: &Packet, tags: usize) -> Parsed {
    let Some(mut proto) = pkt.be16_at(12) else {
        return Parsed::Malformed;
    };
    let mut off = ETH_HLEN;
    for i in 0..MAX_VLAN_TAGS {
        if i >= tags || (proto != ETH_P_8021Q && proto != ETH_P_8021AD) {
            break;
        }
        // A tag is TCI (2 bytes) then the encapsulated ethertype.
        let Some(inner) = pkt.be16_at(off + 2) else {
            return Parsed::Malformed;
        };
        proto = inner;
        off += 4;
    }
    match proto {
        ETH_P_IP => parse_ipv4(pkt, off),
        ETH_P_IPV6 => parse_ipv6(pkt, off),
        // ARP, a third VLAN tag, MPLS, ...: not ours to judge.
        _ => Parsed::Other,
    }
}

#[inline(always)]
fn parse_ipv4(pkt: &Packet, off: usize) -> Parsed {
    // One bounds check per header: LLVM merges adjacent checks anyway, and the verifier only
    // follows a check to the pointer it was made on, so several small reads can fail to verify.
    let Some(h) = pkt.read::<[u8; 20]>(off) else {
        return Parsed::Malformed;
    };
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Parsed::Malformed;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    // A later fragment carries no TCP header (see the module comment).
    if frag & IPV4_OFFSET != 0 {
        return Parsed::Fragment;
    }
    // The whole IPv4 header, options included, must be present. For TCP the read of the
    // TCP header right behind it checks that.
    if h[9] != IPPROTO_TCP {
        if pkt.u8_at(off + ihl - 1).is_none() {
            return Parsed::Malformed;
        }
        return Parsed::Other;
    }
    // Inside the 20 bytes read above.
    let tcp = parse_tcp(pkt, off + ihl, Source::V4(pkt.at(off + 12)));
    in_first_fragment(tcp, frag & IPV4_MF != 0)
}

/// What a walk to the TCP header found, in a first fragment when `first`: a TCP header cut
/// short there is the fragment's end, not a malformed packet (see the module comment).
#[inline(always)]
fn in_first_fragment(tcp: Parsed, first: bool) -> Parsed {
    match tcp {
        Parsed::Malformed if first => Parsed::Fragment,
        found => found,
    }
}

#[inline(always)]
fn parse_ipv6(pkt: &Packet, off: usize) -> Parsed {
    let Some(h) = pkt.read::<[u8; 40]>(off) else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    // Inside the 40 bytes read above.
    let src = pkt.at(off + 8);
    let mut next = h[6];
    let mut l4 = off + 40;
    // A fragment header said more fragments follow: this is a first fragment.
    let mut first = false;
    for _ in 0..MAX_IPV6_EXT {
        match next {
            IPPROTO_TCP => {
                return in_first_fragment(parse_tcp(pkt, l4, Source::V6(src)), first);
            }
            IPV6_FRAGMENT => {
                // Next header, reserved, then the offset and M (8 bytes in all).
                let Some(f) = pkt.read::<[u8; 4]>(l4) else {
                    return Parsed::Malformed;
                };
                let offset_m = u16::from_be_bytes([f[2], f[3]]);
                if offset_m & IPV6_FRAG_OFFSET != 0 {
                    return Parsed::Fragment;
                }
                first |= offset_m & IPV6_FRAG_MORE != 0;
                next = f[0];
                l4 += 8;
                if l4 > MAX_L4_OFFSET {
                    return Parsed::Malformed;
                }
            }
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH => {
                let Some([nh, len]) = pkt.read::<[u8; 2]>(l4) else {
                    return Parsed::Malformed;
                };
                // AH counts its length in 4-octet units minus 2; the others in 8-octet
                // units not counting the first 8 octets.
                let hdr_len = if next == IPV6_AH {
                    (len as usize + 2) * 4
                } else {
                    (len as usize + 1) * 8
                };
                next = nh;
                l4 += hdr_len;
                if l4 > MAX_L4_OFFSET {
                    return Parsed::Malformed;
                }
            }
            // ICMPv6, UDP, ESP, no-next-header, ...
            _ => return Parsed::Other,
        }
    }
    if next == IPPROTO_TCP {
        return in_first_fragment(parse_tcp(pkt, l4, Source::V6(src)), first);
    }
    Parsed::Malformed
}

#[inline(always)]
fn parse_tcp(pkt: &Packet, l4: usize, src: Source) -> Parsed {
    if l4 > MAX_L4_OFFSET {
        return Parsed::Malformed;
    }
    let Some(h) = pkt.read::<[u8; TCP_MIN_READ]>(l4) else {
        return Parsed::Malformed;
    };
    // The whole TCP header (data offset, options included) must be present: a segment cut
    // short is not a SYN the stack would answer, so it is malformed, never dropped.
    let doff = ((h[12] >> 4) as usize) * 4;
    if doff < 20 || pkt.u8_at(l4 + doff - 1).is_none() {
        return Parsed::Malformed;
    }
    let flags = h[13];
    if flags & TCP_FLAG_SYN == 0 || flags & TCP_FLAG_ACK != 0 {
        return Parsed::Other;
    }
    Parsed::Syn {
        src,
        dst_port: u16::from_be_bytes([h[2], h[3]]),
    }
}
