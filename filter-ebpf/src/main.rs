//! mxscreen datapath: two entry points (XDP and tc ingress) around one decision function,
//! plus the clock sampler userspace runs to calibrate the datapath's clock.
//! Fails open everywhere: only a TCP SYN (ACK clear) to a configured port from a source that
//! the maps deny, limit or hold is ever dropped.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "the atomic intrinsics: core's atomics have no read-modify-write on the bpf target"
)]

mod atomic;
mod cache;
mod churn;
mod clock;
mod decision;
mod family;
mod maps;
mod parse;
mod screen;
mod slow;
mod zeroed;

use aya_ebpf::{
    bindings::{__sk_buff, TC_ACT_SHOT, xdp_action, xdp_md},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    parse::{MAX_VLAN_TAGS, Packet, Parsed, READ_MAX, parse},
    screen::{Fate, screen},
    slow::Ingress,
};

/// tc "continue": TC_ACT_UNSPEC for clsact, TCX_NEXT for tcx. Unlike TC_ACT_OK it lets any
/// later tc program see the packet too, and passes it if there is none.
const TC_NEXT: i32 = -1;
/// Bytes of headers the tc program wants in the linear part of the skb at first: Ethernet,
/// two VLAN tags, IPv4 with options or IPv6 with a few extension headers, and TCP with
/// options fit. A longer chain (up to [`parse::READ_MAX`]) is pulled when the walk needs it.
const TC_PULL_LEN: u32 = 256;

/// An XDP frame's interface.
#[derive(Clone, Copy)]
struct XdpIngress(*mut xdp_md);

impl Ingress for XdpIngress {
    #[inline(always)]
    fn ifindex(self) -> u32 {
        // SAFETY: the kernel's xdp_md for this run.
        unsafe { (*self.0).ingress_ifindex }
    }
}

/// A tc frame's interface.
#[derive(Clone, Copy)]
struct TcIngress(*mut __sk_buff);

impl Ingress for TcIngress {
    #[inline(always)]
    fn ifindex(self) -> u32 {
        // SAFETY: the kernel's __sk_buff for this run.
        unsafe { (*self.0).ifindex }
    }
}

#[xdp]
pub fn mxscreen_xdp(ctx: XdpContext) -> u32 {
    // XDP sees the frame as it came: every VLAN tag is in it.
    let parsed = parse(&Packet::new(ctx.data(), ctx.data_end()), MAX_VLAN_TAGS);
    match screen(parsed, XdpIngress(ctx.ctx)) {
        Fate::Pass => xdp_action::XDP_PASS,
        Fate::Drop => xdp_action::XDP_DROP,
    }
}

#[classifier]
pub fn mxscreen_tc(ctx: TcContext) -> i32 {
    // The kernel has taken the outer VLAN tag off into the skb by now (skb_vlan_untag), so
    // the frame may carry one tag fewer in its data.
    // SAFETY: the kernel's __sk_buff for this run.
    let untagged = unsafe { (*ctx.skb.skb).vlan_present } != 0;
    let tags = MAX_VLAN_TAGS - usize::from(untagged);
    // The skb may keep headers in paged fragments; direct packet access only sees the linear
    // part. Pull what we need when it is short (a no-op cost on the usual linear skb).
    let linear = |ctx: &TcContext| (ctx.data_end() - ctx.data()) as u32;
    let want = ctx.len().min(TC_PULL_LEN);
    if linear(&ctx) < want {
        let _ = ctx.pull_data(want);
    }
    let mut parsed = parse(&Packet::new(ctx.data(), ctx.data_end()), tags);
    // A header chain going on past the first pull (IPv6 extension headers beyond 256 bytes
    // of a paged skb, as a NIC that copies only the first bytes into the head leaves it):
    // pull what the walk can read and walk again, so a deny list is not passed by a long
    // chain. Only such frames pay for it.
    if matches!(parsed, Parsed::Malformed) {
        let all = ctx.len().min(READ_MAX as u32);
        if linear(&ctx) < all && ctx.pull_data(all).is_ok() {
            parsed = parse(&Packet::new(ctx.data(), ctx.data_end()), tags);
        }
    }
    match screen(parsed, TcIngress(ctx.skb.skb)) {
        Fate::Pass => TC_NEXT,
        Fate::Drop => TC_ACT_SHOT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects any program that could get here.
    loop {}
}

/// GPL-compatible licence, needed for some helpers (and honest: the program is dual-licensed).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
