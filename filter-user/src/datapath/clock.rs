//! The datapath stamps and compares times on CLOCK_MONOTONIC_COARSE, and every expiry
//! written into a map is on that clock.
//!
//! Why coarse: reading the precise clock was a large share of the whole verdict path when it
//! was measured (`cargo xtask bench datapath`), while expiries, the dedup and hold windows
//! and the limit's pacing (one SYN per several seconds) need nothing finer than a tick
//! (1–10 ms). Why not the boot clock: it differs only by time spent suspended, and an MX does
//! not suspend.
//!
//! Why calibrated: even the coarse clock costs a helper call per SYN, while jiffies are one
//! inlined load. Jiffies and the coarse clock advance together at each tick, so
//! [`Sampler`] reads both at once inside the kernel (the `mxscreen_clock` program) and every
//! config write carries the pair; the datapath converts jiffies to coarse nanoseconds. The
//! conversion is set [`LEAD_TICKS`] ahead, so the datapath's clock never lags this one: an
//! expiry is met at worst two ticks (8 ms at 250 Hz) early, never late.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use filter_common::NEVER;
use nix::time::{ClockId, clock_gettime};

/// Now on the datapath's clock (CLOCK_MONOTONIC_COARSE), in nanoseconds.
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE)
        .expect("CLOCK_MONOTONIC_COARSE is always available on Linux");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// An expiry `ttl` from now (saturating; never [`NEVER`]).
pub fn expiry_after(ttl: Duration) -> u64 {
    now_ns()
        .saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64)
        .max(NEVER + 1)
}

/// Time left until an expiry; `None` for [`NEVER`]; zero once passed.
pub fn remaining(expires_ns: u64) -> Option<Duration> {
    (expires_ns != NEVER).then(|| Duration::from_nanos(expires_ns.saturating_sub(now_ns())))
}

/// Now on the wall clock, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Datapath-clock expiry for a wall-clock one (Unix seconds); `None`: [`NEVER`].
pub fn boot_expiry(expires_unix: Option<u64>) -> u64 {
    match expires_unix {
        None => NEVER,
        Some(t) => expiry_after(Duration::from_secs(t.saturating_sub(unix_now()))),
    }
}

/// Wall-clock expiry (Unix seconds) of a datapath-clock one; `None`: never.
pub fn unix_expiry(expires_ns: u64) -> Option<u64> {
    remaining(expires_ns).map(|left| unix_now() + left.as_secs())
}

/// How far ahead of the sampled coarse clock the datapath's estimate is set: the coarse
/// clock lags true time by up to a tick, jiffies are updated just before it in the same
/// tick, and NTP slews it by a few parts per million between samples.
pub const LEAD_TICKS: u64 = 3;

/// The calibration a config write carries (`DatapathConfig::clock_*`, `tick_ns`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calibration {
    pub jiffies: u64,
    pub ns: u64,
    pub tick_ns: u64,
}

/// Runs the `mxscreen_clock` program to read jiffies and the coarse clock together.
pub struct Sampler {
    prog: OwnedFd,
}

/// One reading of both clocks.
#[derive(Clone, Copy, Debug)]
struct Sample {
    jiffies: u64,
    ns: u64,
}

/// Tick lengths of the kernel's possible HZ settings (100, 250, 300, 1000).
const TICKS_NS: [u64; 4] = [10_000_000, 4_000_000, 3_333_333, 1_000_000];

impl Sampler {
    pub fn new(prog: OwnedFd) -> Self {
        Self { prog }
    }

    /// Both clocks now, with the conversion's lead.
    pub fn calibrate(&self) -> Result<Calibration> {
        let tick_ns = self.tick_ns()?;
        let s = self.sample()?;
        Ok(Calibration {
            jiffies: s.jiffies,
            ns: s.ns + LEAD_TICKS * tick_ns,
            tick_ns,
        })
    }

    /// The kernel's tick (1/HZ), measured once per process: jiffies against the coarse clock
    /// over at least two ticks, rounded to the nearest possible HZ.
    fn tick_ns(&self) -> Result<u64> {
        static TICK: OnceLock<u64> = OnceLock::new();
        if let Some(t) = TICK.get() {
            return Ok(*t);
        }
        let first = self.sample()?;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(2));
            let s = self.sample()?;
            if s.jiffies >= first.jiffies + 2 {
                let per = (s.ns - first.ns) / (s.jiffies - first.jiffies);
                let tick = *TICKS_NS
                    .iter()
                    .min_by_key(|t| t.abs_diff(per))
                    .expect("non-empty");
                return Ok(*TICK.get_or_init(|| tick));
            }
        }
        bail!("jiffies did not advance in 400 ms; cannot calibrate the datapath clock")
    }

    fn sample(&self) -> Result<Sample> {
        for _ in 0..10 {
            let [j0, ns, j1] = test_run(&self.prog).context("running the clock sampler")?;
            if j0 == j1 {
                return Ok(Sample { jiffies: j0, ns });
            }
        }
        bail!("the clock sampler never read jiffies twice alike")
    }
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const XDP_PASS: u32 = 2;

/// BPF_PROG_TEST_RUN of the sampler on a 24-byte frame; returns the three words it writes.
fn test_run(prog: &OwnedFd) -> io::Result<[u64; 3]> {
    let data_in = [0u8; 24];
    let mut data_out = [0u8; 24];
    let mut attr = [0u8; 80];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(data_in.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(data_out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(data_in.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(data_out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: attr is a zeroed bpf_attr with the test-run fields set; the buffers it points
    // to outlive the call and have the sizes it states.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let retval = u32::from_ne_bytes(attr[4..8].try_into().expect("4 bytes"));
    if retval != XDP_PASS {
        return Err(io::Error::other(format!("clock sampler returned {retval}")));
    }
    let word = |i: usize| u64::from_ne_bytes(data_out[i * 8..i * 8 + 8].try_into().expect("8"));
    Ok([word(0), word(1), word(2)])
}
