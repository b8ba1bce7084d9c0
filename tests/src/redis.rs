//! A real `redis-server` (Debian's package) for the fleet tests: started inside a test
//! namespace on its loopback, without persistence (a restart comes back empty, like a Redis
//! that lost its data), killed when its guard drops. `redis-cli` inspects and tampers.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    dns::{Daemon, require_binary},
    netns::NetNs,
};

/// Where the server listens, inside its namespace.
pub const REDIS_PORT: u16 = 6379;

pub struct RedisServer {
    ns: String,
    dir: tempfile::TempDir,
    server: Option<Daemon>,
    /// Times the server was started (names each log file).
    starts: u32,
}

impl RedisServer {
    /// Starts redis-server in `ns` on 127.0.0.1:[`REDIS_PORT`]; returns once it answers.
    pub fn start(ns: &NetNs) -> Self {
        let mut r = Self {
            ns: ns.name.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
            server: None,
            starts: 0,
        };
        r.launch(ns);
        r
    }

    /// The URL for `[fleet] redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{REDIS_PORT}/0")
    }

    fn launch(&mut self, ns: &NetNs) {
        let bin = require_binary("redis-server");
        self.starts += 1;
        let log = self.dir.path().join(format!("redis-{}.log", self.starts));
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        self.server = Some(ns.enter(|| Daemon::spawn("redis-server", cmd, log)));
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.cli(&["PING"]).trim() != "PONG" {
            self.server.as_mut().unwrap().assert_running();
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING:\n{}",
                self.server.as_ref().unwrap().log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server outright (SIGKILL): the fleet's bus is gone.
    pub fn kill(&mut self) {
        self.server = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.answers() {
            assert!(Instant::now() < deadline, "redis-server still answers");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self, ns: &NetNs) {
        assert!(self.server.is_none(), "kill first");
        self.launch(ns);
    }

    fn answers(&self) -> bool {
        self.cli(&["PING"]).trim() == "PONG"
    }

    /// `redis-cli ARGS` against the server, from inside its namespace; stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(cli_bin())
            .args(["-h", "127.0.0.1", "-p", &REDIS_PORT.to_string()])
            .args(args)
            .output()
            .expect("ip netns exec redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `MEMORY USAGE KEY` in bytes.
    pub fn memory_usage(&self, key: &str) -> u64 {
        let out = self.cli(&["MEMORY", "USAGE", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("MEMORY USAGE {key}: {out:?}"))
    }
}

fn cli_bin() -> PathBuf {
    require_binary("redis-cli")
}
