//! What every benchmark shares: medians and spreads over interleaved rounds, and recording a
//! run in BENCHMARKS.md (date, kernel, commit, command, table).

use std::{fs::OpenOptions, io::Write as _, path::PathBuf, process::Command};

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

/// The commit measured (`-dirty` with uncommitted changes).
pub fn commit() -> String {
    let head = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    if dirty { format!("{head}-dirty") } else { head }
}

/// Appends a run to BENCHMARKS.md, under `## {section}`'s runs: a `### Run` heading with the
/// date, the kernel, the commit and the command, then `body` (tables and notes).
pub fn record(section: &str, command: &str, body: &str) {
    let path = repo().join("BENCHMARKS.md");
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = output("uname", &["-r"]);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
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
