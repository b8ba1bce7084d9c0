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
/// Where [`RedisServer::start_sentinel`]'s Sentinel listens.
pub const SENTINEL_PORT: u16 = 26379;
/// The name the Sentinel knows the server by.
pub const MASTER_NAME: &str = "mxprimary";

pub struct RedisServer {
    ns: String,
    dir: tempfile::TempDir,
    server: Option<Daemon>,
    sentinel: Option<Daemon>,
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
            sentinel: None,
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

    /// Starts a Sentinel (`redis-server --sentinel`) monitoring this server as
    /// [`MASTER_NAME`]; returns once it names the primary. The URL for `[fleet] redis`.
    pub fn start_sentinel(&mut self, ns: &NetNs) -> String {
        let conf = self.dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {SENTINEL_PORT}\nbind 127.0.0.1\nprotected-mode no\nsentinel monitor {MASTER_NAME} 127.0.0.1 {REDIS_PORT} 1\n"
            ),
        )
        .expect("write sentinel.conf");
        let mut cmd = Command::new(require_binary("redis-server"));
        cmd.arg(&conf).arg("--sentinel");
        let log = self.dir.path().join("sentinel.log");
        self.sentinel = Some(ns.enter(|| Daemon::spawn("redis-sentinel", cmd, log)));
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = SENTINEL_PORT.to_string();
        loop {
            let out = self.cli_at(&port, &["SENTINEL", "get-master-addr-by-name", MASTER_NAME]);
            if out.contains(&REDIS_PORT.to_string()) {
                return format!("redis+sentinel://127.0.0.1:{SENTINEL_PORT}/{MASTER_NAME}/0");
            }
            self.sentinel.as_mut().unwrap().assert_running();
            assert!(
                Instant::now() < deadline,
                "the Sentinel does not name the primary: {out:?}\n{}",
                self.sentinel.as_ref().unwrap().log()
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
        self.cli_at(&REDIS_PORT.to_string(), args)
    }

    fn cli_at(&self, port: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(cli_bin())
            .args(["-h", "127.0.0.1", "-p", port])
            .args(args)
            .output()
            .expect("ip netns exec redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes many keys at once: `SET KEY VALUE PX TTL_MS` for each, through
    /// `redis-cli --pipe` (the Redis protocol, so values may hold anything).
    pub fn load(&self, entries: &[(String, String)], ttl_ms: u64) {
        let mut resp = Vec::new();
        let ttl = ttl_ms.to_string();
        for (k, v) in entries {
            resp.extend_from_slice(b"*5\r\n");
            for part in ["SET", k, v, "PX", &ttl] {
                resp.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
                resp.extend_from_slice(part.as_bytes());
                resp.extend_from_slice(b"\r\n");
            }
        }
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), resp).expect("write commands");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(cli_bin())
            .args(["-h", "127.0.0.1", "-p", &REDIS_PORT.to_string(), "--pipe"])
            .stdin(std::fs::File::open(file.path()).unwrap())
            .output()
            .expect("redis-cli --pipe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("errors: 0"),
            "redis-cli --pipe: {text}"
        );
    }

    /// `used_memory` from `INFO memory`, in bytes.
    pub fn used_memory(&self) -> u64 {
        let info = self.cli(&["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no used_memory in {info}"))
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
