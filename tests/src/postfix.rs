//! A real Postfix beside the testbed's Exim: Debian's postfix package, unpacked privately by
//! `cargo xtask setup` (it conflicts with exim4 as a package, so it cannot be installed), run
//! as `master -d` with its own main.cf/master.cf, queue, data directory and log file in a
//! tempdir, in the MTA namespace and the same private mounts as Exim (its resolver, and the
//! test daemon's sockets at `/run/mxscreen`). main.cf carries the README's
//! `check_policy_service` snippet, word for word.
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
    dns::Daemon,
    mta::{MtaLog, private_mounts},
    netns::{NetNs, run},
};

/// Where `cargo xtask setup` unpacks Debian's postfix package (xtask/src/setup.rs
/// `POSTFIX_DIR`, the same path).
pub const POSTFIX_DIR: &str = "/var/cache/mxscreen-tests/postfix";
/// The account Postfix runs as (see the module comment) and its set-gid group.
pub const MAIL_OWNER: &str = "Debian-exim";
const SETGID_GROUP: &str = "mail";

/// A running Postfix (master and its children) in the MTA namespace.
pub struct Postfix {
    proc: Daemon,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn root() -> PathBuf {
    let root = Path::new(POSTFIX_DIR).join("root");
    assert!(
        root.join("usr/lib/postfix/sbin/master").is_file(),
        "Postfix is not unpacked in {POSTFIX_DIR}: run `cargo xtask setup`"
    );
    root
}

impl Postfix {
    /// Writes the config, queue and log and starts Postfix listening on `port` (IPv4 and
    /// IPv6) in `ns`; `run` is the test daemon's socket directory, seen as /run/mxscreen.
    /// Returns once the port accepts.
    pub fn start(ns: &NetNs, port: u16, domain: &str, run: &Path) -> Self {
        let smtpd = format!("{port} inet n - n - - smtpd\n");
        Self::start_with(ns, port, domain, Some(run), "", &smtpd)
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
        fs::write(d.join("conf/master.cf"), format!("{services}{MASTER_CF}"))
            .expect("write master.cf");
        let mut cmd = private_mounts(d, run);
        cmd.arg(root.join("usr/lib/postfix/sbin/master"))
            .arg("-d")
            .env("MAIL_CONFIG", d.join("conf"))
            .env("LD_LIBRARY_PATH", root.join("usr/lib/postfix"));
        let proc = ns.enter(|| Daemon::spawn("postfix", cmd, d.join("master.out")));
        let mut p = Self { proc, dir, port };
        p.wait_listening(ns);
        p
    }

    fn wait_listening(&mut self, ns: &NetNs) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), "::1".parse().unwrap()] {
            let addr = SocketAddr::new(ip, self.port);
            let log = self.log();
            self.proc.wait_tcp(ns, addr, deadline, || log.text());
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
}

fn run_chown(owner: &str, path: &Path) {
    run("chown", &[owner, path.to_str().expect("utf-8 path")]);
}

/// main.cf: the unpacked package's directories, our queue and log, accept mail for `domain`
/// and discard it, and the README's policy snippet.
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
# The README's snippet, word for word:
{policy}"#,
        policy = crate::readme::snippet("postfix-main"),
    )
}

/// master.cf after the listener: the services a delivery to `discard:` needs, none chrooted.
const MASTER_CF: &str = "cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
";
