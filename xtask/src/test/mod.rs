//! `cargo xtask test`: sets the machine up, builds once, then runs every suite — the suites
//! that touch the kernel, DNS servers and the MTA, and the unit tests, in two lanes side by
//! side ([`suites::Lane`]) — and
//! reports every failure together at the end instead of stopping at the first, with a table
//! of where the time went. A whole run also lints, beside the builds and suites
//! ([`lint_beside`]); `cargo xtask test SUITE` leaves that to `cargo xtask lint`.

mod harness;
mod lint_beside;
mod release_beside;
mod suites;

use std::{ffi::OsString, path::PathBuf, time::Instant};

use anyhow::{Context as _, Result, bail};
use harness::{Built, Sink, Tally};
use suites::{Lane, Runs, Suite};

use crate::{
    setup::{Needs, setup, setup_suites},
    timing::Timings,
    util::is_root,
};

/// What the suites added up to.
#[derive(Default)]
struct Report {
    total: Tally,
    failed_suites: Vec<&'static str>,
}

pub fn run(filter: Option<&str>, allow_skips: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "the kernel, namespace and end-to-end suites need root: run `sudo -E cargo xtask test`"
        );
    }
    let suites = suites::select(filter)?;
    let mut timings = Timings::new();
    let result = run_steps(&suites, filter.is_none(), allow_skips, &mut timings);
    let table = timings.table();
    eprintln!("\n{table}");
    if table.contains("[lane 2]") {
        eprintln!("(rows marked [lane 2] ran beside the others; the total is the wall clock)");
    }
    result
}

/// The run as a list of timed steps: setup, the debug build, then the two lanes of suites
/// side by side ([`Lane`]); the release build and the package, if a suite needs them, from
/// the start beside all that ([`release_beside`]).
fn run_steps(
    suites: &[&'static Suite],
    lint: bool,
    allow_skips: bool,
    timings: &mut Timings,
) -> Result<()> {
    // What building needs first; cargo-deb comes with the niced package build (`xtask deb`
    // sets up what it needs), and the suites' packages and Postfix beside the debug build:
    // on a fresh machine, neither waits for the other.
    timings.time("setup", || setup(Needs::Build))?;
    let lint = lint.then(lint_beside::LintBeside::start).transpose()?;
    let release = suites
        .iter()
        .any(|s| s.release)
        .then(release_beside::ReleaseBeside::start)
        .transpose()?;
    let built = std::thread::scope(|scope| {
        let suites_setup = scope.spawn(|| {
            let t = Instant::now();
            (setup_suites(), t.elapsed())
        });
        let built = timings.time("build: tests and mxscreen (debug)", harness::build);
        let (set_up, took) = suites_setup.join().expect("the suites' setup panicked");
        let row = "setup: the suites' packages and Postfix (beside the debug build)";
        timings.record(row, took, set_up.is_ok());
        set_up.and(built)
    })?;
    suites::check_every_test_has_a_suite(&built.harnesses)?;
    let (first, beside): (Vec<&Suite>, Vec<&Suite>) =
        suites.iter().partition(|s| s.lane == Lane::First);
    // Two lanes at once print each suite's output as a block when it ends; one prints live.
    let live = first.is_empty() || beside.is_empty();
    let release = release.as_ref();
    let lane = |suites, mark| run_lane(suites, mark, &built, release, live, allow_skips);
    let (first, beside) = std::thread::scope(|scope| {
        let other = scope.spawn(|| lane(&beside, " [lane 2]"));
        let mine = lane(&first, "");
        (mine, other.join().expect("a lane of suites panicked"))
    });
    let mut report = Report::default();
    for lane in [first, beside] {
        let lane = lane?;
        timings.absorb(lane.timings);
        report.total.add(lane.report.total);
        report.failed_suites.extend(lane.report.failed_suites);
    }
    if let Some(lint) = lint {
        let (ok, took) = lint.finish()?;
        timings.record("lint (beside the builds and suites, niced)", took, ok);
        if !ok {
            report.failed_suites.push("lint");
        }
    }
    report.finish()
}

/// What one lane did: its steps' times and its suites' results.
struct LaneRun {
    timings: Timings,
    report: Report,
}

/// Runs `suites` one after the other, their rows in the time table marked with `mark`. A
/// suite that needs the release build and the package waits for `release` (made from the
/// start of the run); the lane that sees it end records its time.
fn run_lane(
    suites: &[&'static Suite],
    mark: &str,
    built: &Built,
    release: Option<&release_beside::ReleaseBeside>,
    live: bool,
    allow_skips: bool,
) -> Result<LaneRun> {
    let mut timings = Timings::new();
    let mut report = Report::default();
    let mut deb = None;
    for suite in suites {
        if suite.release && deb.is_none() {
            let release = release.context("a suite needs the release build, none was started")?;
            let (made, took) = release.wait();
            if let Some(took) = took {
                let name = "build: mxscreen (release), .deb (from the start, niced)";
                timings.record(name, took, made.is_ok());
            }
            deb = Some(made?);
        }
        let mut out = Sink::new(live);
        out.line(format!("\n=== suite {} ===", suite.name));
        let t = timings.time(format!("suite {}{mark}", suite.name), || {
            run_suite(suite, built, deb.as_ref(), &mut out)
        });
        out.flush();
        let t = t?;
        if t.failed > 0 {
            timings.failed_last();
            report.failed_suites.push(suite.name);
        }
        // A skipped test is a test that cannot fail: it fails the run, locally as in CI,
        // unless the developer asked for that with --allow-skips.
        if t.ignored > 0 && !allow_skips {
            eprintln!(
                "suite {}: {} ignored test(s); a skipped test fails the run (--allow-skips to accept)",
                suite.name, t.ignored
            );
            timings.failed_last();
            report.failed_suites.push(suite.name);
        }
        report.total.add(t);
    }
    Ok(LaneRun { timings, report })
}

/// A copy of this very xtask binary for the package suite. `cargo test` relinks
/// `target/debug/xtask` during the run (its integration tests need the binary), which leaves
/// this process's file deleted; `/proc/self/exe` still reads it.
fn this_xtask() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("mxscreen-xtask-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join("xtask");
    std::fs::copy("/proc/self/exe", &copy)
        .context("copying this xtask binary for the package suite")?;
    Ok(copy)
}

/// Runs one suite to its end; its tally (a harness that fails to start is an error).
fn run_suite(suite: &Suite, built: &Built, deb: Option<&PathBuf>, out: &mut Sink) -> Result<Tally> {
    let mut env: Vec<(&str, OsString)> = Vec::new();
    if let Some(deb) = deb {
        env.push(("MXSCREEN_DEB", deb.into()));
        // The package suite runs this very binary's install step in a Debian root.
        env.push(("MXSCREEN_XTASK", this_xtask()?.into()));
    }
    let mut t = Tally::default();
    for h in suite.harnesses(&built.harnesses) {
        out.line(format!(
            "     Running {} {} ({})",
            h.package,
            h.target,
            h.exe.display()
        ));
        t.add(harness::tallied(&mut h.command(suite.threads, &env), out)?);
    }
    match suite.runs {
        Runs::Unit => t.add(harness::doc_tests(out)?),
        Runs::Tests(_) => {}
        Runs::Benches(names) => {
            for name in names {
                t.add(bench_smoke(name, built, out)?);
            }
        }
    }
    Ok(t)
}

/// `bench NAME --quick` with the benchmark binary of this build.
fn bench_smoke(name: &str, built: &Built, out: &mut Sink) -> Result<Tally> {
    let bin = crate::bench::binary(name);
    let exe = built
        .bins
        .get(&bin)
        .with_context(|| format!("the build made no {bin}"))?;
    out.line(format!("     Running {bin} --quick"));
    let ok = harness::run_into(
        std::process::Command::new(exe)
            .arg("--quick")
            .current_dir(crate::util::workspace_root().join("tests")),
        out,
        |_| {},
    )?
    .success();
    out.line(format!(
        "bench {name} --quick ... {}",
        if ok { "ok" } else { "FAILED" }
    ));
    Ok(Tally {
        passed: u64::from(ok),
        failed: u64::from(!ok),
        ignored: 0,
    })
}

impl Report {
    fn finish(self) -> Result<()> {
        eprintln!();
        if !self.failed_suites.is_empty() {
            println!("failed suites: {}", self.failed_suites.join(", "));
        }
        let t = self.total;
        println!(
            "tests: {} passed, {} failed, {} skipped",
            t.passed, t.failed, t.ignored
        );
        if !self.failed_suites.is_empty() {
            bail!("{} suite(s) failed", self.failed_suites.len());
        }
        if t.passed == 0 {
            bail!("no test ran");
        }
        Ok(())
    }
}
