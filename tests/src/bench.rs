//! What every benchmark shares: medians and spreads over interleaved rounds, and recording a
//! run in BENCHMARKS.md (date, kernel, commit, command, table).

use std::{fs::OpenOptions, io::Write as _, path::PathBuf, process::Command, time::Duration};

/// Samples of one measurement over rounds.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// `+31.5 [+28 … +40]` (a cost over a floor), or `812 [790 … 860]`.
    pub fn show(&self, signed: bool) -> String {
        if signed {
            format!(
                "{:+.1} [{:+.0} … {:+.0}]",
                self.median(),
                self.min(),
                self.max()
            )
        } else {
            format!(
                "{:.1} [{:.0} … {:.0}]",
                self.median(),
                self.min(),
                self.max()
            )
        }
    }
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(repo())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The commit measured (`-dirty` with uncommitted changes), as it was when this process first
/// asked: each benchmark asks as it starts, so a commit made while it runs (they take up to
/// 45 minutes) is not named for code that was built before it.
pub fn commit() -> String {
    static AT_START: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT_START
        .get_or_init(|| {
            let head = output("git", &["rev-parse", "--short", "HEAD"]);
            let dirty =
                !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
            if dirty { format!("{head}-dirty") } else { head }
        })
        .clone()
}

/// Appends a run to BENCHMARKS.md, under `## {section}`'s runs: a `### Run` heading with the
/// date, the kernel, the commit and the command, then `body` (tables and notes).
pub fn record(section: &str, command: &str, body: &str) {
    let path = repo().join("BENCHMARKS.md");
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = output("uname", &["-r"]);
    // The machine's CPUs, not this thread's affinity (`available_parallelism` counts only the
    // CPUs a pinned sender may run on): the online CPUs, as the kernel tests count them.
    let cpus = aya::util::online_cpus().map_or(0, |c| c.len());
    let text = format!(
        "\n### {section}: run of {date}\n\nKernel {kernel}, {cpus} CPUs, commit {}, command `{command}`.\n\n{}\n",
        commit(),
        body.trim_end()
    );
    let mut f = OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .expect("append to BENCHMARKS.md");
    eprintln!("recorded in {}", path.display());
}

/// A process's CPU time so far, ns, from /proc/PID/stat (clock ticks): its own, plus its
/// reaped children's with `children` (Exim's connection processes are).
pub fn process_cpu_ns(pid: u32, children: bool) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(after) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Fields 14-17 of stat, counted from the state (field 3) here: utime, stime, cutime, cstime.
    let ticks = f[11] + f[12] + if children { f[13] + f[14] } else { 0 };
    ticks * 1_000_000_000 / ticks_per_sec()
}

/// Time all CPUs spent in softirq so far, ns (/proc/stat; without IRQ time accounting the
/// kernel counts it by sampling the tick, so short runs read coarse).
pub fn softirq_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = s
        .lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(7)?.parse().ok())
        .unwrap_or(0);
    ticks * 1_000_000_000 / ticks_per_sec()
}

fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as u64
}

/// The prefix lengths of a feed spread as real ones are (FireHOL level 1 and Spamhaus DROP
/// use 19): IPv4 /13 to /32.
pub const SPREAD_LENGTHS: std::ops::RangeInclusive<u8> = 13..=32;

/// A feed of real feeds' shape for the nftables benches: up to 300 IPv4 prefixes of each
/// length in [`SPREAD_LENGTHS`] (about 6,000 in all, those two feeds' size), spread over the
/// address space, host bits clear, as (network, length), no prefix twice.
pub fn spread_feed_v4() -> std::collections::BTreeSet<(u32, u8)> {
    SPREAD_LENGTHS
        .flat_map(|len| {
            (0..300u32).map(move |i| {
                (
                    i.wrapping_mul(0x9e37_79b9) & (u32::MAX << (32 - u32::from(len))),
                    len,
                )
            })
        })
        .collect()
}

/// The children of `pid` still alive.
pub fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            stat.rfind(')')
                .and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .count()
}

/// Kernel-measured run time of BPF programs (`BPF_ENABLE_STATS`): while a [`ProgramTime`] is
/// alive, every program run on the machine is timed, so open it only around a measurement.
pub struct ProgramTime {
    _stats: std::os::fd::OwnedFd,
}

impl ProgramTime {
    pub fn enable() -> Self {
        Self {
            _stats: aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .expect("BPF_ENABLE_STATS (root, kernel ≥ 5.8)"),
        }
    }

    /// Run time (ns) and runs so far of every program of `ebpf` together (only the one
    /// attached runs while a receiver is measured).
    pub fn of(&self, ebpf: &aya::Ebpf) -> (u64, u64) {
        ebpf.programs()
            .filter_map(|(_, p)| p.info().ok())
            .fold((0, 0), |(t, n), i| {
                (t + i.run_time().as_nanos() as u64, n + i.run_count())
            })
    }
}

/// Kernel memory in KiB: slab, per-CPU and vmalloc (where rhashtable buckets go).
pub fn kernel_kib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    ["Slab:", "Percpu:", "VmallocUsed:"]
        .iter()
        .map(|k| {
            m.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Kernel memory once it stopped moving: a namespace deleted before (the previous way's) is
/// freed by the kernel in the background for seconds, and what it frees would be counted
/// against the next load. Waits until two readings 300 ms apart differ by less than 1 MiB
/// (at most 20 s).
pub fn settled_kib() -> u64 {
    let mut last = kernel_kib();
    for _ in 0..66 {
        std::thread::sleep(Duration::from_millis(300));
        let now = kernel_kib();
        if now.abs_diff(last) < 1024 {
            return now;
        }
        last = now;
    }
    last
}
