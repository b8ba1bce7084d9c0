//! Test frames, built with etherparse so the checksums and lengths are those of real packets.

use std::net::IpAddr;

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
    SingleVlanHeader, VlanId,
};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Destination of every test frame: documentation addresses only.
pub const DST_V4: [u8; 4] = [192, 0, 2, 254];
pub const DST_V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xfe,
];

/// TCP flags of a test segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tcp {
    Syn,
    SynAck,
    Ack,
}

/// Layer 4 of a test frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp { dst_port: u16, flags: Tcp },
    Udp { dst_port: u16 },
    Icmp,
}

/// Which fragment of a packet a test frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// The first: IPv4 MF set; IPv6 a fragment header with M set, both at offset 0.
    First,
    /// A later one, at offset 24 (3 units) with no more to come, whose data is the segment
    /// the frame describes: bytes that look like a TCP header but are not one.
    Later,
    /// IPv6 only: a fragment header with offset 0 and M clear (RFC 6946), a whole packet.
    Atomic,
}

/// Description of one test frame; [`Frame::build`] turns it into bytes.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub l4: L4,
    /// 0, 1 (802.1Q) or 2 (802.1ad outer + 802.1Q inner) VLAN tags.
    pub vlans: u8,
    /// IPv4: add 8 bytes of options (IHL 7). IPv6: add hop-by-hop, routing and destination
    /// options headers.
    pub options: bool,
    pub fragment: Fragment,
}

impl Frame {
    /// A plain SYN from `src` to port 25.
    pub fn syn(src: IpAddr) -> Self {
        Self::tcp(src, 25, Tcp::Syn)
    }

    pub fn tcp(src: IpAddr, dst_port: u16, flags: Tcp) -> Self {
        Self {
            src,
            l4: L4::Tcp { dst_port, flags },
            vlans: 0,
            options: false,
            fragment: Fragment::Whole,
        }
    }

    pub fn vlans(mut self, n: u8) -> Self {
        self.vlans = n;
        self
    }

    pub fn options(mut self) -> Self {
        self.options = true;
        self
    }

    /// The first fragment of the packet (see [`Fragment`]).
    pub fn fragment(self) -> Self {
        self.fragmented(Fragment::First)
    }

    pub fn fragmented(mut self, f: Fragment) -> Self {
        self.fragment = f;
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let ip = self.ip_headers();
        let ip_step = match self.vlans {
            0 => eth.ip(ip),
            1 => eth.single_vlan(VlanId::try_new(100).unwrap()).ip(ip),
            2 => eth
                .vlan(etherparse::VlanHeader::Double(
                    etherparse::DoubleVlanHeader {
                        outer: SingleVlanHeader {
                            vlan_id: VlanId::try_new(200).unwrap(),
                            ether_type: etherparse::EtherType::VLAN_TAGGED_FRAME,
                            ..Default::default()
                        },
                        inner: SingleVlanHeader {
                            vlan_id: VlanId::try_new(100).unwrap(),
                            ..Default::default()
                        },
                    },
                ))
                .ip(ip),
            n => panic!("{n} VLAN tags not supported by the test builder"),
        };
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { dst_port, flags } => {
                let tcp = ip_step.tcp(40000, dst_port, 1000, 64240);
                let tcp = match flags {
                    Tcp::Syn => tcp.syn(),
                    Tcp::SynAck => tcp.syn().ack(1),
                    Tcp::Ack => tcp.ack(1),
                };
                tcp.write(&mut out, &[]).unwrap();
            }
            L4::Udp { dst_port } => ip_step
                .udp(40000, dst_port)
                .write(&mut out, &[0; 8])
                .unwrap(),
            L4::Icmp => match self.src {
                IpAddr::V4(_) => ip_step
                    .icmpv4_echo_request(1, 1)
                    .write(&mut out, &[0; 8])
                    .unwrap(),
                IpAddr::V6(_) => ip_step
                    .icmpv6_echo_request(1, 1)
                    .write(&mut out, &[0; 8])
                    .unwrap(),
            },
        }
        if self.vlans == 2 {
            // etherparse writes the outer tag type as given; 802.1ad uses 0x88a8 for the frame
            // ethertype. Patch it so the frame is a real QinQ frame.
            out[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        }
        out
    }

    fn ip_headers(&self) -> IpHeaders {
        let proto = match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp { .. } => IpNumber::UDP,
            L4::Icmp => match self.src {
                IpAddr::V4(_) => IpNumber::ICMP,
                IpAddr::V6(_) => IpNumber::IPV6_ICMP,
            },
        };
        match self.src {
            IpAddr::V4(src) => {
                let mut h = Ipv4Header::new(0, 64, proto, src.octets(), DST_V4).unwrap();
                if self.options {
                    // Two NOPs, then a 6-byte experimental option: 8 bytes, IHL 7.
                    h.options = Ipv4Options::from([1, 1, 0x9e, 6, 0, 0, 0, 0]);
                }
                match self.fragment {
                    Fragment::Whole | Fragment::Atomic => {}
                    Fragment::First => h.more_fragments = true,
                    Fragment::Later => {
                        h.fragment_offset = etherparse::IpFragOffset::try_new(3).unwrap();
                    }
                }
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            IpAddr::V6(src) => {
                let h = Ipv6Header {
                    hop_limit: 64,
                    source: src.octets(),
                    destination: DST_V6,
                    ..Default::default()
                };
                let mut ext = Ipv6Extensions::default();
                if self.options {
                    let pad = [1u8, 4, 0, 0, 0, 0];
                    ext.hop_by_hop_options = Some(Ipv6RawExtHeader::new_raw(proto, &pad).unwrap());
                    ext.routing = Some(Ipv6RoutingExtensions {
                        routing: Ipv6RawExtHeader::new_raw(proto, &[0, 0, 0, 0, 0, 0]).unwrap(),
                        final_destination_options: Some(
                            Ipv6RawExtHeader::new_raw(proto, &pad).unwrap(),
                        ),
                    });
                    ext.destination_options = Some(Ipv6RawExtHeader::new_raw(proto, &pad).unwrap());
                }
                let (offset, more) = match self.fragment {
                    Fragment::Whole => (None, false),
                    Fragment::First => (Some(0), true),
                    Fragment::Later => (Some(3), false),
                    Fragment::Atomic => (Some(0), false),
                };
                if let Some(offset) = offset {
                    ext.fragment = Some(Ipv6FragmentHeader::new(
                        proto,
                        etherparse::IpFragOffset::try_new(offset).unwrap(),
                        more,
                        7,
                    ));
                }
                IpHeaders::Ipv6(h, ext)
            }
        }
    }
}

/// An ARP request (not IP at all).
pub fn arp() -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&DST_MAC);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&0x0806u16.to_be_bytes());
    // htype 1, ptype IPv4, hlen 6, plen 4, op request, sender/target.
    out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&[192, 0, 2, 1]);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&DST_V4);
    out
}

/// Cuts `frame` to `len` bytes and rewrites the IP length field to match, as a sender of a
/// short but self-consistent packet would. (The kernel refuses tc test input whose IP length
/// disagrees with the frame, so this is how truncated headers reach the tc program.)
pub fn truncate_consistently(frame: &[u8], len: usize) -> Vec<u8> {
    let mut out = frame[..len].to_vec();
    let mut off = 14;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([frame[off + 2], frame[off + 3]]);
        off += 4;
    }
    match ethertype {
        0x0800 if len >= off + 4 => {
            out[off + 2..off + 4].copy_from_slice(&((len - off) as u16).to_be_bytes())
        }
        0x86dd if len >= off + 40 => {
            out[off + 4..off + 6].copy_from_slice(&((len - off - 40) as u16).to_be_bytes())
        }
        _ => {}
    }
    out
}
