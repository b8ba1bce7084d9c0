//! A real Postfix beside the testbed's Exim: Debian's postfix package, unpacked privately by
//! `cargo xtask setup` (it conflicts with exim4 as a package, so it cannot be installed), run
//! as `master -d` with its own main.cf/master.cf, queue, data directory and log file in a
//! tempdir, in the MTA namespace and the same private mounts as Exim (its resolver, and the
//! test daemon's sockets at `/run/mxscreen`). main.cf and master.cf carry the README's
//! snippets word for word, but for the port: the snippet's `smtp` service (port 25, Exim's
//! in the testbed) listens on the test's port instead.
//!
//! **Chrooted as Debian ships it.** The port-25 smtpd and the services Debian's master.cf
//! chroots run in the queue directory (`y` in the chroot column), with the files Debian's
//! start script copies into it (`etc/resolv.conf`, `etc/hosts`, ...): a policy service on a
//! Unix socket outside the chroot would be out of its reach, which is the trap the README's
//! `inet:` snippet avoids.
//!
//! **Submission** on [`SUBMISSION_PORT`] takes AUTH PLAIN from the submission user (Cyrus
//! SASL with a sasldb written by `saslpasswd2`; no TLS, which the test Postfix does not
//! have). That smtpd is not chrooted, so the sasldb needs no copy inside the chroot (the
//! port-25 smtpd is the one this harness is about).
//!
//! Postfix wants dedicated accounts; the test host has none for it, so it runs as
//! `Debian-exim` (mail_owner) with `mail` as its set-gid group: Exim's account is the one
//! unprivileged mail account every test host has (setup installs exim4).
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    dns::{Daemon, require_binary},
    mta::{MtaLog, SUBMISSION_PASSWORD, SUBMISSION_USER, private_mounts},
    netns::{NetNs, run},
};

/// Where `cargo xtask setup` unpacks Debian's postfix package (xtask/src/setup.rs
/// `POSTFIX_DIR`, the same path).
pub const POSTFIX_DIR: &str = "/var/cache/mxscreen-tests/postfix";
/// The account Postfix runs as (see the module comment) and its set-gid group.
pub const MAIL_OWNER: &str = "Debian-exim";
const SETGID_GROUP: &str = "mail";
/// Postfix's submission port (it stands for 587, which the testbed's Exim has).
pub const SUBMISSION_PORT: u16 = 2587;
/// The files Debian's start script copies into the chroot (configure-instance.sh), those a
/// test host has.
const CHROOT_ETC: &[&str] = &[
    "services",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "localtime",
];

/// A running Postfix (master and its children) in the MTA namespace.
pub struct Postfix {
    proc: Daemon,
    dir: tempfile::TempDir,
    pub port: u16,
}

/// How long a started master may take to log "daemon started" (it does within a second).
const STARTED_WITHIN: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    let root = Path::new(POSTFIX_DIR).join("root");
    assert!(
        root.join("usr/lib/postfix/sbin/master").is_file(),
        "Postfix is not unpacked in {POSTFIX_DIR}: run `cargo xtask setup`"
    );
    root
}

impl Postfix {
    /// Writes the config, queue, chroot and log and starts Postfix listening on `port` (the
    /// README's port-25 smtpd) and [`SUBMISSION_PORT`] (IPv4 and IPv6) in `ns`; `run` is the
    /// test daemon's socket directory, seen as /run/mxscreen. Returns once both accept.
    pub fn start(ns: &NetNs, port: u16, domain: &str, run: &Path) -> Self {
        Self::started(|| Self::launch(ns, port, domain, Some(run), "", master_cf(port), true))
    }

    /// [`Postfix::start`] with `main_extra` appended to main.cf (later settings win) and
    /// `services` as the master.cf lines of the listener on `port` and what it needs
    /// (postscreen, its smtpd and dnsblog, for instance); `run`: see [`Postfix::start`].
    pub fn start_with(
        ns: &NetNs,
        port: u16,
        domain: &str,
        run: Option<&Path>,
        main_extra: &str,
        services: &str,
    ) -> Self {
        let master = format!("{services}{DELIVERY}");
        Self::started(|| Self::launch(ns, port, domain, run, main_extra, master.clone(), false))
    }

    /// Runs `launch`, once more if the master has not started its services within
    /// [`STARTED_WITHIN`]. Now and then (seen in CI's import suite, under load) a master
    /// binds its listeners, so the port accepts, and then neither logs "daemon started" nor
    /// spawns a single process (no postlogd, qmgr or postscreen) for as long as the test
    /// waits. That is Postfix's start on this testbed, not what a test checks; a second
    /// start that hangs too still fails the test, saying so.
    fn started(mut launch: impl FnMut() -> Self) -> Self {
        for attempt in 1..=2 {
            let p = launch();
            let deadline = Instant::now() + STARTED_WITHIN;
            let up = loop {
                let up = p.maillog().contains("daemon started");
                if up || Instant::now() >= deadline {
                    break up;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if up {
                return p;
            }
            eprintln!(
                "Postfix's master did not start within {STARTED_WITHIN:?} (attempt {attempt} of 2):\n{}",
                p.diagnostics()
            );
        }
        panic!("Postfix's master did not start its services twice in a row");
    }

    /// Writes the config (`master` as master.cf; with `sasl`, the submission user), queue,
    /// chroot and log, and starts Postfix.
    fn launch(
        ns: &NetNs,
        port: u16,
        domain: &str,
        run: Option<&Path>,
        main_extra: &str,
        master: String,
        sasl: bool,
    ) -> Self {
        let root = root();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
        for sub in ["conf", "queue", "queue/pid", "data", "log"] {
            fs::create_dir(d.join(sub)).expect("create postfix dir");
        }
        // What `postfix check` would create: queue directories owned by mail_owner.
        for q in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
            "private", "saved", "trace", "maildrop", "public",
        ] {
            let p = d.join("queue").join(q);
            fs::create_dir(&p).expect("create queue dir");
            let mode = match q {
                "maildrop" => 0o730,
                "public" => 0o710,
                _ => 0o700,
            };
            run_chown(&format!("{MAIL_OWNER}:{SETGID_GROUP}"), &p);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod queue dir");
        }
        run_chown(MAIL_OWNER, &d.join("data"));
        fs::write(d.join("conf/dynamicmaps.cf"), "").expect("write dynamicmaps.cf");
        let main = format!("{}\n{main_extra}", main_cf(&root, d, domain));
        fs::write(d.join("conf/main.cf"), main).expect("write main.cf");
        fs::write(d.join("conf/master.cf"), master).expect("write master.cf");
        if sasl {
            sasl_user(d, domain);
        }
        let mut cmd = private_mounts(d, run);
        // After private_mounts wrote the resolv.conf the chroot gets a copy of.
        chroot_etc(d);
        cmd.arg(root.join("usr/lib/postfix/sbin/master"))
            .arg("-d")
            .env("MAIL_CONFIG", d.join("conf"))
            .env("LD_LIBRARY_PATH", root.join("usr/lib/postfix"));
        let proc = ns.enter(|| Daemon::spawn("postfix", cmd, d.join("master.out")));
        let mut p = Self { proc, dir, port };
        p.wait_listening(ns, sasl);
        p
    }

    /// Waits for the port-25 listener, and the submission one when there is one.
    fn wait_listening(&mut self, ns: &NetNs, submission: bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let ports = if submission {
            vec![self.port, SUBMISSION_PORT]
        } else {
            vec![self.port]
        };
        for port in ports {
            for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), "::1".parse().unwrap()] {
                let addr = SocketAddr::new(ip, port);
                let log = self.log();
                self.proc.wait_tcp(ns, addr, deadline, || log.text());
            }
        }
    }

    /// Postfix's log (`maillog_file`).
    pub fn log(&self) -> MtaLog {
        MtaLog {
            path: self.dir.path().join("log/maillog"),
            mta: "postfix",
        }
    }

    pub fn maillog(&self) -> String {
        self.log().text()
    }

    /// What the master process wrote to its stdout and stderr (where Postfix reports what
    /// it could not log: postlogd not starting, for one), and the Postfix processes running.
    pub fn diagnostics(&self) -> String {
        let procs = std::process::Command::new("ps")
            .args(["-e", "-o", "pid,ppid,stat,etime,args"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let postfix: Vec<&str> = procs.lines().filter(|l| l.contains("postfix")).collect();
        // Where each one waits (the kernel's view), for a master that stalled: the syscall
        // and its arguments, the wait channel, the kernel stack and the open files.
        let waits: Vec<String> = postfix
            .iter()
            .filter_map(|l| l.split_whitespace().next())
            .map(|pid| {
                let read = |f: &str| {
                    fs::read_to_string(format!("/proc/{pid}/{f}"))
                        .unwrap_or_else(|e| format!("({e})"))
                };
                let fds = fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| {
                        d.filter_map(|e| {
                            let e = e.ok()?;
                            let to = fs::read_link(e.path()).ok()?;
                            Some(format!(
                                "{}->{}",
                                e.file_name().to_string_lossy(),
                                to.display()
                            ))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                    })
                    .unwrap_or_default();
                format!(
                    "{pid}: syscall {} wchan {}\n{}fds: {fds}",
                    read("syscall").trim(),
                    read("wchan").trim(),
                    read("stack")
                )
            })
            .collect();
        format!(
            "master's output:\n{}\nPostfix processes:\n{}\n{}",
            self.proc.log(),
            postfix.join("\n"),
            waits.join("\n")
        )
    }
}

fn run_chown(owner: &str, path: &Path) {
    run("chown", &[owner, path.to_str().expect("utf-8 path")]);
}

/// The chroot's `etc`: what Debian's start script copies there, and the test's resolv.conf
/// (naming the MTA host's resolver, as the one Exim sees does).
fn chroot_etc(dir: &Path) {
    let etc = dir.join("queue/etc");
    fs::create_dir_all(&etc).expect("create the chroot's etc");
    for name in CHROOT_ETC {
        let host = Path::new("/etc").join(name);
        if host.is_file() {
            fs::copy(&host, etc.join(name)).expect("copy into the chroot");
        }
    }
    fs::copy(dir.join("resolv.conf"), etc.join("resolv.conf")).expect("copy resolv.conf");
}

/// The submission user in a sasldb of the test's own, readable by the mail owner, and the
/// Cyrus SASL config naming it, where Debian's Postfix looks for it (`sasl/smtpd.conf` in
/// the config directory, as /etc/postfix/sasl/smtpd.conf: its build does not read
/// `cyrus_sasl_config_path`).
fn sasl_user(dir: &Path, domain: &str) {
    let sasl = dir.join("conf/sasl");
    fs::create_dir(&sasl).expect("create sasl dir");
    let db = sasl.join("sasldb2");
    let mut child = std::process::Command::new(require_binary("saslpasswd2"))
        .args(["-p", "-c", "-f"])
        .arg(&db)
        .args(["-u", &format!("mx.{domain}"), SUBMISSION_USER])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("saslpasswd2 (sasl2-bin; run `cargo xtask setup`)");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(SUBMISSION_PASSWORD.as_bytes())
            .expect("password to saslpasswd2");
    }
    assert!(
        child.wait().expect("saslpasswd2").success(),
        "saslpasswd2 failed"
    );
    run_chown(MAIL_OWNER, &db);
    fs::write(
        sasl.join("smtpd.conf"),
        format!(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN\nsasldb_path: {}\n",
            db.display()
        ),
    )
    .expect("write smtpd.conf");
}

/// main.cf: the unpacked package's directories, our queue and log, accept mail for `domain`
/// and discard it, SASL for the submission smtpd, and the README's snippet.
fn main_cf(root: &Path, dir: &Path, domain: &str) -> String {
    let (r, d) = (root.display(), dir.display());
    format!(
        r#"# Written by mxscreen's end-to-end tests.
compatibility_level = 3.6
config_directory = {d}/conf
meta_directory = {d}/conf
daemon_directory = {r}/usr/lib/postfix/sbin
command_directory = {r}/usr/sbin
shlib_directory = {r}/usr/lib/postfix
queue_directory = {d}/queue
data_directory = {d}/data
mail_owner = {MAIL_OWNER}
setgid_group = {SETGID_GROUP}
maillog_file = {d}/log/maillog
maillog_file_prefixes = {d}
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH
myhostname = mx.{domain}
mydestination = {domain}
inet_interfaces = all
inet_protocols = all
local_recipient_maps =
local_transport = discard:
default_transport = discard:
smtpd_banner = $myhostname ESMTP
smtpd_sasl_type = cyrus
smtpd_sasl_local_domain = $myhostname
# The README's snippet, word for word:
{policy}"#,
        policy = crate::readme::snippet("postfix-main"),
    )
}

/// master.cf: the README's port-25 smtpd (on `port`), a submission smtpd as Debian's
/// master.cf suggests it (without TLS), and the services a delivery to `discard:` needs.
fn master_cf(port: u16) -> String {
    let smtpd = on_port(&crate::readme::snippet("postfix-master"), port);
    format!(
        "{smtpd}{SUBMISSION_PORT} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
{DELIVERY}"
    )
}

/// master.cf after the listeners: the services a delivery to `discard:` needs, chrooted
/// where Debian's master.cf chroots them.
const DELIVERY: &str = "cleanup unix n - y - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - y - - trivial-rewrite
bounce unix - - y - 0 bounce
defer unix - - y - 0 bounce
trace unix - - y - 0 bounce
verify unix - - y - 1 verify
flush unix n - y 1000? 0 flush
proxymap unix - - n - - proxymap
discard unix - - y - - discard
anvil unix - - y - 1 anvil
scache unix - - y - 1 scache
postlog unix-dgram n - n - 1 postlogd
";

/// The README's master.cf lines with the `smtp` service (port 25) on `port`; everything
/// else, the chroot column included, as written.
fn on_port(snippet: &str, port: u16) -> String {
    let mut moved = 0;
    let lines: Vec<String> = snippet
        .lines()
        .map(|l| match l.strip_prefix("smtp ") {
            Some(rest) => {
                moved += 1;
                format!("{port} {rest}")
            }
            None => l.to_owned(),
        })
        .collect();
    assert_eq!(
        moved, 1,
        "the README's master.cf snippet should define one `smtp` service:\n{snippet}"
    );
    assert!(
        lines[0].split_whitespace().nth(4) == Some("y"),
        "the README's port-25 smtpd should run chrooted, as Debian ships it:\n{snippet}"
    );
    lines.join("\n") + "\n"
}
