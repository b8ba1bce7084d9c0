//! The programs `cargo xtask bench drop` (and `bench datapath`) measure mxscreen against:
//!
//! - `bench_drop_all`: XDP_DROP for every frame — the floor of a drop: what receiving a
//!   frame costs before any program does any work;
//! - `bench_pass_all`: XDP_PASS for every frame — the floor of a pass;
//! - `bench_tc_drop_all`, `bench_tc_pass_all`: the same floors at tc ingress, where the
//!   receivers working on socket buffers (tc, nftables, iptables) start;
//! - `bench_hash_drop`: the bare minimum a source filter does: Ethernet, IPv4 or IPv6
//!   (without extension headers), a TCP SYN to port 25, one hash lookup of the source
//!   address, drop on a hit and pass otherwise;
//! - `bench_hash_pass`: the same lookup, passing every frame: what finding a source that is
//!   to pass costs (the counterpart of a pass verdict or an allow entry);
//! - `bench_lru_insert`: the same parse, then the source inserted into an LRU hash of the
//!   size of mxscreen's per-source map, and the SYN passed: the bare minimum of remembering
//!   a new source (what a spoofed flood of new sources costs a filter that keeps state).
//!
//! They are test fixtures, never shipped: the `mxscreen` binary does not embed them.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        TC_ACT_SHOT,
        xdp_action::{XDP_DROP, XDP_PASS},
    },
    macros::{classifier, map, xdp},
    maps::{HashMap, LruHashMap},
    programs::{TcContext, XdpContext},
};

/// The listed sources (sized by the benchmark at load).
#[map(name = "BARE_V4")]
static BARE_V4: HashMap<[u8; 4], u8> = HashMap::with_max_entries(1 << 16, 0);
#[map(name = "BARE_V6")]
static BARE_V6: HashMap<[u8; 16], u8> = HashMap::with_max_entries(1 << 16, 0);

/// The sources seen (sized by the benchmark at load to mxscreen's per-source map).
#[map(name = "LRU_V4")]
static LRU_V4: LruHashMap<[u8; 4], u64> = LruHashMap::with_max_entries(1 << 16, 0);
#[map(name = "LRU_V6")]
static LRU_V6: LruHashMap<[u8; 16], u64> = LruHashMap::with_max_entries(1 << 16, 0);

#[xdp]
pub fn bench_drop_all(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

#[xdp]
pub fn bench_pass_all(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[classifier]
pub fn bench_tc_drop_all(_ctx: TcContext) -> i32 {
    TC_ACT_SHOT
}

/// TCX_NEXT / TC_ACT_UNSPEC: on to the stack, as mxscreen's tc program passes.
#[classifier]
pub fn bench_tc_pass_all(_ctx: TcContext) -> i32 {
    -1
}

const ETH_HLEN: usize = 14;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// A pointer to `N` bytes at `off`, if the frame has them.
#[inline(always)]
fn at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*const [u8; N]> {
    let start = ctx.data() + off;
    if start + N > ctx.data_end() {
        return None;
    }
    Some(start as *const [u8; N])
}

/// Whether the TCP header at `off` is a SYN (ACK clear) to port 25.
#[inline(always)]
fn smtp_syn(ctx: &XdpContext, off: usize) -> bool {
    match at::<14>(ctx, off) {
        // SAFETY: the 14 bytes are inside the frame.
        Some(t) => unsafe {
            (*t)[2] == 0 && (*t)[3] == 25 && (*t)[13] & (TCP_SYN | TCP_ACK) == TCP_SYN
        },
        None => false,
    }
}

#[xdp]
pub fn bench_hash_drop(ctx: XdpContext) -> u32 {
    if listed(&ctx) { XDP_DROP } else { XDP_PASS }
}

#[xdp]
pub fn bench_hash_pass(ctx: XdpContext) -> u32 {
    // The lookup's result must be used, or the compiler drops the lookup.
    if listed(&ctx) {
        XDP_PASS
    } else {
        XDP_PASS + u32::from(ctx.data() == 0)
    }
}

#[xdp]
pub fn bench_lru_insert(ctx: XdpContext) -> u32 {
    match source(&ctx) {
        Some(Source::V4(src)) => {
            // SAFETY: `src` points into the frame, bounds-checked by `source`.
            let _ = LRU_V4.insert(unsafe { *src }, 1, 0);
        }
        Some(Source::V6(src)) => {
            // SAFETY: as above.
            let _ = LRU_V6.insert(unsafe { *src }, 1, 0);
        }
        None => {}
    }
    XDP_PASS
}

/// Whether the frame is a SYN to port 25 from a source in the set: one hash lookup.
// A borrow, not a copy: the address goes to the lookup straight from the frame.
#[allow(clippy::needless_borrows_for_generic_args)]
#[inline(always)]
fn listed(ctx: &XdpContext) -> bool {
    match source(ctx) {
        // SAFETY: the address points into the frame, bounds-checked by `source`.
        Some(Source::V4(src)) => BARE_V4.get_ptr(unsafe { &*src }).is_some(),
        Some(Source::V6(src)) => BARE_V6.get_ptr(unsafe { &*src }).is_some(),
        None => false,
    }
}

/// The source address of a SYN to port 25, pointing into the frame.
enum Source {
    V4(*const [u8; 4]),
    V6(*const [u8; 16]),
}

/// The frame's source, if it is a SYN to port 25 over IPv4 or IPv6 (no extension headers).
#[inline(always)]
fn source(ctx: &XdpContext) -> Option<Source> {
    let eth = at::<ETH_HLEN>(ctx, 0)?;
    // SAFETY (every dereference below): the bytes were bounds-checked by `at`. The source
    // address is handed to the map lookup straight from the frame, as C filters do.
    match unsafe { [(*eth)[12], (*eth)[13]] } {
        [0x08, 0x00] => {
            let ip = at::<20>(ctx, ETH_HLEN)?;
            let (vihl, proto) = unsafe { ((*ip)[0], (*ip)[9]) };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if proto != 6 || ihl < 20 || !smtp_syn(ctx, ETH_HLEN + ihl) {
                return None;
            }
            Some(Source::V4(ip.cast::<u8>().wrapping_add(12).cast()))
        }
        [0x86, 0xdd] => {
            let ip = at::<40>(ctx, ETH_HLEN)?;
            if unsafe { (*ip)[6] } != 6 || !smtp_syn(ctx, ETH_HLEN + 40) {
                return None;
            }
            Some(Source::V6(ip.cast::<u8>().wrapping_add(8).cast()))
        }
        _ => None,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
