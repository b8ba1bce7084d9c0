//! The MTA host of the end-to-end testbed: a real Exim (Debian's exim4 binary) with its own
//! config, spool and logs in a tempdir, the host's own recursive resolver (a real unbound on
//! 127.0.0.1:53 of the MTA namespace, as operators are advised to run), and swaks as the
//! sending side.
//!
//! Every process is started in its own process group and killed as a group when its guard
//! drops, also when a test panics, so no Exim child (a connection handler, a delivery)
//! outlives the test.
//!
//! **How Exim gets the namespace's resolver.** Only the network namespace is switched for the
//! test, so Exim would read the host's `/etc/resolv.conf`, which cannot even name a port.
//! Exim's rDNS (`host_lookup`) and its `dnslists` go through the libc resolver, so the harness
//! (1) runs unbound on port 53 of the MTA namespace's own loopback (a port the namespace owns
//! alone), and (2) starts Exim under `unshare --mount`, which gives it a private mount
//! namespace, and bind-mounts a resolv.conf naming `127.0.0.1` over `/etc/resolv.conf` there.
//! The host's file is never touched and the mount disappears with Exim. This is what
//! `ip netns exec` does with `/etc/netns/<name>/resolv.conf`, without writing to `/etc`.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    dns::{Daemon, Unbound, require_binary},
    netns::NetNs,
};

/// Where the MTA host's resolver listens (port 53 of the namespace's own loopback).
pub const RESOLVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

/// How long a server gets to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// The MTA host's recursive resolver: unbound on [`RESOLVER`], stubbing each zone to the
/// server that holds it and refusing everything else, so no query leaves the namespace.
/// Start it inside the MTA namespace (`ns.enter(|| local_resolver(..))`).
pub fn local_resolver(stubs: &[(&str, SocketAddr)]) -> Unbound {
    Unbound::start_on(RESOLVER, stubs)
}

/// The submission user of both test MTAs (Exim's plaintext authenticator; Postfix's sasldb).
pub const SUBMISSION_USER: &str = "roadwarrior";
pub const SUBMISSION_PASSWORD: &str = "e2e-secret";
/// The port on which the test Exim takes AUTH (and nothing else does).
pub const EXIM_SUBMISSION_PORT: u16 = 587;

/// Tags the test Exim's ACLs write into its main log, so a test can prove a message went
/// through the MTA's own ACL chain after mxscreen let the connection through.
pub const TAG_ACL: &str = "E2E-ACL-PASSED";
pub const TAG_DNSBL: &str = "E2E-DNSBL-WARN";
pub const TAG_RDNS: &str = "E2E-RDNS-WARN";

/// What the test Exim is told.
#[derive(Clone, Debug)]
pub struct EximSpec {
    /// `primary_hostname`.
    pub hostname: String,
    /// The domain it accepts mail for (delivered to `:blackhole:`).
    pub local_domain: String,
    /// The DNSBL its own ACL checks with a `warn` (empty: no list check of its own, as the
    /// README allows once the MTA asks mxscreen).
    pub dnsbl: String,
    /// `deny` instead of `warn` for that DNSBL: Exim refusing listed senders on its own.
    pub dnsbl_refuses: bool,
    /// Listening ports (all addresses, IPv4 and IPv6).
    pub ports: Vec<u16>,
    /// Ask mxscreen at connect time with the README's snippets, its sockets in this
    /// directory (seen by Exim as `/run/mxscreen`, the path the snippets name).
    pub asks_mxscreen: Option<PathBuf>,
    /// Otherwise, lines for the main section and ACLs of its own (a benchmark's connect ACL).
    pub own_acl: Option<(String, String)>,
}

/// A running Exim daemon in the MTA namespace.
pub struct Exim {
    proc: Daemon,
    dir: tempfile::TempDir,
    pub spec: EximSpec,
}

impl Exim {
    /// Writes the config, spool and log dirs and starts `exim4 -bdf -C <conf>` inside `ns`
    /// (with the resolv.conf of the module comment); returns once every port accepts.
    pub fn start(ns: &NetNs, spec: EximSpec) -> Self {
        let bin = require_binary("exim4");
        let dir = tempfile::tempdir().expect("tempdir");
        // Exim gives up root for `-C` configs before it delivers and re-reads the config as
        // Debian-exim: the directory must be traversable and the files readable by it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
        for sub in ["log", "spool"] {
            let p = dir.path().join(sub);
            fs::create_dir(&p).expect("create exim dir");
            crate::netns::run("chown", &["Debian-exim:Debian-exim", p.to_str().unwrap()]);
        }
        let conf = dir.path().join("exim.conf");
        fs::write(&conf, exim_config(&spec, dir.path())).expect("write exim.conf");
        let mut cmd = private_mounts(dir.path(), spec.asks_mxscreen.as_deref());
        cmd.arg(&bin).arg("-bdf").arg("-C").arg(&conf);
        let proc = ns.enter(|| Daemon::spawn("exim", cmd, dir.path().join("exim.out")));
        let mut exim = Self { proc, dir, spec };
        exim.wait_listening(ns);
        exim
    }

    fn wait_listening(&mut self, ns: &NetNs) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for port in self.spec.ports.clone() {
            for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), "::1".parse().unwrap()] {
                let addr = SocketAddr::new(ip, port);
                let log = self.log();
                self.proc.wait_tcp(ns, addr, deadline, || log.text());
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The Exim daemon's process id (its connection processes are its children).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The main log (every connection, message and ACL `warn` tag).
    pub fn log(&self) -> MtaLog {
        MtaLog {
            path: self.dir.path().join("log/mainlog"),
            mta: "exim",
        }
    }

    pub fn mainlog(&self) -> String {
        self.log().text()
    }

    /// The reject log.
    pub fn rejectlog(&self) -> String {
        fs::read_to_string(self.dir.path().join("log/rejectlog")).unwrap_or_default()
    }

    /// A mark in the main log: [`Exim::lines_since`] shows what came after it.
    pub fn mark(&self) -> usize {
        self.log().mark()
    }

    /// Main log lines after `mark` that mention `ip` (as Exim writes it, in brackets).
    pub fn lines_since(&self, mark: usize, ip: &str) -> Vec<String> {
        self.log().lines_since(mark, ip)
    }

    /// How many connections from `ip` Exim accepted after `mark` (its `+smtp_connection`
    /// line, written when the connection arrives: "SMTP connection from [ip] ... (TCP/IP
    /// connection count = N)").
    pub fn connections_since(&self, mark: usize, ip: &str) -> usize {
        self.lines_since(mark, ip)
            .iter()
            .filter(|l| l.contains("SMTP connection from") && l.contains("connection count"))
            .count()
    }

    /// Waits until the main log after `mark` has a line mentioning `ip` and containing
    /// `needle`; returns it, or panics with the log.
    pub fn wait_line(&self, mark: usize, ip: &str, needle: &str, timeout: Duration) -> String {
        self.log().wait_line(mark, ip, needle, timeout)
    }
}

/// An MTA's log file, read the way the tests ask about it: marks, lines about one client
/// address (which both Exim and Postfix write in brackets), waiting for a line.
pub struct MtaLog {
    pub path: PathBuf,
    /// Names the MTA in failure messages.
    pub mta: &'static str,
}

impl MtaLog {
    pub fn text(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// A mark: [`MtaLog::lines_since`] shows what came after it.
    pub fn mark(&self) -> usize {
        self.text().len()
    }

    /// Lines after `mark` that mention `ip` in brackets.
    pub fn lines_since(&self, mark: usize, ip: &str) -> Vec<String> {
        let needle = format!("[{ip}]");
        self.text()
            .get(mark..)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line after `mark` mentions `ip` and contains `needle`; returns it, or
    /// panics with the log.
    pub fn wait_line(&self, mark: usize, ip: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines_since(mark, ip)
                .into_iter()
                .find(|l| l.contains(needle))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "{} never logged {needle:?} for [{ip}] within {timeout:?}; log:\n{}",
                self.mta,
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Where the README's snippets expect mxscreen's sockets.
pub const MXSCREEN_RUN: &str = "/run/mxscreen";

/// A command line that runs a program (its path and arguments appended by the caller) in a
/// private mount namespace where `/etc/resolv.conf` names the MTA host's own resolver (a
/// file written into `dir`) and, with `run`, `/run/mxscreen` is that directory: the MTA then
/// reaches the test daemon's sockets at the paths the README names, and the host's files
/// are never touched (only `/run/mxscreen` is created if missing, as a mount point).
pub fn private_mounts(dir: &Path, run: Option<&Path>) -> Command {
    let resolv = dir.join("resolv.conf");
    // One try of one second: a lookup that times out (the DNS-timeout scenario) costs the
    // MTA about a second, not the libc default of 5 s × 2.
    fs::write(
        &resolv,
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )
    .expect("write resolv.conf");
    if run.is_some() {
        fs::create_dir_all(MXSCREEN_RUN).expect("create the /run/mxscreen mount point");
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" /etc/resolv.conf && {{ [ -z \"$2\" ] || mount --bind \"$2\" {MXSCREEN_RUN}; }} && shift 2 && exec \"$@\""
        ))
        .arg("sh")
        .arg(&resolv)
        .arg(run.unwrap_or(Path::new("")));
    cmd
}

/// The test Exim's configuration: an Exim of the kind the background write-ups describe,
/// reduced to what the tests need. Its own rDNS and DNSBL checks stay in the RCPT ACL as
/// `warn` verbs that tag the main log; mail for the local domain is accepted and discarded.
/// With `asks_mxscreen`, the README's connect ACL is added, word for word.
fn exim_config(spec: &EximSpec, dir: &Path) -> String {
    let (asks_main, asks_acl) = match (&spec.asks_mxscreen, &spec.own_acl) {
        (Some(_), _) => (
            crate::readme::snippet("exim-main"),
            crate::readme::snippet("exim-acl"),
        ),
        (None, Some(own)) => own.clone(),
        (None, None) => (String::new(), String::new()),
    };
    // The README's RCPT lines go where it says: after the relay check, before anything
    // that accepts.
    let asks_rcpt = if spec.asks_mxscreen.is_some() {
        crate::readme::snippet("exim-rcpt")
    } else {
        String::new()
    };
    // No DNSBL: the MTA has no list check of its own (the README says it can go).
    let own_dnsbl = if spec.dnsbl.is_empty() {
        String::new()
    } else {
        format!(
            "  {verb}    dnslists = {dnsbl}\n          log_message = {TAG_DNSBL} $dnslist_domain=$dnslist_value\n",
            verb = if spec.dnsbl_refuses { "deny" } else { "warn" },
            dnsbl = spec.dnsbl,
        )
    };
    let d = dir.display();
    let auth_condition = [
        "${if and {{eq{$auth2}{",
        SUBMISSION_USER,
        "}}{eq{$auth3}{",
        SUBMISSION_PASSWORD,
        "}}}}",
    ]
    .concat();
    let auth_advertise = format!("${{if ={{$received_port}}{{{EXIM_SUBMISSION_PORT}}}}}");
    let ports = spec
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" : ");
    format!(
        r#"# Written by mxscreen's end-to-end tests.
primary_hostname = {host}
daemon_smtp_ports = {ports}
local_interfaces = <; 0.0.0.0 ; ::0
log_file_path = {d}/log/%slog
spool_directory = {d}/spool
exim_user = Debian-exim
exim_group = Debian-exim
never_users =
keep_environment =
tls_advertise_hosts =
rfc1413_hosts =
# Exim's own reverse lookup for every client ($sender_host_name, $host_lookup_failed).
host_lookup = *
dns_retrans = 1s
dns_retry = 1
# Log every connection, so "Exim never saw it" is a statement about the log.
log_selector = +smtp_connection +smtp_no_mail +incoming_interface
smtp_accept_max = 200
smtp_accept_max_per_host = 100
domainlist local_domains = {domain}
acl_smtp_rcpt = acl_check_rcpt
{asks_main}
begin acl

acl_check_rcpt:
  deny    !domains = +local_domains
          message = relay not permitted
{asks_rcpt}{own_dnsbl}  warn    condition = ${{if eq{{$host_lookup_failed}}{{1}}}}
          log_message = {TAG_RDNS} no forward-confirmed rDNS
  warn    log_message = {TAG_ACL} rdns=${{if def:sender_host_name{{$sender_host_name}}{{none}}}}
  accept

{asks_acl}
begin authenticators

# AUTH PLAIN for the submission user, offered on the submission port only. Without TLS,
# which the test Exim does not have: a real one sets server_advertise_condition to
# ${{if def:tls_in_cipher}} as well.
plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = {auth_condition}
  server_set_id = $auth2
  server_advertise_condition = {auth_advertise}

begin routers

discard:
  driver = redirect
  domains = +local_domains
  data = :blackhole:

begin transports
"#,
        host = spec.hostname,
        domain = spec.local_domain,
    )
}

/// The outcome of one swaks run.
#[derive(Debug)]
pub struct Smtp {
    /// swaks exited 0: the message was accepted (250 after DATA).
    pub accepted: bool,
    /// swaks' exit code (2: could not connect; 2x: an SMTP stage failed).
    pub code: Option<i32>,
    pub transcript: String,
    pub elapsed: Duration,
}

impl Smtp {
    /// swaks could not open the TCP connection at all.
    pub fn connect_failed(&self) -> bool {
        self.code == Some(2) && !self.transcript.contains("Connected to")
    }
}

/// Sends one message with swaks from `client`, source address `src`, to `server`:`port`,
/// giving up the connection attempt after `timeout`. `tag` goes into the subject and the
/// Message-Id, so the message can be found in Exim's log.
pub fn swaks(
    client: &NetNs,
    src: &str,
    server: IpAddr,
    port: u16,
    to: &str,
    tag: &str,
    timeout: Duration,
) -> Smtp {
    send(
        client,
        src,
        SocketAddr::new(server, port),
        to,
        tag,
        timeout,
        &[],
    )
}

/// [`swaks`] as the submission user: `AUTH PLAIN` before the message.
pub fn swaks_authenticated(
    client: &NetNs,
    src: &str,
    server: SocketAddr,
    to: &str,
    tag: &str,
    timeout: Duration,
) -> Smtp {
    let auth = [
        "--auth",
        "PLAIN",
        "--auth-user",
        SUBMISSION_USER,
        "--auth-password",
        SUBMISSION_PASSWORD,
    ];
    send(client, src, server, to, tag, timeout, &auth)
}

/// One swaks run with `extra` arguments.
fn send(
    client: &NetNs,
    src: &str,
    server: SocketAddr,
    to: &str,
    tag: &str,
    timeout: Duration,
    extra: &[&str],
) -> Smtp {
    let bin = require_binary("swaks");
    let start = Instant::now();
    let (ip, port) = (server.ip(), server.port());
    let out = client.enter(|| {
        Command::new(&bin)
            .args(["--server", &format!("{ip}/{port}")])
            .args(["--local-interface", src])
            .args([
                "--to",
                to,
                "--from",
                "e2e@clients.test",
                "--helo",
                "client.clients.test",
            ])
            .args(["--timeout", &format!("{}s", timeout.as_secs().max(1))])
            .args([
                "--header",
                &format!("Subject: {tag}"),
                "--header",
                &format!("Message-Id: <{tag}@clients.test>"),
            ])
            .args(["--body", "mxscreen end-to-end test"])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("swaks: {e} (run `cargo xtask setup`)"))
    });
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Smtp {
        accepted: out.status.success(),
        code: out.status.code(),
        transcript,
        elapsed: start.elapsed(),
    }
}
