//! The end-to-end testbed: an MTA host and a crowd of senders, wired the way an operator
//! deploys mxscreen.
//!
//! ```text
//!  clients namespace (vc)                         MTA host namespace (vs)
//!  192.0.2.10 clean         ┌──────────── veth ──────────►  mxscreen (XDP or tc on vs)
//!  192.0.2.20 SBL-listed    │                                  │ verdicts          ▲ new peers
//!  192.0.2.30 PBL-listed    │                                  ▼                   │
//!  ... (IPv4 and IPv6)  ────┘                            exim4 :25 :587 (own ACLs, logs; AUTH on 587)
//!      swaks --local-interface                           postfix :2526 :2587 (the asking bed only;
//!                                                          they stand for 25 and 587)
//!                                                        listener :22 (a non-SMTP service)
//!                                                        unbound 127.0.0.1:53 ─┬─► rbldnsd: zen.test, dnswl.test
//!                                                        (mxscreen and exim)   ├─► nsd: clients.test, reverse zones
//!                                                                              └─► a server that never answers
//! ```
//!
//! The DNS servers run on loopback addresses of the MTA namespace, so nothing leaves the
//! namespaces the bed creates. Everything is owned by guards: dropping the bed (also on a
//! panic) kills the processes, then deletes the namespaces.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    time::Duration,
};

pub use crate::postfix::SUBMISSION_PORT as POSTFIX_SUBMISSION_PORT;
use crate::{
    daemon::{MxDaemon, Spec},
    dns::{AuthZone, Forwarder, Mode, Nsd, RblZone, Rbldnsd, Unbound, listing},
    mta::{Exim, EximSpec, RESOLVER, Smtp, local_resolver, swaks, swaks_authenticated},
    netns::{SERVER_IFACE, SERVER_V4, SERVER_V6, Wire},
    postfix::Postfix,
};

/// FCrDNS-clean, on no list.
pub const CLEAN: &str = "192.0.2.10";
pub const CLEAN6: &str = "2001:db8:1::10";
/// Another clean sender (PTR and forward record agree).
pub const CLEAN_B: &str = "192.0.2.11";
/// On the DNSBL with an SBL-like code (127.0.0.2), no PTR.
pub const SBL: &str = "192.0.2.20";
/// On the DNSBL with an SBL-like code (127.0.0.2) and forward-confirmed rDNS: a listed mail
/// server, the sender explained refusals go to (`policy.explain_to = "fcrdns"`).
pub const SBL_MTA: &str = "192.0.2.25";
/// On the DNSBL with an XBL-like code (127.0.0.4), no PTR; and its IPv6 twin.
pub const XBL: &str = "192.0.2.21";
pub const XBL6: &str = "2001:db8:1::21";
/// On the DNSBL with a PBL-like code (127.0.0.10): the limit class. Good rDNS.
pub const PBL: &str = "192.0.2.30";
/// No PTR at all: the limit class by `rdns.missing_ptr_weight`.
pub const NO_PTR: &str = "192.0.2.40";
/// A PTR whose name resolves elsewhere: `rdns.fcrdns_mismatch_weight`, below the limit.
pub const BAD_FCRDNS: &str = "192.0.2.41";
/// XBL-listed but on the DNSWL with high trust: accepted.
pub const WHITELISTED: &str = "192.0.2.50";
/// The DNSBL answers 127.255.255.254 ("query via public resolver"): an error, not a listing.
pub const ERROR_CODE: &str = "192.0.2.60";
/// Its reverse zone is served by a server that never answers.
pub const SLOW_DNS: &str = "192.0.2.77";

pub const ALL_CLIENTS: &[&str] = &[
    CLEAN,
    CLEAN6,
    CLEAN_B,
    SBL,
    SBL_MTA,
    XBL,
    XBL6,
    PBL,
    NO_PTR,
    BAD_FCRDNS,
    WHITELISTED,
    ERROR_CODE,
    SLOW_DNS,
];

pub const DNSBL_ZONE: &str = "zen.test";
/// Who the test mails go to: a user, not postmaster (whom a listing never refuses).
pub const RECIPIENT: &str = "user";
pub const DNSWL_ZONE: &str = "dnswl.test";
pub const FORWARD_ZONE: &str = "clients.test";
pub const REVERSE_V4: &str = "2.0.192.in-addr.arpa";
/// The reverse zone of 2001:db8:1::/64.
pub const REVERSE_V6: &str = "0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
/// The domain Exim accepts mail for.
pub const MAIL_DOMAIN: &str = "e2e.test";
/// Not screened, not SMTP: a stand-in for ssh on the MTA host.
pub const OTHER_PORT: u16 = 22;
/// Submission, served by the same Exim but not screened (the README's advice), with AUTH.
pub const SUBMISSION_PORT: u16 = crate::mta::EXIM_SUBMISSION_PORT;
/// Postfix's SMTP port in the asking bed (screened there beside 25): it stands for the
/// README's port-25 smtpd.
pub const POSTFIX_PORT: u16 = 2526;

/// How the daemon attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// Native (driver) XDP on the veth.
    Xdp,
    /// tc (tcx or clsact).
    Tc,
    /// The nftables backend (`backend = "nftables"`).
    Nftables,
    /// Every datapath key at its default (`backend = "auto"`), the MTA host an unprivileged
    /// LXC container: its network namespace owned by a user namespace of its own, the daemon
    /// inside both without CAP_BPF ([`NetNs::in_container`]). eBPF cannot load: nftables.
    Container,
}

impl Attach {
    fn config(self) -> &'static str {
        match self {
            Attach::Xdp => "mode = \"xdp\"",
            Attach::Tc => "mode = \"tc\"",
            Attach::Nftables => "backend = \"nftables\"",
            Attach::Container => "",
        }
    }

    /// What `status` says the interface got.
    fn attached(self) -> &'static str {
        match self {
            Attach::Xdp => "xdp (native)",
            Attach::Tc => "tc",
            Attach::Nftables | Attach::Container => "nftables (netdev ingress)",
        }
    }
}

/// Extra daemon configuration for one scenario.
#[derive(Clone, Debug, Default)]
pub struct Tweaks {
    /// Lines for `[datapath]` (e.g. `first_contact = "hold"`).
    pub datapath: String,
    /// Lines for `[policy]` (e.g. `limit_rate = 60`).
    pub policy: String,
    /// Extra `mxscreen run` flags (e.g. `--observe`).
    pub args: Vec<String>,
    /// The resolver mxscreen asks instead of the MTA host's (e.g. a slow one in front of it).
    pub nameserver: Option<SocketAddr>,
}

impl Tweaks {
    /// `first_contact = "pass"`: for scenarios about what follows a verdict, which start
    /// from an unknown sender's first connection reaching the MTA. `Tweaks::default()` is
    /// the built-in defaults (first contact held), which have scenarios of their own.
    pub fn first_contact_pass() -> Self {
        Self {
            datapath: "first_contact = \"pass\"".into(),
            ..Self::default()
        }
    }
}

pub struct Testbed {
    pub attach: Attach,
    pub exim: Exim,
    /// The asking bed's Postfix ([`Testbed::asking`]).
    pub postfix: Option<Postfix>,
    /// The asking bed's directory of mxscreen's sockets, seen by the MTAs as /run/mxscreen.
    pub run_dir: Option<tempfile::TempDir>,
    _other: Vec<TcpListener>,
    pub resolver: Unbound,
    pub silent: Forwarder,
    pub nsd: Nsd,
    _rbl: Rbldnsd,
    /// Last, so the namespaces go after every process in them.
    pub wire: Wire,
}

fn ip6_arpa(ip: &str) -> String {
    let ip: Ipv6Addr = ip.parse().expect("IPv6 address");
    let mut s = String::new();
    for b in ip.octets().iter().rev() {
        s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
    }
    s + "ip6.arpa."
}

fn last_octet(ip: &str) -> &str {
    ip.rsplit('.').next().expect("IPv4 address")
}

fn dnsbl_zones() -> Vec<RblZone> {
    let ttl = Duration::from_secs(900);
    vec![
        RblZone::new(
            DNSBL_ZONE,
            ttl,
            vec![
                listing(SBL, "127.0.0.2", "SBL-like: spam source"),
                listing(SBL_MTA, "127.0.0.2", "SBL-like: spam source"),
                listing(XBL, "127.0.0.4", "XBL-like: infected host"),
                listing(XBL6, "127.0.0.4", "XBL-like: infected host"),
                listing(PBL, "127.0.0.10", "PBL-like: end-user range"),
                listing(WHITELISTED, "127.0.0.4", "XBL-like: shared provider IP"),
                listing(ERROR_CODE, "127.255.255.254", "query via public resolver"),
            ],
        ),
        RblZone::new(
            DNSWL_ZONE,
            ttl,
            vec![listing(WHITELISTED, "127.0.15.3", "high trust")],
        ),
    ]
}

fn dns_zones() -> Vec<AuthZone> {
    // name, address, forward address of the PTR name (differs for BAD_FCRDNS).
    let hosts = [
        ("mail10", CLEAN, CLEAN),
        ("mail11", CLEAN_B, CLEAN_B),
        ("mail25", SBL_MTA, SBL_MTA),
        ("dyn30", PBL, PBL),
        ("stale41", BAD_FCRDNS, "192.0.2.99"),
        ("relay50", WHITELISTED, WHITELISTED),
        ("mail60", ERROR_CODE, ERROR_CODE),
    ];
    let mut reverse4 = Vec::new();
    let mut forward = Vec::new();
    for (name, ip, fwd) in hosts {
        reverse4.push(format!("{} IN PTR {name}.{FORWARD_ZONE}.", last_octet(ip)));
        forward.push(format!("{name} IN A {fwd}"));
    }
    forward.push(format!("mail10 IN AAAA {CLEAN6}"));
    let reverse6 = vec![format!(
        "{} IN PTR mail10.{FORWARD_ZONE}.",
        ip6_arpa(CLEAN6)
    )];
    fn refs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    vec![
        AuthZone::new(FORWARD_ZONE, &refs(&forward)),
        AuthZone::new(REVERSE_V4, &refs(&reverse4)),
        AuthZone::new(REVERSE_V6, &refs(&reverse6)),
    ]
}

/// Every testbed namespace is named `mxs-e2<tag><c|s>-<pid>-<n>` (see [`NetNs::new`]).
const STALE_PREFIX: &str = "e2";

/// Removes what an earlier run left behind when its test process was killed outright (Ctrl-C,
/// SIGKILL) before its guards could run: testbed namespaces whose test process is gone, the
/// processes still inside them (that run's Exim, rbldnsd and daemon: Exim is set-user-ID and
/// rbldnsd changes user, which clears their parent-death signal, and the daemon has none), and
/// map pins of daemons whose test process is gone. Anything whose process id is alive
/// (possibly reused) is left alone.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let mut parts = name.split('-');
        let (Some("mxs"), Some(tag), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if !tag.starts_with(STALE_PREFIX) || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
            for p in String::from_utf8_lossy(&pids.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        eprintln!("testbed: removed {name}, left behind by a killed run (pid {pid})");
    }
    // The daemon harness pins each daemon's maps under /sys/fs/bpf/mxs-test-<pid>-<n>.
    for entry in std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mxs-test-")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Testbed {
    /// Builds the namespaces, the DNS side, the MTA's resolver and Exim. The daemon is
    /// started by each scenario ([`Testbed::daemon`]) with its own tweaks.
    pub fn new(tag: &str, attach: Attach) -> Self {
        Self::build(tag, attach, false)
    }

    /// [`Testbed::new`] where the MTAs ask mxscreen, with the README's snippets: Exim on 25
    /// queries the query socket at connect, and a Postfix on [`POSTFIX_PORT`] (chrooted as
    /// Debian runs it) asks the policy service on loopback TCP, as the README configures it.
    /// The daemon then serves both and screens both ports; neither submission port is
    /// screened or asked about.
    pub fn asking(tag: &str, attach: Attach) -> Self {
        Self::build(tag, attach, true)
    }

    fn build(tag: &str, attach: Attach, asking: bool) -> Self {
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale);
        let tag = format!("{STALE_PREFIX}{tag}");
        let wire = if attach == Attach::Container {
            Wire::to_container(&tag)
        } else {
            Wire::new(&tag)
        };
        for a in ALL_CLIENTS {
            wire.add_client_addr(a);
        }
        let (rbl, nsd, silent, resolver, other) = wire.server.enter(|| {
            let rbl = Rbldnsd::start(&dnsbl_zones());
            let nsd = Nsd::start(&dns_zones());
            let silent = Forwarder::start(Mode::Blackhole);
            let slow_zone = format!("{}.{REVERSE_V4}", last_octet(SLOW_DNS));
            let resolver = local_resolver(&[
                (DNSBL_ZONE, rbl.addr),
                (DNSWL_ZONE, rbl.addr),
                (FORWARD_ZONE, nsd.addr),
                (REVERSE_V4, nsd.addr),
                (REVERSE_V6, nsd.addr),
                // The closest stub wins: only SLOW_DNS's PTR goes to the silent server.
                (&slow_zone, silent.addr),
            ]);
            let other = [SERVER_V4, SERVER_V6]
                .iter()
                .map(|ip| {
                    TcpListener::bind(SocketAddr::new(ip.parse().unwrap(), OTHER_PORT))
                        .expect("listen on the other port")
                })
                .collect::<Vec<_>>();
            (rbl, nsd, silent, resolver, other)
        });
        let run_dir = asking.then(|| {
            let d = tempfile::tempdir().expect("tempdir");
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod run dir");
            d
        });
        let exim = Exim::start(
            &wire.server,
            EximSpec {
                hostname: "mx.e2e.test".into(),
                local_domain: MAIL_DOMAIN.into(),
                dnsbl: DNSBL_ZONE.into(),
                dnsbl_refuses: false,
                ports: vec![25, SUBMISSION_PORT],
                asks_mxscreen: run_dir.as_ref().map(|d| d.path().to_path_buf()),
                own_acl: None,
            },
        );
        let postfix = run_dir
            .as_ref()
            .map(|d| Postfix::start(&wire.server, POSTFIX_PORT, MAIL_DOMAIN, d.path()));
        Self {
            attach,
            exim,
            postfix,
            run_dir,
            _other: other,
            resolver,
            silent,
            nsd,
            _rbl: rbl,
            wire,
        }
    }

    /// The reputation sections an operator would write for this host: the local unbound,
    /// the built-in zen/dnswl weights on the test zones, default rDNS, policy and lists.
    pub fn sections(policy: &str) -> String {
        let class = |codes: &str, weight: i32, label: &str| {
            format!(
                "[[dnsbl.code_weights]]\ncodes = [{codes}]\nweight = {weight}\nlabel = \"{label}\"\n\n"
            )
        };
        // Explained refusals let a dropped sender's first SYN after its verdict through to
        // the MTA; scenarios that assert refusal at SYN without an MTA that asks mxscreen
        // turn them off, the explain scenarios set their own window.
        let explain = if policy.contains("explain_every") {
            ""
        } else {
            "explain_every = \"0s\"\n"
        };
        // The resolver canary's PTR: an address of the bed's own with a PTR (the bed's
        // unbound reaches no root server), as README advises for such a host.
        let mut s = format!(
            "[resolver]\nnameservers = [\"{RESOLVER}\"]\ntimeout = \"1s\"\n\n[rdns]\ncanary_ptr = \"{CLEAN}\"\n\n[policy]\n{explain}{policy}\n\n"
        );
        s += &format!(
            "[[dnsbl]]\nzone = \"{DNSBL_ZONE}\"\nweight = 10\ncodes = [\"127.0.0.2-127.0.0.11\"]\n\n"
        );
        s += &class("\"127.0.0.2\"", 10, "SBL");
        s += &class("\"127.0.0.3\"", 10, "CSS");
        s += &class("\"127.0.0.4-127.0.0.7\"", 10, "XBL");
        s += &class("\"127.0.0.9\"", 10, "DROP");
        s += &class("\"127.0.0.10-127.0.0.11\"", 5, "PBL");
        s += &format!(
            "[[dnsbl]]\nzone = \"{DNSWL_ZONE}\"\nweight = 0\ncodes = [\"127.0.0.0/16\"]\nerror_codes = [\"127.0.0.255\"]\n\n"
        );
        s += &class("\"127.0.*.3\"", -15, "DNSWL-high");
        s += &class("\"127.0.*.2\"", -10, "DNSWL-med");
        s += &class("\"127.0.*.1\"", -5, "DNSWL-low");
        s += &class("\"127.0.*.0\"", 0, "DNSWL-none");
        s
    }

    /// Starts `mxscreen run` on the MTA host's interface in this bed's attach mode.
    pub fn daemon(&self, t: Tweaks) -> MxDaemon {
        let mut datapath = format!("{}\n{}", self.attach.config(), t.datapath);
        let mut sections = Self::sections(&t.policy);
        if let Some(ns) = t.nameserver {
            sections = sections.replace(
                &format!("nameservers = [\"{RESOLVER}\"]"),
                &format!("nameservers = [\"{ns}\"]"),
            );
        }
        if self.run_dir.is_some() {
            datapath += &format!("\nports = [25, {POSTFIX_PORT}]\n");
            // The README's policy-service lines, word for word (its loopback port is the
            // MTA namespace's own).
            sections += &crate::readme::snippet("postfix-mxscreen");
            sections += "\n";
        }
        // In the container: its user namespace, and no CAP_BPF (nor what could stand in
        // for it) even there.
        let wrapper = match self.wire.server.user_ns_file() {
            Some(user) => [
                "nsenter",
                &format!("--user={user}"),
                "--",
                "setpriv",
                "--bounding-set=-bpf,-perfmon,-sys_admin",
                "--inh-caps=-bpf,-perfmon,-sys_admin",
                "--",
            ]
            .map(String::from)
            .to_vec(),
            None => Vec::new(),
        };
        let spec = Spec {
            datapath,
            sections,
            args: t.args,
            run_dir: self.run_dir.as_ref().map(|d| d.path().to_path_buf()),
            wrapper,
            ..Default::default()
        };
        let d = MxDaemon::start(&self.wire.server, SERVER_IFACE, spec);
        // `status` says what the interface actually got (auto mode could fall back).
        let want = format!("{SERVER_IFACE} ({})", self.attach.attached());
        let status = d.cli_ok(&["status"]);
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("interface:") && l.ends_with(&want)),
            "not attached as {want}:\n{status}"
        );
        d
    }

    /// The MTA's address in `src`'s family.
    pub fn server_for(src: &str) -> IpAddr {
        if src.contains(':') {
            SERVER_V6
        } else {
            SERVER_V4
        }
        .parse()
        .unwrap()
    }

    /// One message from `src` to the MTA's port 25, giving up the connection after `timeout`.
    pub fn mail_within(&self, src: &str, tag: &str, timeout: Duration) -> Smtp {
        self.mail_to_port(src, 25, tag, timeout)
    }

    /// One message from `src` to Postfix (the asking bed's [`POSTFIX_PORT`]).
    pub fn mail_postfix(&self, src: &str, tag: &str, timeout: Duration) -> Smtp {
        self.mail_to_port(src, POSTFIX_PORT, tag, timeout)
    }

    pub fn mail_to_port(&self, src: &str, port: u16, tag: &str, timeout: Duration) -> Smtp {
        swaks(
            &self.wire.client,
            src,
            Self::server_for(src),
            port,
            &format!("{RECIPIENT}@{MAIL_DOMAIN}"),
            tag,
            timeout,
        )
    }

    /// One message from `src` to `port` as the submission user (AUTH PLAIN first).
    pub fn submit(&self, src: &str, port: u16, tag: &str, timeout: Duration) -> Smtp {
        swaks_authenticated(
            &self.wire.client,
            src,
            SocketAddr::new(Self::server_for(src), port),
            &format!("postmaster@{MAIL_DOMAIN}"),
            tag,
            timeout,
        )
    }

    /// Waits until the MTA host holds an established TCP connection from `src` to `port`
    /// (the handshake is done: its SYN went through the datapath).
    pub fn wait_established(&self, src: &str, port: u16, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let out = self.wire.server.enter(|| {
                Command::new("ss")
                    .args(["-Htn", "state", "established"])
                    .args(["sport", "=", &format!(":{port}"), "dst", src])
                    .output()
                    .expect("ss (iproute2)")
            });
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no connection from {src} to port {port} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TCP handshake from `src` to the MTA's `port` within `timeout`.
    pub fn connect(&self, src: &str, port: u16, timeout: Duration) -> std::io::Result<()> {
        self.wire
            .connect(src, SocketAddr::new(Self::server_for(src), port), timeout)
    }
}
