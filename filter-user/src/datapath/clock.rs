//! The datapath stamps and compares times with `bpf_ktime_get_boot_ns`, i.e. CLOCK_BOOTTIME
//! (it keeps counting through suspend). Every expiry written into a map uses this clock.

use std::time::Duration;

use nix::time::{ClockId, clock_gettime};

/// Now on CLOCK_BOOTTIME, in nanoseconds.
pub fn boot_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// A boot-clock expiry `ttl` from now (saturating; never 0, which means "never expires").
pub fn expiry_after(ttl: Duration) -> u64 {
    boot_ns()
        .saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64)
        .max(1)
}

/// Time left until a boot-clock expiry; `None` for "never" (0); zero once passed.
pub fn remaining(expires_ns: u64) -> Option<Duration> {
    (expires_ns != 0).then(|| Duration::from_nanos(expires_ns.saturating_sub(boot_ns())))
}
