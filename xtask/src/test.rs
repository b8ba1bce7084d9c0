//! `cargo xtask test`: builds once, then runs every suite — unit tests, then the suites that
//! touch the kernel, DNS servers and the MTA, one at a time — and reports every failure
//! together at the end instead of stopping at the first.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::{Result, bail};

use crate::util::{cargo, is_root, status};

/// One suite: a name for filtering and reporting, and the cargo test arguments.
struct Suite {
    name: &'static str,
    args: &'static [&'static str],
    /// Whether the tests in it may run in parallel (kernel/namespace suites do not).
    parallel: bool,
    /// Whether it tests the Debian package: built first, its path in `MXSCREEN_DEB`.
    deb: bool,
}

const SUITES: &[Suite] = &[
    Suite {
        name: "unit",
        args: &["-p", "filter-common", "-p", "filter-user", "-p", "xtask"],
        parallel: true,
        deb: false,
    },
    Suite {
        name: "datapath",
        args: &[
            "-p",
            "mxscreen-tests",
            "--test",
            "datapath",
            "--test",
            "lists",
            "--test",
            "cache",
        ],
        parallel: true,
        deb: false,
    },
    Suite {
        name: "netns",
        args: &[
            "-p",
            "mxscreen-tests",
            "--test",
            "netns",
            "--test",
            "nftables",
        ],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "reputation",
        args: &["-p", "mxscreen-tests", "--test", "reputation"],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "daemon",
        args: &[
            "-p",
            "mxscreen-tests",
            "--test",
            "daemon",
            "--test",
            "feeds",
        ],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "metrics",
        args: &["-p", "mxscreen-tests", "--test", "metrics"],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "fleet",
        args: &["-p", "mxscreen-tests", "--test", "fleet"],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "e2e",
        args: &["-p", "mxscreen-tests", "--test", "e2e"],
        parallel: false,
        deb: false,
    },
    Suite {
        name: "package",
        args: &["-p", "mxscreen-tests", "--test", "package"],
        parallel: false,
        deb: true,
    },
];

/// The `bench` suite: each benchmark's `--quick` smoke run, so the harnesses never rot (a
/// minute or two each; they assert what they measure, and record nothing).
const BENCH_SMOKES: &[&str] = &["drop", "mta"];
const BENCH_SUITE: &str = "bench";

/// Suites that run the release build of `mxscreen`: what is measured against the product's
/// numbers (the million-line feed of the daemon suite, the benchmarks).
const NEEDS_RELEASE: &[&str] = &["daemon", BENCH_SUITE];

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Parses cargo's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
fn tally_line(line: &str, t: &mut Tally) {
    let Some(rest) = line.strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(['.', ';']) {
        let mut words = part.split_whitespace();
        if let (Some(n), Some(what)) = (words.next(), words.next())
            && let Ok(n) = n.parse::<u64>()
        {
            match what {
                "passed" => t.passed += n,
                "failed" => t.failed += n,
                "ignored" => t.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run(filter: Option<&str>, allow_skips: bool) -> Result<()> {
    if !is_root() {
        bail!(
            "the kernel, namespace and end-to-end suites need root: run `sudo -E cargo xtask test`"
        );
    }
    let suites: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect();
    let benches = filter.is_none_or(|f| BENCH_SUITE.contains(f));
    if suites.is_empty() && !benches {
        bail!(
            "no suite matches {filter:?}; suites: {}, {BENCH_SUITE}",
            SUITES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        );
    }
    // Build everything once up front so a compile error is reported once, not per suite.
    // (The default members: the eBPF crate is built by filter-user's build.rs.)
    status(cargo().args(["test", "--no-run"]))?;
    // The daemon and end-to-end suites run the real binary; what is measured against the
    // product's numbers (the million-line feed, the benchmarks) runs the release build.
    status(cargo().args(["build", "-p", "filter-user", "--bin", "mxscreen"]))?;
    let names = suites.iter().map(|s| s.name);
    if benches || names.into_iter().any(|n| NEEDS_RELEASE.contains(&n)) {
        crate::util::build(true)?;
    }
    let deb = if suites.iter().any(|s| s.deb) {
        Some(crate::deb::build()?)
    } else {
        None
    };

    let mut total = Tally::default();
    let mut failed_suites = Vec::new();
    for suite in &suites {
        eprintln!("\n=== suite {} ===", suite.name);
        let mut cmd = cargo();
        cmd.arg("test").args(suite.args).arg("--");
        if !suite.parallel {
            cmd.arg("--test-threads=1");
        }
        if let (true, Some(deb)) = (suite.deb, &deb) {
            cmd.env("MXSCREEN_DEB", deb);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn()?;
        let mut t = Tally::default();
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            let line = line?;
            println!("{line}");
            tally_line(&line, &mut t);
        }
        let ok = child.wait()?.success();
        if !ok || t.failed > 0 {
            failed_suites.push(suite.name);
        }
        // A skipped test is a test that cannot fail: it fails the run, locally as in CI,
        // unless the developer asked for that with --allow-skips.
        if t.ignored > 0 && !allow_skips {
            eprintln!(
                "suite {}: {} ignored test(s); a skipped test fails the run (--allow-skips to accept)",
                suite.name, t.ignored
            );
            failed_suites.push(suite.name);
        }
        total.passed += t.passed;
        total.failed += t.failed;
        total.ignored += t.ignored;
    }
    if benches {
        eprintln!("\n=== suite {BENCH_SUITE} ===");
        for name in BENCH_SMOKES {
            let ok = crate::bench::command(name, true).status()?.success();
            println!(
                "bench {name} --quick ... {}",
                if ok { "ok" } else { "FAILED" }
            );
            if ok {
                total.passed += 1;
            } else {
                total.failed += 1;
                failed_suites.push(BENCH_SUITE);
            }
        }
    }
    eprintln!();
    if !failed_suites.is_empty() {
        println!("failed suites: {}", failed_suites.join(", "));
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    if !failed_suites.is_empty() {
        bail!("{} suite(s) failed", failed_suites.len());
    }
    if total.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_cargo_result_lines() {
        let mut t = Tally::default();
        tally_line(
            "test result: ok. 14 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 1.9s",
            &mut t,
        );
        tally_line(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured",
            &mut t,
        );
        tally_line("running 3 tests", &mut t);
        assert_eq!((t.passed, t.failed, t.ignored), (17, 1, 2));
    }
}
