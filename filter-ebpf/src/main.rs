//! mxscreen datapath: two entry points (XDP and tc ingress) around one verdict function.
//! Fails open everywhere: only a TCP SYN (ACK clear) to a configured port from a source that
//! the maps deny, limit or hold is ever dropped.
#![no_std]
#![no_main]
// atomic_xadd for the shared hit counters (see screen::bump).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core_intrinsics: the bpf target lacks AtomicU64::fetch_add"
)]

mod maps;
mod parse;
mod screen;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::screen::{Decision, screen};

/// tc "continue": TC_ACT_UNSPEC for clsact, TCX_NEXT for tcx. Unlike TC_ACT_OK it lets any
/// later tc program see the packet too, and passes it if there is none.
const TC_NEXT: i32 = -1;
/// Bytes of headers the tc program wants in the linear part of the skb: Ethernet + two VLAN
/// tags + the longest IPv6 chain we walk + TCP flags fits easily.
const TC_PULL_LEN: u32 = 256;

#[xdp]
pub fn mxscreen_xdp(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the kernel's xdp_md for this run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    match screen(ctx.data(), ctx.data_end(), ifindex) {
        Decision::Pass => xdp_action::XDP_PASS,
        Decision::Drop => xdp_action::XDP_DROP,
    }
}

#[classifier]
pub fn mxscreen_tc(ctx: TcContext) -> i32 {
    // The skb may keep headers in paged fragments; direct packet access only sees the linear
    // part. Pull what we need when it is short (a no-op cost on the usual linear skb).
    let want = ctx.len().min(TC_PULL_LEN);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    // SAFETY: ctx.skb.skb is the kernel's __sk_buff for this run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match screen(ctx.data(), ctx.data_end(), ifindex) {
        Decision::Pass => TC_NEXT,
        Decision::Drop => TC_ACT_SHOT,
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
