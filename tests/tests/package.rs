//! The Debian package as an operator meets it: what `cargo xtask deb` builds (contents,
//! conffile, generated config, man pages, completions), the unit's hardening score, the
//! daemon under exactly the unit's capabilities, and the package installed in a booted
//! Debian 12 container (systemd-nspawn) driven with systemctl and journalctl through
//! install, reload, upgrade, stop and purge; and on a build host that is a Postfix MX, what
//! xtask installs to build the package keeps Postfix, while what the tests need is refused.
//! Needs root; `cargo xtask test package` builds the package first and names it in
//! `MXSCREEN_DEB`, and names itself in `MXSCREEN_XTASK`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use clap::CommandFactory as _;
use mxscreen_tests::{
    daemon::{MxDaemon, Spec, mxscreen_bin, text},
    metrics::scrape,
    netns::{CLIENT_V4, SERVER_IFACE, SERVER_V4, Wire},
};

fn deb() -> PathBuf {
    let p = PathBuf::from(std::env::var_os("MXSCREEN_DEB").expect(
        "MXSCREEN_DEB is not set: run this suite with `cargo xtask test package`, which builds the package",
    ));
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run `cargo xtask setup`)"))
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package unpacked into a temporary root.
fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb())
        .arg(dir.path()));
    dir
}

const UNIT: &str = "usr/lib/systemd/system/mxscreen.service";

#[test]
fn package_ships_binary_unit_conffile_docs_man_pages_and_completions() {
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(deb()));
    let mut want: Vec<String> = [
        "./usr/sbin/mxscreen",
        "./usr/lib/systemd/system/mxscreen.service",
        "./etc/mxscreen/mxscreen.toml",
        "./usr/share/bash-completion/completions/mxscreen",
        "./usr/share/zsh/vendor-completions/_mxscreen",
        "./usr/share/fish/vendor_completions.d/mxscreen.fish",
        "./usr/share/doc/mxscreen/README.md",
        "./usr/share/doc/mxscreen/mxscreen-dashboard.json",
        "./usr/share/doc/mxscreen/examples/exim4-acl.conf",
        "./usr/share/doc/mxscreen/examples/postfix-main.cf",
        "./usr/share/doc/mxscreen/examples/postfix-master.cf",
        "./usr/share/man/man8/mxscreen.8.gz",
    ]
    .map(String::from)
    .to_vec();
    // A man page for every subcommand (and sub-subcommand), named as `man` finds it.
    let cli = mxscreen::cli::Cli::command();
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        want.push(format!(
            "./usr/share/man/man8/mxscreen-{}.8.gz",
            sub.get_name()
        ));
        for inner in sub.get_subcommands().filter(|s| s.get_name() != "help") {
            want.push(format!(
                "./usr/share/man/man8/mxscreen-{}-{}.8.gz",
                sub.get_name(),
                inner.get_name()
            ));
        }
    }
    for path in &want {
        assert!(
            listing.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} is not in the package:\n{listing}"
        );
    }
    assert!(listing.contains("-rwxr-xr-x root/root") || listing.contains("-rwxr-xr-x 0/0"));

    let info = ok(Command::new("dpkg-deb").arg("-I").arg(deb()));
    assert!(info.contains("Package: mxscreen"), "{info}");
    assert!(info.contains("procps"), "ExecReload's /bin/kill: {info}");
    assert!(
        info.lines().any(|l| l.trim() == "Recommends: nftables"),
        "the nftables backend's nft: {info}"
    );
    let ctrl = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb")
        .arg("-e")
        .arg(deb())
        .arg(ctrl.path()));
    assert_eq!(
        std::fs::read_to_string(ctrl.path().join("conffiles"))
            .unwrap()
            .trim(),
        "/etc/mxscreen/mxscreen.toml"
    );
    let postrm = std::fs::read_to_string(ctrl.path().join("postrm")).unwrap();
    assert!(
        postrm.contains("rm -rf /etc/mxscreen /var/lib/mxscreen /sys/fs/bpf/mxscreen"),
        "{postrm}"
    );

    // The shipped config: observe mode, said why first, every other key at its default,
    // and `config check` passes.
    let root = unpacked();
    let config = root.path().join("etc/mxscreen/mxscreen.toml");
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    let head: String = text_cfg.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(head.contains("policy.observe = true"), "{head}");
    let cfg = mxscreen::config::Config::load(&config).unwrap();
    assert_eq!(cfg, mxscreen::config::packaged::packaged());
    let mut defaults = mxscreen::config::Config::default();
    defaults.policy.observe = true;
    defaults.metrics.listen = Some("127.0.0.1:9725".parse().unwrap());
    assert_eq!(cfg, defaults);
    let out = ok(Command::new(mxscreen_bin())
        .args(["config", "check"])
        .arg(&config));
    assert!(out.trim().ends_with(": ok"), "{out}");

    // Man pages render; completions name the subcommands.
    let page = ok(Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(root.path().join("usr/share/man/man8/mxscreen-block.8.gz"))
        .env("MANWIDTH", "100"));
    assert!(
        page.contains("mxscreen-block") && page.contains("--force"),
        "{page}"
    );
    let bash = std::fs::read_to_string(
        root.path()
            .join("usr/share/bash-completion/completions/mxscreen"),
    )
    .unwrap();
    assert!(bash.contains("unblock") && bash.contains("--log-format"));
}

/// `NAME=value` lines of a unit section, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn unit_is_hardened_to_at_most_3_0() {
    let root = unpacked();
    let unit_path = root.path().join(UNIT);
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit_path));
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for mxscreen.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}{}", text(&out)));
    assert!(score <= 3.0, "exposure {score} > 3.0:\n{report}");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for (key, want) in [
        ("Type", "notify"),
        ("ExecStart", "/usr/sbin/mxscreen run"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        // SIGTERM to the daemon alone: systemd's to the whole unit killed the `nft` that
        // deletes the nftables table at a stop, now and then.
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
        ("RuntimeDirectory", "mxscreen"),
        ("StateDirectory", "mxscreen"),
        ("NoNewPrivileges", "yes"),
        ("ReadWritePaths", "-/sys/fs/bpf"),
    ] {
        assert_eq!(unit_values(&unit, key), vec![want.to_owned()], "{key}");
    }
}

/// The unit's capabilities as setpriv spells them (`bpf`, `net_admin`, ...).
fn unit_capabilities() -> Vec<String> {
    let root = unpacked();
    let unit = std::fs::read_to_string(root.path().join(UNIT)).unwrap();
    let caps = unit_values(&unit, "CapabilityBoundingSet");
    assert_eq!(caps.len(), 1, "one CapabilityBoundingSet line: {caps:?}");
    assert_eq!(
        unit_values(&unit, "AmbientCapabilities"),
        vec![String::new()]
    );
    caps[0]
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// `setpriv` limited to `caps`, with no-new-privileges, as systemd runs the unit (as root).
fn setpriv(caps: &[String]) -> Vec<String> {
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    vec![
        "setpriv".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        format!("--bounding-set=-all{set}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// The nice value of `pid`'s thread named `name` (`/proc/PID/task/TID/stat`, field 19).
fn thread_nice(pid: u32, name: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // "TID (COMM) STATE PPID ...": the fields after the comm's closing parenthesis
            // start with the state, field 3; nice is field 19.
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            (comm == name).then(|| rest.split_whitespace().nth(16)?.parse().ok())?
        })
}

/// The capability names a process holds in effect (`capsh --decode`).
fn effective_caps(pid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    let decoded = ok(Command::new("capsh").arg(format!("--decode={}", field("CapEff:"))));
    let mut caps: Vec<String> = decoded
        .trim()
        .split_once('=')
        .map_or("", |(_, names)| names)
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| c.trim_start_matches("cap_").to_owned())
        .collect();
    caps.sort();
    caps
}

/// A wire whose server listens on port 25 and runs the daemon under setpriv with exactly
/// `caps` (checked), `datapath` lines added. No lookups here: every peer of the wire is
/// allowed until blocked by hand, and first contacts pass (no DNS answers here, and these
/// tests are about capabilities).
fn with_capabilities(
    tag: &str,
    datapath: &str,
    caps: &[String],
) -> (Wire, std::net::TcpListener, MxDaemon) {
    let wire = Wire::new(tag);
    let listener = wire
        .server
        .enter(|| std::net::TcpListener::bind(format!("{SERVER_V4}:25")).unwrap());
    let spec = Spec {
        sections: "[resolver]\nnameservers = [\"127.0.0.1\"]\n\n[lists]\nallow = []\n\n[rdns]\nenabled = false\n"
            .into(),
        datapath: format!("{datapath}\nfirst_contact = \"pass\"\n"),
        wrapper: setpriv(caps),
        ..Default::default()
    };
    let d = MxDaemon::start(&wire.server, SERVER_IFACE, spec);
    let mut want = caps.to_vec();
    want.sort();
    assert_eq!(effective_caps(d.pid()), want);
    (wire, listener, d)
}

/// A peer connects, is blocked by hand and refused, is unblocked and connects again.
fn blocks_and_unblocks(wire: &Wire, d: &MxDaemon) {
    let smtp: SocketAddr = format!("{SERVER_V4}:25").parse().unwrap();
    let peer = CLIENT_V4[0];
    wire.connect(peer, smtp, Duration::from_secs(5)).unwrap();
    d.cli_ok(&["block", peer, "--reason", "capability test"]);
    assert!(
        wire.connect(peer, smtp, Duration::from_millis(800))
            .is_err(),
        "blocked under these capabilities"
    );
    d.cli_ok(&["unblock", peer]);
    wire.connect(peer, smtp, Duration::from_secs(5)).unwrap();
}

#[test]
fn daemon_works_with_exactly_the_units_capabilities_and_needs_each() {
    let caps = unit_capabilities();
    // The eBPF backend asked for by name: `auto` would screen with nftables without CAP_BPF
    // (see the next test).
    let (wire, _listener, mut d) =
        with_capabilities("pc", "backend = \"ebpf\"\nmode = \"xdp\"", &caps);
    assert_eq!(
        thread_nice(d.pid(), "mxscreen-mta"),
        Some(-10),
        "the MTA sockets' thread raises its priority with the unit's CAP_SYS_NICE"
    );
    blocks_and_unblocks(&wire, &d);
    let from = d.log_text().len();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_log("config reloaded", from, Duration::from_secs(10));
    d.stop();

    // Each capability but CAP_CHOWN (the MTA query socket's, not used at start) and
    // CAP_SYS_NICE (the MTA thread's priority; without it nice 0, logged) is needed: without
    // it the daemon refuses to start, with one line, rather than run half-attached.
    for missing in caps
        .iter()
        .filter(|c| !["chown", "sys_nice"].contains(&c.as_str()))
    {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let out = run(Command::new("timeout")
            .arg("20")
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", wire.server.name))
            .args(setpriv(&fewer))
            .arg(mxscreen_bin())
            .args(["run", "--config"])
            .arg(&d.config));
        assert!(
            !out.status.success() && out.status.code() != Some(124),
            "without {missing} the daemon must fail at start: {}",
            text(&out)
        );
    }
}

/// Asserts that `status` says the daemon screens with nftables because eBPF could not be
/// used (`auto`), and why.
#[track_caller]
fn fell_back_to_nftables(status: &str) {
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("backend:")
                && l.contains("nftables (auto: eBPF could not be used:")),
        "{status}"
    );
}

/// A host that forbids BPF: the unit's capabilities without CAP_BPF and CAP_PERFMON, every
/// datapath key at its default. `auto` screens with nftables (CAP_NET_ADMIN is all it needs)
/// and says why; blocks hold and go, and the table goes at a clean exit.
#[test]
fn without_cap_bpf_the_unit_screens_with_nftables() {
    let caps: Vec<String> = unit_capabilities()
        .into_iter()
        .filter(|c| !["bpf", "perfmon"].contains(&c.as_str()))
        .collect();
    let (wire, _listener, mut d) = with_capabilities("pn", "", &caps);
    fell_back_to_nftables(&d.cli_ok(&["status"]));
    blocks_and_unblocks(&wire, &d);
    d.stop();
    let tables =
        ok(Command::new("ip").args(["netns", "exec", &wire.server.name, "nft", "list", "tables"]));
    assert!(
        !tables.contains("mxscreen"),
        "the table outlived a clean exit: {tables}"
    );
}

/// The Debian 12 root the container boots: built once with mmdebstrap from Debian's
/// packages and kept outside the repository; the container runs on a throw-away overlay.
const ROOT: &str = "/var/cache/mxscreen-tests/bookworm-systemd";
const ROOT_PACKAGES: &str = "systemd,systemd-sysv,dbus,procps,man-db";

fn debian_root() -> PathBuf {
    let root = PathBuf::from(ROOT);
    let done = root.join(".mxscreen-root-complete");
    if done.exists() {
        return root;
    }
    let tmp = PathBuf::from(format!("{ROOT}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    ok(Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet"])
        .arg(format!("--include={ROOT_PACKAGES}"))
        .arg("bookworm")
        .arg(&tmp));
    std::fs::rename(&tmp, &root).unwrap();
    std::fs::write(&done, ROOT_PACKAGES).unwrap();
    root
}

/// A booted container; killed (and its overlay dropped) on drop.
struct Container {
    nspawn: std::process::Child,
    init: u32,
    _log: tempfile::NamedTempFile,
}

impl Container {
    fn boot(root: &Path, netns: &str, deb: &Path) -> Self {
        // What the unit keeps must be in the container's bounding set, and nspawn's own
        // seccomp filter refuses bpf(2) unless told otherwise.
        Self::boot_with(
            root,
            netns,
            deb,
            &[
                "--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
                "--system-call-filter=bpf",
            ],
        )
    }

    /// [`Container::boot`] with `sandbox` (nspawn's capability and system call options).
    fn boot_with(root: &Path, netns: &str, deb: &Path, sandbox: &[&str]) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args([
                "--volatile=overlay",
                "--register=no",
                "--keep-unit",
                "--quiet",
                "--boot",
            ])
            .arg(format!("--network-namespace-path=/run/netns/{netns}"))
            .args(sandbox)
            .arg(format!("--bind-ro={}:/root/mxscreen.deb", deb.display()))
            .stdin(std::process::Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("systemd-nspawn (systemd-container)");
        let pid = nspawn.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        // The container's PID 1: nspawn's child once it has become systemd.
        let init = loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let init = children.split_whitespace().find(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            });
            if let Some(c) = init {
                break c.parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "the container did not start: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let c = Self {
            nspawn,
            init,
            _log: log,
        };
        // Until systemd listens, systemctl cannot connect; then `--wait` waits for the boot.
        // `degraded` is fine (a unit of a minimal root may fail in a container).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.exec("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if ["running", "degraded"].contains(&state.as_str()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "container boot: {state} {}",
                text(&out)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn exec(&self, script: &str) -> Output {
        run(Command::new("nsenter")
            .arg("-t")
            .arg(self.init.to_string())
            .args(["-a", "sh", "-c", script]))
    }

    /// Runs `script` inside (as root), asserting success; returns stdout.
    #[track_caller]
    fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(out.status.success(), "{script}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `script` succeeds inside.
    #[track_caller]
    fn wait(&self, script: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(script);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "{script} never succeeded: {}\n{}",
                text(&out),
                self.exec("journalctl -u mxscreen --no-pager -n 30")
                    .stdout
                    .escape_ascii()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing the container's PID 1 ends its whole PID namespace; nspawn then sees the
        // container gone and removes its overlay itself. Killing only nspawn would leave the
        // container's systemd (and its journald, dbus, logind) running, adopted by the host's
        // PID 1.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// Whether an XDP program is attached to the container's interface (seen from the host).
fn attached(wire: &Wire) -> bool {
    let out =
        run(Command::new("ip").args(["-n", &wire.server.name, "-d", "link", "show", SERVER_IFACE]));
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn install_reload_upgrade_stop_and_purge_in_a_debian_container() {
    let root = debian_root();
    // The container's network: the server side of a wire, its default route to the client,
    // so the packaged config (default-route interface) attaches to `vs`.
    let wire = Wire::new("pn");
    wire.server
        .ip(&["route", "add", "default", "via", CLIENT_V4[0]]);
    let c = Container::boot(&root, &wire.server.name, &deb());
    // systemd mounts the BPF filesystem at boot on a host; nspawn gives a container none.
    c.sh("mount -t bpf bpf /sys/fs/bpf");

    c.sh("DEBIAN_FRONTEND=noninteractive dpkg -i /root/mxscreen.deb");
    assert_eq!(c.sh("systemctl is-enabled mxscreen").trim(), "enabled");
    c.wait("systemctl is-active mxscreen", Duration::from_secs(20));
    assert!(attached(&wire), "attached after install");
    let verify = c.exec("systemd-analyze verify mxscreen.service");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    c.sh("mxscreen config check /etc/mxscreen/mxscreen.toml");
    // The start message in the journal, with structured fields.
    let started = c.sh(&format!(
        "journalctl -u mxscreen -o json --no-pager MXSCREEN_IFACE={SERVER_IFACE}"
    ));
    let entry: serde_json::Value = serde_json::from_str(started.lines().next().unwrap()).unwrap();
    assert!(
        entry["MESSAGE"].as_str().unwrap().starts_with("attached"),
        "{entry}"
    );
    assert_eq!(entry["PRIORITY"], "6");
    assert_eq!(
        entry["MXSCREEN_OBSERVE"], "true",
        "the packaged config observes"
    );

    // A new peer becomes a verdict (observe mode; no resolver reachable here, so a
    // tempfail one), logged with its fields.
    let smtp: SocketAddr = format!("{SERVER_V4}:25").parse().unwrap();
    let peer = CLIENT_V4[0];
    let _ = wire.connect(peer, smtp, Duration::from_secs(2));
    let verdict = c.wait(
        &format!("journalctl -u mxscreen -o json --no-pager MXSCREEN_IP={peer} | grep -q . && journalctl -u mxscreen -o json --no-pager MXSCREEN_IP={peer}"),
        Duration::from_secs(20),
    );
    let v: serde_json::Value = serde_json::from_str(verdict.lines().next().unwrap()).unwrap();
    assert!(
        v["MESSAGE"]
            .as_str()
            .unwrap()
            .starts_with("mxscreen-verdict"),
        "{v}"
    );
    let action = v["MXSCREEN_ACTION"]
        .as_str()
        .expect("MXSCREEN_ACTION")
        .to_owned();
    assert!(["pass", "limit", "drop"].contains(&action.as_str()), "{v}");
    assert!(
        v["MXSCREEN_SCORE"].is_string() && v["MXSCREEN_SOURCE"].is_string(),
        "{v}"
    );
    let by_action = c.sh(&format!(
        "journalctl -u mxscreen --no-pager -o cat MXSCREEN_ACTION={action}"
    ));
    assert!(by_action.contains(&format!("ip={peer}")), "{by_action}");

    // Metrics on loopback, as packaged.
    let body = scrape(&wire.server, "127.0.0.1:9725".parse().unwrap());
    assert!(body.contains("mxscreen_observe_mode 1"), "{body}");

    // The thread answering the MTA raised itself to nice -10 under the unit's sandbox
    // (CAP_SYS_NICE, setpriority allowed by its system call filter).
    let nice = c.sh(
        "ps -L -o comm=,nice= -p \"$(systemctl show -p MainPID --value mxscreen)\" \
         | awk '$1 == \"mxscreen-mta\" { print $2 }'",
    );
    assert_eq!(
        nice.trim(),
        "-10",
        "the MTA sockets' thread's nice value: {}",
        c.sh("journalctl -u mxscreen --no-pager -o cat | grep -i priority || true")
    );

    // Reload by systemctl (SIGHUP): applied, still running.
    c.sh("mxscreen block 198.51.100.7 --reason 'package test'");
    c.sh("systemctl reload mxscreen");
    c.wait(
        "journalctl -u mxscreen --no-pager -o cat | grep -q 'config reloaded'",
        Duration::from_secs(10),
    );
    assert_eq!(c.sh("systemctl is-active mxscreen").trim(), "active");

    // Upgrade (the same package again): restarted, and the pins kept the verdict.
    let pid = c.sh("systemctl show -p MainPID --value mxscreen");
    c.sh("DEBIAN_FRONTEND=noninteractive dpkg -i /root/mxscreen.deb");
    c.wait("systemctl is-active mxscreen", Duration::from_secs(20));
    assert_ne!(
        c.sh("systemctl show -p MainPID --value mxscreen"),
        pid,
        "restarted"
    );
    let listed = c.sh("mxscreen list --json");
    assert!(
        listed.contains(&format!("\"{peer}/32\"")),
        "verdict kept: {listed}"
    );
    assert!(listed.contains("198.51.100.7/32"), "block kept: {listed}");

    // Stop detaches; start attaches again.
    c.sh("systemctl stop mxscreen");
    assert!(!attached(&wire), "detached after stop");
    c.sh("systemctl start mxscreen");
    assert!(attached(&wire));

    // Purge: nothing attached, config, state and pins gone.
    c.sh("DEBIAN_FRONTEND=noninteractive dpkg --purge mxscreen");
    assert!(!attached(&wire), "detached after purge");
    for gone in [
        "/usr/sbin/mxscreen",
        "/etc/mxscreen",
        "/var/lib/mxscreen",
        "/sys/fs/bpf/mxscreen",
    ] {
        c.sh(&format!("test ! -e {gone}"));
    }
}

/// A container where BPF cannot load, as Docker's and unprivileged LXC's: of the unit's
/// capabilities only CAP_NET_ADMIN in its bounding set, nspawn's own seccomp filter (which
/// refuses bpf(2), as Docker's default profile does), no BPF filesystem. The package
/// installed as the README says (`apt install ./mxscreen_….deb`, which brings the nftables
/// it recommends), the unit starts at boot under its whole sandbox with the packaged config,
/// screens with nftables and says why; a new peer is reported over NFLOG and becomes a
/// verdict; a stop deletes the table.
#[test]
fn the_unit_screens_with_nftables_in_a_container_without_bpf() {
    let overlay = Overlay::over(&debian_root());
    let root = overlay.root();
    ok(Command::new("systemd-nspawn")
        .arg("-D")
        .arg(&root)
        .args(["--quiet", "--pipe", "--register=no", "--keep-unit"])
        .arg(format!("--bind-ro={}:/root/mxscreen.deb", deb().display()))
        .arg("--setenv=DEBIAN_FRONTEND=noninteractive")
        .args([
            "--",
            "sh",
            "-c",
            "apt-get update -q && apt-get install -y -q /root/mxscreen.deb",
        ]));
    assert!(
        installed(&root, "nftables"),
        "apt installs what the package recommends"
    );
    let wire = Wire::new("pq");
    wire.server
        .ip(&["route", "add", "default", "via", CLIENT_V4[0]]);
    let c = Container::boot_with(
        &root,
        &wire.server.name,
        &deb(),
        &["--capability=CAP_NET_ADMIN"],
    );
    c.wait("systemctl is-active mxscreen", Duration::from_secs(20));
    fell_back_to_nftables(&c.sh("mxscreen status"));
    assert!(!attached(&wire), "no XDP program where BPF cannot load");
    let tables = c.sh("nft list tables");
    assert!(tables.contains("mxscreen"), "{tables}");

    // A new peer is reported (NFLOG, under the unit's address families and system call
    // filter) and becomes a verdict (a tempfail one: no resolver reachable here).
    let smtp: SocketAddr = format!("{SERVER_V4}:25").parse().unwrap();
    let peer = CLIENT_V4[0];
    let _ = wire.connect(peer, smtp, Duration::from_secs(2));
    c.wait(
        &format!(
            "journalctl -u mxscreen -o cat --no-pager MXSCREEN_IP={peer} | grep -q mxscreen-verdict"
        ),
        Duration::from_secs(20),
    );
    c.sh("systemctl stop mxscreen");
    let tables = c.sh("nft list tables");
    assert!(
        !tables.contains("mxscreen"),
        "the table outlived a stop: {tables}\nthe unit's log:\n{}",
        c.sh("journalctl -u mxscreen -o short-monotonic --no-pager | tail -n 60")
    );
}

/// The same Debian 12 root with Postfix installed, as on a Postfix MX: built once from
/// [`debian_root`] (Debian's postfix package, installed by apt in the container) and cached
/// beside it.
const POSTFIX_ROOT: &str = "/var/cache/mxscreen-tests/bookworm-postfix";
/// How [`POSTFIX_ROOT`] is made from [`debian_root`], run in it. Its package lists stay (the
/// install step's `apt-get update` then fetches little); man-db's triggers and dpkg's syncs
/// would only slow the installs it is made for.
const POSTFIX_RECIPE: &str = "apt-get update -q \
    && apt-get install -y -q --no-install-recommends postfix \
    && apt-get purge -y -q man-db \
    && echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/mxscreen-tests-unsafe-io";

fn postfix_root() -> PathBuf {
    let root = PathBuf::from(POSTFIX_ROOT);
    let done = root.join(".mxscreen-root-complete");
    if std::fs::read_to_string(&done).is_ok_and(|made| made == POSTFIX_RECIPE) {
        return root;
    }
    let base = debian_root();
    let tmp = PathBuf::from(format!("{POSTFIX_ROOT}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(&root);
    ok(Command::new("cp").arg("-a").arg(&base).arg(&tmp));
    std::fs::remove_file(tmp.join(".mxscreen-root-complete")).unwrap();
    ok(nspawn(&tmp).args(["sh", "-c", POSTFIX_RECIPE]));
    assert!(installed(&tmp, "postfix"));
    std::fs::rename(&tmp, &root).unwrap();
    std::fs::write(&done, POSTFIX_RECIPE).unwrap();
    root
}

/// `systemd-nspawn` running one command in `root` (no boot; the host's network, for apt).
fn nspawn(root: &Path) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.arg("-D")
        .arg(root)
        .args(["--quiet", "--pipe", "--register=no", "--keep-unit"])
        .arg("--setenv=DEBIAN_FRONTEND=noninteractive")
        .arg("--");
    cmd
}

/// Whether dpkg in `root` has `package` installed.
fn installed(root: &Path, package: &str) -> bool {
    let out = run(Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f=${db:Status-Status}", package]));
    out.status.success() && out.stdout == b"installed"
}

/// A throw-away copy of a root: an overlay over it, unmounted (and dropped) on drop.
struct Overlay {
    dir: tempfile::TempDir,
}

impl Overlay {
    fn over(lower: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let p = |d: &str| dir.path().join(d).display().to_string();
        ok(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                p("upper"),
                p("work")
            ))
            .arg(p("root")));
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.root()).status();
    }
}

/// The xtask binary of this run (`cargo xtask test` names itself).
fn xtask() -> PathBuf {
    PathBuf::from(
        std::env::var_os("MXSCREEN_XTASK")
            .expect("MXSCREEN_XTASK is not set: run this suite with `cargo xtask test package`"),
    )
}

/// The install step of `cargo xtask deb` and `cargo xtask run` (`setup`), run by xtask itself
/// into a Debian root where Postfix is the MTA: it installs what building needs and Postfix
/// stays. The test suites' step (`setup --tests`, which `cargo xtask test` runs) would swap
/// Postfix for exim4-daemon-light: it refuses, names Postfix, and installs nothing.
#[test]
fn building_on_a_postfix_host_keeps_postfix_and_test_setup_refuses_to_remove_it() {
    let overlay = Overlay::over(&postfix_root());
    let root = overlay.root();
    assert!(installed(&root, "postfix"));
    assert!(
        !installed(&root, "gcc"),
        "the root must lack what building needs"
    );

    let build = run(Command::new(xtask()).args(["setup", "--root"]).arg(&root));
    assert!(build.status.success(), "setup --root: {}", text(&build));
    assert!(installed(&root, "gcc") && installed(&root, "zlib1g-dev"));
    assert!(installed(&root, "postfix"), "building removed Postfix");

    let tests = run(Command::new(xtask())
        .args(["setup", "--tests", "--root"])
        .arg(&root));
    let said = text(&tests);
    assert!(!tests.status.success(), "setup --tests installed: {said}");
    assert!(
        said.contains("refusing") && said.contains("would remove postfix"),
        "{said}"
    );
    assert!(
        installed(&root, "postfix"),
        "the test setup removed Postfix"
    );
    for p in ["exim4-daemon-light", "redis-server", "rbldnsd"] {
        assert!(!installed(&root, p), "{p} installed although refused");
    }
}
