//! The datapath attached to a real interface: a veth pair between two namespaces, real TCP
//! handshakes from the client to listeners on the server, in every attach mode.
//! Needs root; run by `cargo xtask test`.

use std::{
    net::{IpAddr, SocketAddr, TcpListener},
    time::Duration,
};

use filter_common::{ListEntry, Reason};
use ipnet::IpNet;
use mxscreen::datapath::{
    self, AttachMode, DatapathMaps, ListKind, LoadOptions, MapSizes, attach::AttachedMode,
};
use mxscreen_tests::netns::{CLIENT_V4, CLIENT_V6, SERVER_IFACE, SERVER_V4, SERVER_V6, Wire};

/// Long enough for a handshake on a veth, short enough that a dropped SYN (first retransmit
/// after 1 s) is not rescued by its retransmission.
const REFUSED_WITHIN: Duration = Duration::from_millis(800);
const CONNECTS_WITHIN: Duration = Duration::from_secs(5);

fn manual() -> ListEntry {
    ListEntry::new(Reason::Manual, 0)
}

fn host(s: &str) -> IpNet {
    IpNet::from(s.parse::<IpAddr>().unwrap())
}

#[track_caller]
fn assert_connects(wire: &Wire, src: &str, dst: SocketAddr) {
    if let Err(e) = wire.connect(src, dst, CONNECTS_WITHIN) {
        panic!("{src} -> {dst} should connect: {e}");
    }
}

#[track_caller]
fn assert_refused(wire: &Wire, src: &str, dst: SocketAddr) {
    match wire.connect(src, dst, REFUSED_WITHIN) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        Err(e) => panic!("{src} -> {dst}: expected the SYN to be dropped (a timeout), got {e}"),
        Ok(()) => panic!("{src} -> {dst} connected, but the source is blocked"),
    }
}

/// The datapath loaded with small maps, screening port 25, attached to the server's end of
/// `wire` in `mode`.
fn screening_port_25(
    wire: &Wire,
    mode: AttachMode,
) -> (aya::Ebpf, DatapathMaps, datapath::attach::Attached) {
    let mut ebpf = datapath::load(&LoadOptions {
        sizes: MapSizes::small(),
        pin_dir: None,
    })
    .unwrap_or_else(|e| panic!("load: {e:#}"));
    let mut maps = DatapathMaps::take(&mut ebpf).unwrap();
    let mut cfg = maps.config().unwrap();
    cfg.set_ports(&[25]);
    maps.set_config(&cfg).unwrap();
    let attached = wire
        .server
        .enter(|| datapath::attach(&mut ebpf, SERVER_IFACE, mode))
        .unwrap_or_else(|e| panic!("attach {mode:?}: {e:#}"));
    (ebpf, maps, attached)
}

fn scenario(mode: AttachMode, want: AttachedMode) {
    let wire = Wire::new(match mode {
        AttachMode::Auto => "au",
        AttachMode::Xdp => "xd",
        AttachMode::XdpGeneric => "xg",
        AttachMode::Tc => "tc",
    });
    let smtp4: SocketAddr = format!("{SERVER_V4}:25").parse().unwrap();
    let other4: SocketAddr = format!("{SERVER_V4}:2525").parse().unwrap();
    let smtp6: SocketAddr = format!("[{SERVER_V6}]:25").parse().unwrap();
    let other6: SocketAddr = format!("[{SERVER_V6}]:2525").parse().unwrap();
    let _listeners: Vec<TcpListener> = wire.server.enter(|| {
        [smtp4, other4, smtp6, other6]
            .iter()
            .map(|a| TcpListener::bind(a).expect("listen"))
            .collect()
    });

    let (mut ebpf, mut maps, attached) = screening_port_25(&wire, mode);
    assert_eq!(attached.mode, want, "{mode:?} attached as");

    let (blocked4, clean4) = (CLIENT_V4[0], CLIENT_V4[1]);
    let (blocked6, clean6) = (CLIENT_V6[0], CLIENT_V6[1]);
    // Unknown peers pass.
    assert_connects(&wire, blocked4, smtp4);
    assert_connects(&wire, blocked6, smtp6);

    maps.list_insert(ListKind::Deny, host(blocked4), manual())
        .unwrap();
    maps.list_insert(ListKind::Deny, host(blocked6), manual())
        .unwrap();
    assert_refused(&wire, blocked4, smtp4);
    assert_refused(&wire, blocked6, smtp6);
    // The blocked source still reaches every other port.
    assert_connects(&wire, blocked4, other4);
    assert_connects(&wire, blocked6, other6);
    // Other sources are untouched.
    assert_connects(&wire, clean4, smtp4);
    assert_connects(&wire, clean6, smtp6);
    // Allow beats deny.
    maps.list_insert(ListKind::Allow, host(blocked4), manual())
        .unwrap();
    assert_connects(&wire, blocked4, smtp4);
    assert!(maps.list_remove(ListKind::Allow, host(blocked4)).unwrap());
    assert_refused(&wire, blocked4, smtp4);
    // Removing the block restores the peer.
    assert!(maps.list_remove(ListKind::Deny, host(blocked4)).unwrap());
    assert!(maps.list_remove(ListKind::Deny, host(blocked6)).unwrap());
    assert_connects(&wire, blocked4, smtp4);
    assert_connects(&wire, blocked6, smtp6);

    // Detached, a block no longer applies (nothing of ours is left on the interface).
    maps.list_insert(ListKind::Deny, host(blocked4), manual())
        .unwrap();
    attached.detach(&mut ebpf).unwrap();
    assert_connects(&wire, blocked4, smtp4);
}

#[test]
fn native_xdp_blocks_and_unblocks_real_connections() {
    scenario(AttachMode::Xdp, AttachedMode::XdpNative);
}

#[test]
fn generic_xdp_blocks_and_unblocks_real_connections() {
    scenario(AttachMode::XdpGeneric, AttachedMode::XdpGeneric);
}

#[test]
fn tc_blocks_and_unblocks_real_connections() {
    scenario(AttachMode::Tc, AttachedMode::Tc);
}

#[test]
fn auto_mode_picks_native_xdp_on_veth() {
    scenario(AttachMode::Auto, AttachedMode::XdpNative);
}

/// `auto` on an interface whose driver has no native XDP (a bridge; the dummy driver is not in every kernel) takes tc, not
/// generic XDP: generic XDP would run for every packet the interface receives.
#[test]
fn auto_mode_prefers_tc_to_generic_xdp() {
    let wire = Wire::new("at");
    wire.server.ip(&["link", "add", "mxsbr0", "type", "bridge"]);
    wire.server.ip(&["link", "set", "mxsbr0", "up"]);
    let mut ebpf = datapath::load(&LoadOptions {
        sizes: MapSizes::small(),
        pin_dir: None,
    })
    .unwrap();
    // The premise: this driver refuses native XDP (else the test proves nothing).
    let native = wire
        .server
        .enter(|| datapath::attach(&mut ebpf, "mxsbr0", AttachMode::Xdp));
    assert!(native.is_err(), "a bridge accepted native XDP");
    let attached = wire
        .server
        .enter(|| datapath::attach(&mut ebpf, "mxsbr0", AttachMode::Auto))
        .unwrap_or_else(|e| panic!("attach auto: {e:#}"));
    assert_eq!(attached.mode, AttachedMode::Tc);
    attached.detach(&mut ebpf).unwrap();
}

#[test]
fn attach_errors_name_the_interface_and_the_reason() {
    let wire = Wire::new("er");
    let mut ebpf = datapath::load(&LoadOptions {
        sizes: MapSizes::small(),
        pin_dir: None,
    })
    .unwrap();
    let err = wire
        .server
        .enter(|| datapath::attach(&mut ebpf, "nosuch0", AttachMode::Auto))
        .err()
        .expect("must fail");
    assert_eq!(
        format!("{err:#}"),
        "nosuch0: no such interface (see `ip link`)"
    );
    // A second native XDP program on the same interface is refused with the reason.
    let mut other = datapath::load(&LoadOptions {
        sizes: MapSizes::small(),
        pin_dir: None,
    })
    .unwrap();
    let _first = wire
        .server
        .enter(|| datapath::attach(&mut ebpf, SERVER_IFACE, AttachMode::Xdp))
        .unwrap();
    let err = wire
        .server
        .enter(|| datapath::attach(&mut other, SERVER_IFACE, AttachMode::Xdp))
        .err()
        .expect("must fail");
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with("vs: native XDP: another program is already attached"),
        "{msg}"
    );
}

/// What tc sees of a frame is what XDP sees, where the kernel hands it over differently:
///
/// - a SYN behind an IPv6 header chain that goes on past the tc program's first pull (a
///   304-byte destination options header) in a paged skb — a frame over a page that
///   AF_PACKET gives 14 linear bytes, as a NIC that copies only the first bytes of a frame
///   into the head does — is read whole and refused, not passed as malformed;
/// - a frame with three VLAN tags, whose outer tag the kernel has taken off into the skb
///   before tc runs, is passed as XDP passes it (a third tag is not parsed), not refused.
#[test]
fn tc_reads_a_long_chain_of_a_paged_skb_and_counts_a_tag_the_kernel_took_off() {
    use filter_common::Counter;
    use mxscreen_tests::{flood::Flood, packets::Frame};

    let wire = Wire::new("tp");
    for (ns, iface) in [(&wire.server, SERVER_IFACE), (&wire.client, "vc")] {
        ns.ip(&["link", "set", "dev", iface, "mtu", "9000"]);
    }
    let (mut ebpf, mut maps, attached) = screening_port_25(&wire, AttachMode::Tc);
    assert_eq!(attached.mode, AttachedMode::Tc);
    let (v4, v6): (IpAddr, IpAddr) = (CLIENT_V4[0].parse().unwrap(), CLIENT_V6[0].parse().unwrap());
    for ip in [v4, v6] {
        maps.list_insert(ListKind::Deny, IpNet::from(ip), manual())
            .unwrap();
    }
    let reader = maps.reader().unwrap();
    let count = |c: Counter| reader.counters().unwrap()[c as usize];
    let flood = Flood::new(&wire.client, "vc");
    let send = |frame: Vec<u8>, grows: Counter| {
        let before = count(grows);
        flood.send(&[frame], 1, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while count(grows) == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        count(grows) - before
    };

    // Ethernet (14), IPv6 (40), then the destination options header goes in front of TCP.
    let mut long = Frame::syn(v6).build();
    let tcp = long.split_off(14 + 40);
    // Two unknown options the receiver skips (type 0x1e: the top bits 00), 150 and 152
    // bytes, after next header and length: 304 bytes, 38 units of 8.
    let mut dstopts = vec![6u8, (304 / 8 - 1) as u8, 0x1e, 148];
    dstopts.extend([0u8; 148]);
    dstopts.extend([0x1e, 150]);
    dstopts.extend([0u8; 150]);
    assert_eq!(dstopts.len(), 304);
    long[14 + 6] = 60;
    let payload = vec![b'x'; 4200];
    let plen = (dstopts.len() + tcp.len() + payload.len()) as u16;
    long[14 + 4..14 + 6].copy_from_slice(&plen.to_be_bytes());
    long.extend(dstopts);
    long.extend(tcp);
    long.extend(payload);
    assert_eq!(
        send(long, Counter::DroppedDeny),
        1,
        "a SYN behind a 304-byte header chain in a paged skb was not refused; counters {:?}",
        reader.counters().unwrap()
    );

    // 802.1ad, then two 802.1Q tags, then IPv4: a third tag before the ethertype.
    let mut tagged = Frame::syn(v4).vlans(2).build();
    tagged.splice(20..20, [0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(
        send(tagged, Counter::PassedNotSubject),
        1,
        "three VLAN tags: counters {:?}",
        reader.counters().unwrap()
    );
    attached.detach(&mut ebpf).unwrap();
}
