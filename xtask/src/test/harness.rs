//! The test executables: built by one cargo invocation, then run directly.
//!
//! Running each suite through its own `cargo test -p … --test …` made cargo resolve
//! features for a different set of packages each time, and a different set means different
//! features (filter-user's dev-dependencies, the tests crate's own): the same crates were
//! compiled again for some suites. One `cargo build --tests` of the default members
//! resolves once; the executables it reports are then run as cargo would run them (in
//! their package's directory, with `CARGO` set).

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Mutex,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::util::{cargo, workspace_root};

/// One test executable cargo built.
#[derive(Clone, Debug)]
pub struct Harness {
    /// The package's name (`mxscreen-tests`, `filter-user`, ...).
    pub package: String,
    /// The target's name: an integration test's file stem, or the lib's or bin's name.
    pub target: String,
    /// Whether it is an integration test (tests/*.rs) rather than a lib's or bin's unit tests.
    pub integration: bool,
    pub exe: PathBuf,
    /// The package's directory: cargo runs tests there.
    pub dir: PathBuf,
}

/// What the build produced: the test executables, and the plain binaries by name.
pub struct Built {
    pub harnesses: Vec<Harness>,
    pub bins: BTreeMap<String, PathBuf>,
}

/// Builds every test executable of the default members and the debug `mxscreen` binary
/// (which the daemon and end-to-end suites run) in one cargo invocation.
pub fn build() -> Result<Built> {
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--tests",
        "--bin",
        "mxscreen",
        "--message-format=json-render-diagnostics",
    ]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut built = Built {
        harnesses: Vec::new(),
        bins: BTreeMap::new(),
    };
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let message: Value = serde_json::from_str(&line?).context("reading cargo's messages")?;
        if message["reason"] == "compiler-artifact" {
            built.add(&message);
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    built
        .harnesses
        .sort_by(|a, b| (&a.package, &a.target).cmp(&(&b.package, &b.target)));
    Ok(built)
}

impl Built {
    /// Adds a `compiler-artifact` message's executable, if it has one.
    fn add(&mut self, a: &Value) {
        let (Some(exe), Some(name)) = (a["executable"].as_str(), a["target"]["name"].as_str())
        else {
            return;
        };
        let exe = PathBuf::from(exe);
        if a["profile"]["test"] != true {
            self.bins.insert(name.to_owned(), exe);
            return;
        }
        let dir = a["manifest_path"]
            .as_str()
            .and_then(|m| Path::new(m).parent())
            .map_or_else(workspace_root, Path::to_path_buf);
        let integration = a["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        self.harnesses.push(Harness {
            package: package_name(a["package_id"].as_str().unwrap_or_default(), &dir),
            target: name.to_owned(),
            integration,
            exe,
            dir,
        });
    }
}

/// A package's name from cargo's package id: `path+file:///work/tests#mxscreen-tests@0.1.0`,
/// or `path+file:///work/xtask#0.1.0` when the name is the directory's.
fn package_name(id: &str, dir: &Path) -> String {
    match id.rsplit_once('#') {
        Some((_, fragment)) if fragment.contains('@') => {
            fragment.split('@').next().unwrap_or_default().to_owned()
        }
        _ => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// Passed, failed and ignored tests, summed over cargo's `test result:` lines.
#[derive(Clone, Copy, Default, Debug)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Tally {
    /// Adds a `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line (others are not
    /// counted).
    pub fn line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }

    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Where a suite's output goes: straight to the terminal when one suite runs at a time, or
/// kept and printed as one block when the suite ends, so that two lanes' lines never mix.
pub struct Sink {
    live: bool,
    kept: String,
}

/// Held while a kept block is printed.
static PRINTING: Mutex<()> = Mutex::new(());

impl Sink {
    pub fn new(live: bool) -> Self {
        Self {
            live,
            kept: String::new(),
        }
    }

    pub fn line(&mut self, line: impl AsRef<str>) {
        if self.live {
            println!("{}", line.as_ref());
        } else {
            self.kept.push_str(line.as_ref());
            self.kept.push('\n');
        }
    }

    /// Prints what was kept.
    pub fn flush(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        let _printing = PRINTING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.kept.as_bytes());
        let _ = stdout.flush();
        self.kept.clear();
    }
}

/// Runs `cmd`, its output into `out` line by line (standard error too when `out` keeps it,
/// since a suite's block must hold all of it), each line also given to `each`; its status.
pub fn run_into(
    cmd: &mut Command,
    out: &mut Sink,
    mut each: impl FnMut(&str),
) -> Result<ExitStatus> {
    let (reader, writer) = std::io::pipe()?;
    if !out.live {
        cmd.stderr(writer.try_clone()?);
    }
    cmd.stdout(writer);
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"));
    // The command keeps its copies of the pipe's writing end: replace them, or the reader
    // would never see the end of the output.
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    let mut child = child?;
    for line in BufReader::new(reader).lines() {
        let line = line?;
        each(&line);
        out.line(line);
    }
    Ok(child.wait()?)
}

/// Runs `cmd`, its output into `out`, tallying its `test result:` lines; fails if it exits
/// non-zero.
pub fn tallied(cmd: &mut Command, out: &mut Sink) -> Result<Tally> {
    let mut t = Tally::default();
    let st = run_into(cmd, out, |line| t.line(line))?;
    if !st.success() && t.failed == 0 {
        // Failed without a failing test (a crash, a panic before the tests): still a failure.
        t.failed += 1;
    }
    Ok(t)
}

/// How many of a harness's tests run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One per CPU (libtest's default): tests that keep the CPU busy.
    EachCpu,
    /// A fixed number, whatever the CPUs. Most kernel, daemon and MTA tests spend their time
    /// waiting (a dropped SYN's retransmit, a daemon's timeout, a DNS server, an MTA), each
    /// in namespaces, with a daemon, ports and a pin directory of its own: two at a time take
    /// about half as long (the daemon suite 285 -> 150 s, e2e 530 -> 270 s here) for little
    /// CPU. Not more: their timed bounds (a hold is one SYN retransmit, fail-open within 5 s)
    /// are set for a machine that is not oversubscribed, and a run has two lanes already.
    AtOnce(usize),
}

impl Harness {
    /// The command that runs this harness as `cargo test` would, `threads` of its tests at
    /// once, with `env` added.
    pub fn command(&self, threads: Threads, env: &[(&str, OsString)]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.current_dir(&self.dir)
            .env("CARGO", crate::util::cargo_path());
        if let Threads::AtOnce(n) = threads {
            cmd.arg(format!("--test-threads={n}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }
}

/// The doc tests of the default members (`cargo test --doc`: rustdoc compiles them, so
/// they cannot be built ahead), with the same packages selected as [`build`], so nothing
/// is compiled again.
pub fn doc_tests(out: &mut Sink) -> Result<Tally> {
    tallied(cargo().args(["test", "--doc"]), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_cargo_result_lines() {
        let mut t = Tally::default();
        t.line(
            "test result: ok. 14 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.9s",
        );
        t.line("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured");
        t.line("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (17, 1, 2));
    }

    #[test]
    fn package_names_from_ids() {
        let dir = Path::new("/w/xtask");
        assert_eq!(
            package_name("path+file:///w/tests#mxscreen-tests@0.1.0", dir),
            "mxscreen-tests"
        );
        assert_eq!(package_name("path+file:///w/xtask#0.1.0", dir), "xtask");
    }
}
