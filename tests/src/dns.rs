//! Real DNS servers for the reputation tests and benchmark: `rbldnsd` (DNSBL/DNSWL zones),
//! `nsd` (forward and reverse zones), `unbound` (a recursive resolver stubbed to those), and a
//! counting UDP forwarder that sits between the engine and a server so a test can see every
//! query the engine sent, delay them, or never answer.
//!
//! Every server listens on its own 127.53.x.y address with a port the kernel picked, writes
//! its files into a tempdir, is polled with real queries until it answers, and is killed
//! when its guard drops (also when the test panics). A missing binary is a failure that says
//! to run `cargo xtask setup`, never a skip.
use std::{
    collections::HashMap,
    fmt::Write as _,
    fs,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};

/// How long a server gets to start answering.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Finds a server binary in the usual places, or fails saying how to install it.
pub fn require_binary(name: &str) -> PathBuf {
    for dir in [
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
        "/sbin",
        "/bin",
    ] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` is not installed; the reputation tests need real DNS servers: run `cargo xtask setup`"
    );
}

/// A fresh loopback address for one server: 127.53.x.y, distinct within this process, and
/// varied by pid so concurrent test processes rarely share one.
pub fn fresh_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + (std::process::id() % 128) * 256;
    Ipv4Addr::new(127, 53, (n / 250 % 250) as u8 + 1, (n % 250) as u8 + 1)
}

/// An address with a port free for both UDP and TCP (the kernel picks it).
pub fn free_addr() -> SocketAddr {
    let ip = fresh_ip();
    for _ in 0..50 {
        let udp = UdpSocket::bind((ip, 0)).expect("bind a UDP socket on loopback");
        let addr = udp.local_addr().expect("local address");
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// Sends one query and waits up to `timeout` for the response (any rcode).
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Option<Message> {
    let sock = UdpSocket::bind((server.ip(), 0)).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).ok()?, rtype));
    sock.send_to(&msg.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if let Ok(resp) = Message::from_vec(&buf[..n])
            && resp.metadata.id == msg.metadata.id
        {
            return Some(resp);
        }
    }
    None
}

fn rand_id() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    (NEXT.fetch_add(7919, Ordering::Relaxed) ^ std::process::id()) as u16
}

/// A server process in its own process group; the whole group is killed (and the child
/// reaped) on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `cmd` (in the calling thread's network namespace) with stdout/stderr into
    /// `log`. The child also gets SIGKILL if the thread that spawned it dies without dropping
    /// the guard (the test process was killed); a set-user-ID program (Exim) drops that
    /// request on exec, which is why the group is killed explicitly on drop.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("create server log");
        let err = out.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (run `cargo xtask setup`)"));
        Self { name, child, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll child") {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }

    /// Waits until `addr` accepts a TCP connection made from inside `ns`; panics with the
    /// process's output and `more()` (the server's own log) if it exits or `deadline` passes.
    pub fn wait_tcp(
        &mut self,
        ns: &crate::netns::NetNs,
        addr: SocketAddr,
        deadline: Instant,
        more: impl Fn() -> String,
    ) {
        loop {
            self.assert_running();
            match ns.enter(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200))) {
                Ok(_) => return,
                Err(e)
                    if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::TimedOut) => {}
                Err(e) => panic!("connecting to {} on {addr}: {e}", self.name),
            }
            assert!(
                Instant::now() < deadline,
                "{} is not listening on {addr}:\n{}\n{}",
                self.name,
                self.log(),
                more()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `server` with `name`/`rtype` until `ok` accepts the response; panics with the
    /// server's log if it never does or the process exits.
    fn wait_ready(
        &mut self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        ok: impl Fn(&Message) -> bool,
    ) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!(
                    "{} exited ({status}) before answering:\n{}",
                    self.name,
                    self.log()
                );
            }
            if let Some(resp) = query(server, name, rtype, Duration::from_millis(200))
                && ok(&resp)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} at {server} did not answer {name} {rtype} within {READY_TIMEOUT:?}:\n{}",
                self.name,
                self.log()
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The group id is the child's pid (process_group(0)).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One address listed in an rbldnsd zone.
#[derive(Clone, Debug)]
pub struct Listing {
    pub ip: IpAddr,
    pub code: Ipv4Addr,
    pub txt: String,
}

/// Shorthand for a [`Listing`].
pub fn listing(ip: &str, code: &str, txt: &str) -> Listing {
    Listing {
        ip: ip.parse().expect("listing address"),
        code: code.parse().expect("listing code"),
        txt: txt.to_owned(),
    }
}

/// An rbldnsd zone: name, answer TTL, negative TTL (from its SOA), entries. An address may
/// appear several times with different codes: rbldnsd then answers with all of them. Like
/// every real list, each zone also lists RFC 5782's test point 127.0.0.2 (and not
/// 127.0.0.1), which mxscreen's resolver canary asks.
#[derive(Clone, Debug)]
pub struct RblZone {
    pub name: String,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub listings: Vec<Listing>,
}

impl RblZone {
    pub fn new(name: &str, ttl: Duration, listings: Vec<Listing>) -> Self {
        Self {
            name: name.to_owned(),
            ttl,
            negative_ttl: Duration::from_secs(300),
            listings,
        }
    }
}

/// A running rbldnsd serving [`RblZone`]s.
pub struct Rbldnsd {
    pub addr: SocketAddr,
    _daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Rbldnsd {
    pub fn pid(&self) -> u32 {
        self._daemon.pid()
    }

    pub fn start(zones: &[RblZone]) -> Self {
        let bin = require_binary("rbldnsd");
        let dir = tempfile::tempdir().expect("tempdir");
        // rbldnsd drops privileges to this user and reads its files after; make them readable.
        let _ = fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        );
        let addr = free_addr();
        let mut cmd = Command::new(bin);
        cmd.args(["-n", "-a", "-u", "nobody", "-w"]).arg(dir.path());
        cmd.arg("-b").arg(format!("{}/{}", addr.ip(), addr.port()));
        for (zi, zone) in zones.iter().enumerate() {
            // Dataset k holds each address's k-th listing, so repeated addresses get all codes.
            let mut datasets: Vec<Vec<&Listing>> = Vec::new();
            let mut seen: HashMap<IpAddr, usize> = HashMap::new();
            for l in &zone.listings {
                let k = seen.entry(l.ip).or_insert(0);
                if datasets.len() <= *k {
                    datasets.push(Vec::new());
                }
                datasets[*k].push(l);
                *k += 1;
            }
            if datasets.is_empty() {
                datasets.push(Vec::new());
            }
            let test_point = listing("127.0.0.2", "127.0.0.2", "RFC 5782 test point");
            datasets[0].push(&test_point);
            for (k, entries) in datasets.iter().enumerate() {
                for v6 in [false, true] {
                    let kind = if v6 { "ip6trie" } else { "ip4set" };
                    let file = format!("z{zi}-{k}-{kind}.txt");
                    let mut text = format!(
                        "$SOA 0 ns.{z}. hostmaster.{z}. 1 1h 1h 1d {neg}\n$NS 0 ns.{z}.\n$TTL {ttl}\n",
                        z = zone.name,
                        neg = zone.negative_ttl.as_secs(),
                        ttl = zone.ttl.as_secs()
                    );
                    for l in entries.iter().filter(|l| l.ip.is_ipv6() == v6) {
                        let _ = writeln!(text, "{} :{}:{}", l.ip, l.code, l.txt);
                    }
                    fs::write(dir.path().join(&file), text).expect("write zone data");
                    cmd.arg(format!("{}:{kind}:{file}", zone.name));
                }
            }
        }
        let mut daemon = Daemon::spawn("rbldnsd", cmd, dir.path().join("rbldnsd.log"));
        let probe = format!(
            "{}.",
            zones.first().map_or("probe.invalid", |z| z.name.as_str())
        );
        daemon.wait_ready(addr, &probe, RecordType::SOA, |m| {
            m.metadata.response_code == ResponseCode::NoError
        });
        Self {
            addr,
            _daemon: daemon,
            _dir: dir,
        }
    }
}

/// An authoritative zone for nsd: origin and record lines (relative or absolute names).
/// SOA and NS are added.
#[derive(Clone, Debug)]
pub struct AuthZone {
    pub origin: String,
    pub records: Vec<String>,
}

impl AuthZone {
    pub fn new(origin: &str, records: &[&str]) -> Self {
        Self {
            origin: origin.trim_end_matches('.').to_owned(),
            records: records.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// A running nsd.
pub struct Nsd {
    pub addr: SocketAddr,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Nsd {
    pub fn start(zones: &[AuthZone]) -> Self {
        let bin = require_binary("nsd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let addr = free_addr();
        let mut conf = format!(
            "server:\n  ip-address: {ip}@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
             zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
             xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             xfrdir: \"{d}\"\n  server-count: 1\n  verbosity: 1\n  do-ip6: no\n  \
             hide-version: yes\n  refuse-any: yes\nremote-control:\n  control-enable: no\n",
            ip = addr.ip(),
            port = addr.port()
        );
        for z in zones {
            let file = format!("{}.zone", z.origin);
            let mut text = format!(
                "$ORIGIN {o}.\n$TTL 300\n@ IN SOA ns.{o}. hostmaster.{o}. 1 3600 600 86400 300\n@ IN NS ns.{o}.\n",
                o = z.origin
            );
            for r in &z.records {
                let _ = writeln!(text, "{r}");
            }
            fs::write(dir.path().join(&file), text).expect("write zone file");
            let _ = write!(
                conf,
                "zone:\n  name: \"{}.\"\n  zonefile: \"{file}\"\n",
                z.origin
            );
        }
        let conf_path = dir.path().join("nsd.conf");
        fs::write(&conf_path, conf).expect("write nsd.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let mut daemon = Daemon::spawn("nsd", cmd, dir.path().join("nsd.log"));
        for z in zones {
            daemon.wait_ready(addr, &format!("{}.", z.origin), RecordType::SOA, |m| {
                m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
            });
        }
        Self {
            addr,
            daemon,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }
}

/// A running unbound that resolves `stubs` (zone, server) and refuses everything else, so no
/// query ever leaves loopback.
pub struct Unbound {
    pub addr: SocketAddr,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

impl Unbound {
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// On a fresh loopback address and port.
    pub fn start(stubs: &[(&str, SocketAddr)]) -> Self {
        Self::start_on(free_addr(), stubs)
    }

    /// On `addr` (e.g. 127.0.0.1:53 of a namespace, where resolv.conf can point).
    pub fn start_on(addr: SocketAddr, stubs: &[(&str, SocketAddr)]) -> Self {
        let bin = require_binary("unbound");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let mut conf = format!(
            "server:\n  interface: {ip}@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-daemonize: no\n  \
             use-syslog: no\n  logfile: \"\"\n  verbosity: 1\n  num-threads: 1\n  \
             so-reuseport: no\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  \
             do-not-query-localhost: no\n  module-config: \"iterator\"\n  \
             qname-minimisation: no\n  minimal-responses: yes\n  outgoing-range: 64\n  \
             local-zone: \".\" refuse\n",
            ip = addr.ip(),
            port = addr.port()
        );
        // A local-zone of the same name replaces unbound's built-in ones (it serves the
        // documentation reverse zones and `test.` itself) and lets the stub answer.
        for (zone, _) in stubs {
            let _ = writeln!(
                conf,
                "  local-zone: \"{}.\" transparent",
                zone.trim_end_matches('.')
            );
        }
        conf.push_str("remote-control:\n  control-enable: no\n");
        for (zone, server) in stubs {
            let _ = write!(
                conf,
                "stub-zone:\n  name: \"{}.\"\n  stub-addr: {}@{}\n",
                zone.trim_end_matches('.'),
                server.ip(),
                server.port()
            );
        }
        let conf_path = dir.path().join("unbound.conf");
        fs::write(&conf_path, conf).expect("write unbound.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-d").arg("-c").arg(&conf_path);
        let mut daemon = Daemon::spawn("unbound", cmd, dir.path().join("unbound.log"));
        let probe = stubs.first().map_or_else(
            || "probe.invalid.".to_owned(),
            |(z, _)| format!("{}.", z.trim_end_matches('.')),
        );
        daemon.wait_ready(addr, &probe, RecordType::SOA, |m| {
            m.metadata.response_code == ResponseCode::NoError
        });
        Self {
            addr,
            daemon,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }
}

/// One query the [`Forwarder`] received.
#[derive(Clone, Debug)]
pub struct SeenQuery {
    /// Lower-case, fully qualified.
    pub name: String,
    pub rtype: RecordType,
    pub at: Instant,
}

/// What the [`Forwarder`] does with a query.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Relay to `upstream` after `delay`, and relay the answer back.
    Forward {
        upstream: SocketAddr,
        delay: Duration,
    },
    /// Never answer (a resolver that times out).
    Blackhole,
    /// Relay at once, except the queries `when` picks (by name, lower-case and fully
    /// qualified, and type), never answered: a list whose TXT records time out while its A
    /// records answer, one zone that times out beside others that answer.
    Swallow {
        upstream: SocketAddr,
        when: fn(&str, RecordType) -> bool,
    },
    /// Relay at once and change each answer with `f` before passing it on: the answers of a
    /// misbehaving resolver, which no real server gives (NXDOMAIN with records, TTLs with
    /// the top bit set).
    Tamper {
        upstream: SocketAddr,
        f: fn(&mut Message),
    },
}

/// A UDP front that records every query (before relaying it), tracks how many are
/// unanswered at once, and can delay or swallow them. UDP only: the tests' answers are small.
pub struct Forwarder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenQuery>>>,
    outstanding: Arc<AtomicUsize>,
    max_outstanding: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    pub fn start(mode: Mode) -> Self {
        Self::start_on(SocketAddr::new(IpAddr::V4(fresh_ip()), 0), mode)
    }

    /// [`Forwarder::start`] on a chosen address (e.g. port 53, where a libc resolver asks).
    pub fn start_on(addr: SocketAddr, mode: Mode) -> Self {
        let sock = Arc::new(UdpSocket::bind(addr).expect("bind forwarder"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set timeout");
        let addr = sock.local_addr().expect("forwarder address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let max_outstanding = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, outstanding, max_outstanding, stop) = (
                seen.clone(),
                outstanding.clone(),
                max_outstanding.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, client)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let packet = buf[..n].to_vec();
                    let mut asked = None;
                    if let Ok(msg) = Message::from_vec(&packet)
                        && let Some(q) = msg.queries.first()
                    {
                        let name = q.name().to_ascii().to_ascii_lowercase();
                        let name = if name.ends_with('.') {
                            name
                        } else {
                            format!("{name}.")
                        };
                        asked = Some((name.clone(), q.query_type()));
                        seen.lock().unwrap().push(SeenQuery {
                            name,
                            rtype: q.query_type(),
                            at: Instant::now(),
                        });
                    }
                    let (upstream, delay) = match mode {
                        Mode::Forward { upstream, delay } => (upstream, delay),
                        Mode::Swallow { upstream, when }
                            if !asked.as_ref().is_some_and(|(n, t)| when(n, *t)) =>
                        {
                            (upstream, Duration::ZERO)
                        }
                        Mode::Tamper { upstream, .. } => (upstream, Duration::ZERO),
                        _ => continue,
                    };
                    let tamper = match mode {
                        Mode::Tamper { f, .. } => Some(f),
                        _ => None,
                    };
                    let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                    max_outstanding.fetch_max(now, Ordering::SeqCst);
                    let (sock, outstanding) = (sock.clone(), outstanding.clone());
                    thread::spawn(move || {
                        thread::sleep(delay);
                        let answer = relay(upstream, &packet).map(|a| match tamper {
                            Some(f) => tampered(&a, f),
                            None => a,
                        });
                        // Counted as answered before the client can see the answer, so the
                        // client's next query never overlaps this one in the count.
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                        if let Some(answer) = answer {
                            let _ = sock.send_to(&answer, client);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            seen,
            outstanding,
            max_outstanding,
            stop,
            thread: Some(thread),
        }
    }

    /// Every query received so far.
    pub fn queries(&self) -> Vec<SeenQuery> {
        self.seen.lock().unwrap().clone()
    }

    /// How many queries for `name` (any type) were received.
    pub fn count(&self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.name == name)
            .count()
    }

    /// Most queries relayed but not yet answered at one time.
    pub fn max_outstanding(&self) -> usize {
        self.max_outstanding.load(Ordering::SeqCst)
    }

    /// Queries relayed and not yet answered now.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }
}

/// `answer` changed by `f` (as it came, if it does not parse).
fn tampered(answer: &[u8], f: fn(&mut Message)) -> Vec<u8> {
    let Ok(mut msg) = Message::from_vec(answer) else {
        return answer.to_vec();
    };
    f(&mut msg);
    msg.to_vec().unwrap_or_else(|_| answer.to_vec())
}

fn relay(upstream: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind((upstream.ip(), 0)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    sock.send_to(packet, upstream).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
