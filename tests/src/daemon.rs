//! The real `mxscreen` binary run as a daemon inside a test namespace, with its own config,
//! socket, state file and pin directory, all removed when the guard drops (even on panic).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::NetNs;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The release build of `mxscreen` (target/release/mxscreen), for what is measured against
/// the product's numbers (a million-line feed in two seconds); `cargo xtask test` builds it.
pub fn mxscreen_release_bin() -> PathBuf {
    let bin = mxscreen_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("release/mxscreen");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --release -p filter-user --bin mxscreen` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// The `mxscreen` binary of this build: target/<profile>/mxscreen, beside a benchmark binary
/// or one level above a test's deps/ directory.
pub fn mxscreen_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("executable directory");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let bin = profile_dir.join("mxscreen");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p filter-user` (cargo xtask test does)",
        bin.display()
    );
    bin
}

/// What to run: lines for `[datapath]` (interfaces, pin_dir, socket and state are set by
/// the harness), the other sections verbatim, and extra `mxscreen run` flags.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub datapath: String,
    pub sections: String,
    pub args: Vec<String>,
    /// Extra environment for `mxscreen run`.
    pub env: Vec<(String, String)>,
    /// Directory of the MTA's sockets (`query.sock`; the test's `[policy_service]` may put
    /// `policy.sock` there too). Default: the daemon's own temporary directory.
    pub run_dir: Option<PathBuf>,
    /// Where the state file goes (default: the daemon's temp dir).
    pub state: Option<PathBuf>,
    /// A command `mxscreen` runs under, e.g. `setpriv --bounding-set=... --`.
    pub wrapper: Vec<String>,
    /// The binary to run as the daemon; `None`: this build's ([`mxscreen_bin`]).
    pub binary: Option<PathBuf>,
}

pub struct MxDaemon {
    child: Option<Child>,
    ns_file: PathBuf,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    pub pin_dir: PathBuf,
    /// The MTA's query socket (`[query] socket`).
    pub query_socket: PathBuf,
    iface: String,
    spec: Spec,
}

impl MxDaemon {
    /// Writes the config and starts `mxscreen run` in `ns` on `iface`; returns once its
    /// control socket answers.
    pub fn start(ns: &NetNs, iface: &str, spec: Spec) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/mxs-test-{}-{n}", std::process::id()));
        let mut d = Self {
            child: None,
            ns_file: PathBuf::from(format!("/run/netns/{}", ns.name)),
            config: dir.path().join("mxscreen.toml"),
            socket: dir.path().join("control.sock"),
            state: spec
                .state
                .clone()
                .unwrap_or_else(|| dir.path().join("state.json")),
            log: dir.path().join("daemon.log"),
            query_socket: spec
                .run_dir
                .clone()
                .unwrap_or_else(|| dir.path().to_path_buf())
                .join("query.sock"),
            dir,
            pin_dir,
            iface: iface.to_owned(),
            spec,
        };
        d.write_config(&d.spec.sections.clone());
        d.launch();
        d
    }

    /// Rewrites the config's other sections (e.g. before a SIGHUP).
    pub fn write_config(&self, sections: &str) {
        let text = format!(
            "[datapath]\ninterfaces = [{:?}]\npin_dir = {:?}\n{}\n\n[control]\nsocket = {:?}\n\n[state]\nfile = {:?}\n\n[query]\nsocket = {:?}\n\n{}\n",
            self.iface,
            self.pin_dir.display().to_string(),
            self.spec.datapath,
            self.socket.display().to_string(),
            self.state.display().to_string(),
            self.query_socket.display().to_string(),
            sections
        );
        fs::write(&self.config, text).expect("write config");
    }

    fn launch(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        // nsenter joins only the network namespace, so the pins stay on the host's bpffs.
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns_file.display()))
            .args(&self.spec.wrapper)
            .arg(self.spec.binary.clone().unwrap_or_else(mxscreen_bin))
            .args(["run", "--config"])
            .arg(&self.config)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // If the test process is killed outright, take the daemon (and its attachment) with
        // it rather than leave it screening an orphaned namespace.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn mxscreen run"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("mxscreen run exited early ({status}):\n{}", self.log_text());
            }
            if self.cli(&["status"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mxscreen run did not become ready:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops with SIGTERM and asserts a clean exit (code 0).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(15));
        assert_eq!(
            status.code(),
            Some(0),
            "exit after SIGTERM:\n{}",
            self.log_text()
        );
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the daemon: a hung daemon, and its recovery.
    pub fn freeze(&self, frozen: bool) {
        let sig = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// `kill -9`: no cleanup at all.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let _ = child.wait();
    }

    /// Starts again with the same config, state, socket and pins.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.launch();
    }

    /// The daemon's process id (nsenter execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (after `from` bytes), or panics with the log.
    pub fn wait_log(&self, needle: &str, from: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .log_text()
                .get(from..)
                .is_some_and(|t| t.contains(needle))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("log never showed {needle:?}:\n{}", self.log_text());
    }

    /// Runs `mxscreen ARGS --socket <ours>` as root, in the daemon's network namespace: on
    /// the daemon's host, as an operator runs it, where `check` reaches the nameservers the
    /// daemon's config names (from outside, each of its lookups would wait out the timeout).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns_file.display()))
            .arg(mxscreen_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run mxscreen")
    }

    /// Like [`MxDaemon::cli`], asserting success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "mxscreen {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The daemon's cached verdict action for `ip` (`pass`/`limit`/`drop`), if any.
    pub fn verdict(&self, ip: &str) -> Option<String> {
        self.verdict_entry(ip)
            .map(|e| e["action"].as_str().unwrap().to_owned())
    }

    /// The `list --verdicts --json` entry (one JSON object per line) for `ip`, if any.
    pub fn verdict_entry(&self, ip: &str) -> Option<serde_json::Value> {
        let host = if ip.contains(':') {
            format!("{ip}/128")
        } else {
            format!("{ip}/32")
        };
        ndjson(&self.cli_ok(&["list", "--verdicts", "--json"]))
            .into_iter()
            .find(|e| e["net"] == host.as_str())
    }

    /// Waits for a verdict for `ip` and returns its action.
    pub fn wait_verdict(&self, ip: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(a) = self.verdict(ip) {
                return a;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no verdict for {ip} within {timeout:?}:\n{}",
            self.log_text()
        );
    }

    /// Asks the query socket about `ip` as Exim's readsocket does (one line in, one line
    /// out, then EOF); returns the answer line without its newline.
    pub fn query(&self, ip: &str) -> String {
        query_socket(&self.query_socket, format!("{ip}\n").as_bytes())
    }

    /// `mxscreen status --json`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["status", "--json"])).expect("status JSON")
    }

    /// Feed `name` as `status --json` shows it.
    pub fn feed(&self, name: &str) -> serde_json::Value {
        self.status()["feeds"]
            .as_array()
            .expect("feeds in status")
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no feed {name} in status"))
            .clone()
    }

    /// Waits until `cond` holds (checked every 50 ms), or panics with the log.
    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A field of /proc/PID/status in KiB: `VmRSS:` now, `VmHWM:` the peak.
    pub fn memory_kib(&self, field: &str) -> u64 {
        let s = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        s.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// A datapath counter from `mxscreen stats --json`.
    pub fn counter(&self, name: &str) -> u64 {
        let s: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["stats", "--json"])).unwrap();
        s["datapath"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {}", s["datapath"]))
    }
}

/// Sends `request` to a query socket, half-closes, and reads the answer until EOF.
pub fn query_socket(path: &Path, request: &[u8]) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(path)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    s.read_to_string(&mut out).expect("reading the answer");
    assert!(
        out.ends_with('\n') && out.matches('\n').count() == 1,
        "not one line: {out:?}"
    );
    out.trim_end().to_owned()
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for MxDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.pin_dir);
    }
}

/// Runs a command as an unprivileged user (nobody), for permission tests.
pub fn as_nobody(bin: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(bin)
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

/// `Output` as text for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--json` output of `list`: one JSON object per line.
pub fn ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
