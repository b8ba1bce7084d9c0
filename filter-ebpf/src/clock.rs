//! The datapath's clock: CLOCK_MONOTONIC_COARSE nanoseconds, the clock every expiry in the
//! maps is written in.
//!
//! Calling `bpf_ktime_get_coarse_ns` costs a helper call and a seqcount read per SYN, a large
//! share of a cached decision (BENCHMARKS.md has the figures). `bpf_jiffies64` is inlined by the
//! verifier into one load, and jiffies tick with the coarse clock, so userspace samples both
//! together ([`mxscreen_clock`], run by BPF_PROG_TEST_RUN on every config write), and the
//! cached path compares [`jiffies`] with deadlines converted to jiffies (a cached decision's
//! `until_jiffies`, the heartbeat's `stale_jiffies`). The calibration is set a few ticks ahead
//! of the coarse clock and conversions round down, so a cached decision ends a little early
//! (and is made again), never late. Everything that decides or is stamped — the slow path —
//! reads the coarse clock itself ([`exact`]).

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::xdp,
    programs::XdpContext,
};
use filter_common::DatapathConfig;

/// Now, in CLOCK_MONOTONIC_COARSE nanoseconds: what stamps and decisions use.
#[inline(always)]
pub fn exact() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Jiffies now (inlined by the verifier into one load); `u64::MAX` when the config carries no
/// calibration, so no cached decision holds and everything goes the exact way.
#[inline(always)]
pub fn jiffies(cfg: &DatapathConfig) -> u64 {
    if cfg.tick_ns == 0 {
        return u64::MAX;
    }
    // SAFETY: a helper without arguments.
    unsafe { bpf_jiffies64() }
}

/// Now in nanoseconds, estimated from `jiffies`: never behind [`exact`], at most a few ticks
/// ahead (what a cached limit decision paces its token bucket with).
#[inline(always)]
pub fn estimate(cfg: &DatapathConfig, jiffies: u64) -> u64 {
    if cfg.tick_ns == 0 {
        return exact();
    }
    let ticks = jiffies.wrapping_sub(cfg.clock_jiffies) as i64;
    (cfg.clock_ns as i64).wrapping_add(ticks.wrapping_mul(cfg.tick_ns as i64)) as u64
}

/// Whether the daemon's heartbeat is stale (the fail-open guard).
#[inline(always)]
pub fn stale(cfg: &DatapathConfig, jiffies: u64) -> bool {
    if cfg.stale_after_ns == 0 {
        return false;
    }
    if cfg.tick_ns == 0 {
        return exact().saturating_sub(cfg.alive_ns) > cfg.stale_after_ns;
    }
    jiffies > cfg.stale_jiffies
}

/// Never attached. Run by userspace on a 24-byte frame, it writes jiffies, the coarse clock
/// and jiffies again into the frame (native endian); userspace keeps samples whose two
/// jiffies agree.
#[xdp]
pub fn mxscreen_clock(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 24 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: helpers without arguments.
    let sample = unsafe { [bpf_jiffies64(), bpf_ktime_get_coarse_ns(), bpf_jiffies64()] };
    // SAFETY: [data, data + 24) lies inside the frame (checked above).
    unsafe { core::ptr::write_unaligned(data as *mut [u64; 3], sample) };
    xdp_action::XDP_PASS
}
