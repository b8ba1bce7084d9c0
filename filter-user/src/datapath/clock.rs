//! The datapath stamps and compares times with `bpf_ktime_get_coarse_ns`, i.e.
//! CLOCK_MONOTONIC_COARSE, and every expiry written into a map is on that clock.
//!
//! Why coarse: reading the precise clock cost ~35 ns per screened SYN on this machine kind, a
//! third of the whole verdict path (BENCHMARKS.md), while expiries, the dedup and hold windows
//! and the limit's pacing (one SYN per several seconds) need nothing finer than a tick
//! (1–10 ms). Why not the boot clock: it differs only by time spent suspended, and an MX does
//! not suspend.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Now on the datapath's clock (CLOCK_MONOTONIC_COARSE), in nanoseconds.
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// An expiry `ttl` from now (saturating; never 0, which means "never expires").
pub fn expiry_after(ttl: Duration) -> u64 {
    now_ns()
        .saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64)
        .max(1)
}

/// Time left until an expiry; `None` for "never" (0); zero once passed.
pub fn remaining(expires_ns: u64) -> Option<Duration> {
    (expires_ns != 0).then(|| Duration::from_nanos(expires_ns.saturating_sub(now_ns())))
}
