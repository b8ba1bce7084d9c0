//! The release build and the Debian package (`xtask deb`) that the package and bench suites
//! need, started with the run rather than after the debug build.
//!
//! Made after the debug build, beside the first suites, it was the longest chain of a run
//! (debug build, then about ten minutes of release build on what the suites left of the CPU,
//! then the two suites). Started at once, niced (10), it takes what the debug build leaves
//! of the CPU (its link steps, its single-crate stretches) and then what the suites leave,
//! while the debug build and the suites' timed behaviours keep priority. It builds into
//! `target/release`, whose lock the debug build never takes. Lint is niced further (19):
//! the package is on the way to the run's end, lint is not.

use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};

use crate::util::workspace_root;

pub struct ReleaseBeside {
    state: Mutex<State>,
}

enum State {
    Running {
        child: Child,
        started: Instant,
        out: PathBuf,
        log: PathBuf,
    },
    /// The package's path, or why there is none.
    Done(Result<PathBuf, String>),
}

impl ReleaseBeside {
    /// Starts `xtask deb` (this very binary) niced; its output into `target/deb-beside.*`.
    pub fn start() -> Result<Self> {
        let target = workspace_root().join("target");
        std::fs::create_dir_all(&target)?;
        let (out, log) = (target.join("deb-beside.out"), target.join("deb-beside.log"));
        let child = Command::new("nice")
            .args(["-n", "10"])
            .arg(std::env::current_exe()?)
            .arg("deb")
            .stdout(File::create(&out).with_context(|| format!("{}", out.display()))?)
            .stderr(File::create(&log).with_context(|| format!("{}", log.display()))?)
            .spawn()
            .context("starting `xtask deb` beside the debug build")?;
        Ok(Self {
            state: Mutex::new(State::Running {
                child,
                started: Instant::now(),
                out,
                log,
            }),
        })
    }

    /// Waits for the package: its path, and how long the build took if this call is the
    /// one that saw it end (later calls get the same path and `None`). A failure prints
    /// the build's output.
    pub fn wait(&self) -> (Result<PathBuf>, Option<Duration>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let took = match &mut *state {
            State::Done(_) => None,
            State::Running {
                child,
                started,
                out,
                log,
            } => {
                let made = finish(child, out, log);
                let took = started.elapsed();
                *state = State::Done(made.map_err(|e| format!("{e:#}")));
                Some(took)
            }
        };
        let State::Done(made) = &*state else {
            unreachable!("set just above")
        };
        (made.clone().map_err(|e| anyhow!(e)), took)
    }
}

impl Drop for ReleaseBeside {
    /// A run that ends before a suite waited for the package (the debug build failed)
    /// does not wait for it.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let State::Running { child, .. } = state {
            // Its cargo finishes what it compiles and ends: in the terminal's process group,
            // Ctrl-C stops all of it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The package's path (`xtask deb` prints it as its last line), once the child ends.
fn finish(child: &mut Child, out: &PathBuf, log: &PathBuf) -> Result<PathBuf> {
    let ok = child.wait()?.success();
    let text = std::fs::read_to_string(out).unwrap_or_default();
    if !ok {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        eprintln!("\n=== build: mxscreen (release), .deb (failed) ===\n{log}");
        return Err(anyhow!("`xtask deb` failed (its output is above)"));
    }
    text.lines()
        .rev()
        .find(|l| l.trim_end().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim_end()))
        .context("`xtask deb` did not say where the package is")
}
