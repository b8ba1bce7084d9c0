//! Network namespaces owned by RAII guards, so a failing test still removes its hosts.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    os::fd::AsFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Socket, Type};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
    /// For a namespace owned by a user namespace of its own ([`NetNs::in_container`]): the
    /// process holding both (killed on drop).
    holder: Option<std::process::Child>,
}

/// Runs a command and panics with its stderr if it fails; its stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (run `cargo xtask setup`)"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NetNs {
    /// A fresh namespace named `mxs-<tag>-<pid>-<n>` with loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "mxs-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Self { name, holder: None };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace as an unprivileged LXC container has it: created by, and so owned by, a
    /// user namespace of its own (ids mapped to themselves, root's included). A process in that user namespace has
    /// CAP_NET_ADMIN over this network namespace (nftables, NFLOG) but no capability the
    /// kernel checks in the initial one (loading BPF: CAP_BPF or CAP_SYS_ADMIN there).
    /// Named like [`NetNs::new`] (`ip netns attach`), so everything else treats it alike.
    pub fn in_container(tag: &str) -> Self {
        let name = format!(
            "mxs-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let holder = Command::new("unshare")
            .args(["--user", "--net", "--", "sleep", "infinity"])
            .spawn()
            .expect("unshare (util-linux)");
        let pid = holder.id().to_string();
        let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        // unshare makes the namespaces before it execs sleep: wait until the holder is in
        // its own network namespace.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n == own) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not make a network namespace"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every id below 65536 maps to itself (a container's own users and groups: the
        // MTA's group for the query socket, for one), written as its parent may.
        for map in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{map}"), "0 0 65536\n")
                .unwrap_or_else(|e| panic!("writing the container's {map}: {e}"));
        }
        run("ip", &["netns", "attach", &name, &pid]);
        let ns = Self {
            name,
            holder: Some(holder),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The user namespace owning this network namespace, for `nsenter --user=`; `None` for
    /// one made by [`NetNs::new`] (owned by the initial user namespace).
    pub fn user_ns_file(&self) -> Option<String> {
        self.holder
            .as_ref()
            .map(|h| format!("/proc/{}/ns/user", h.id()))
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `nft ARGS...` in the namespace (`nft flush ruleset`, `nft list ruleset`); its output.
    pub fn nft(&self, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` with this thread inside the namespace (only the network namespace: pins and
    /// /sys stay the host's), then returns the thread to where it was. Sockets created in
    /// `f` stay in this namespace; attachments made in `f` target its interfaces.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let home = File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        setns(target.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        setns(home.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns back home");
        result.unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
    }
}

/// Two hosts joined by a veth pair: `client` (interface `vc`) and `server` (interface `vs`).
/// IPv4 192.0.2.0/24 and IPv6 2001:db8:1::/64, documentation ranges only. The client holds
/// several addresses so tests can pick the source; IPv6 addresses skip DAD.
pub struct Wire {
    pub client: NetNs,
    pub server: NetNs,
}

pub const SERVER_V4: &str = "192.0.2.2";
pub const SERVER_V6: &str = "2001:db8:1::2";
pub const SERVER_IFACE: &str = "vs";
pub const CLIENT_V4: [&str; 2] = ["192.0.2.1", "192.0.2.3"];
pub const CLIENT_V6: [&str; 2] = ["2001:db8:1::1", "2001:db8:1::3"];

impl Wire {
    pub fn new(tag: &str) -> Self {
        Self::with_server(tag, NetNs::new(&format!("{tag}s")))
    }

    /// A wire whose server is a container's namespace ([`NetNs::in_container`]).
    pub fn to_container(tag: &str) -> Self {
        Self::with_server(tag, NetNs::in_container(&format!("{tag}s")))
    }

    fn with_server(tag: &str, server: NetNs) -> Self {
        let wire = Self {
            client: NetNs::new(&format!("{tag}c")),
            server,
        };
        wire.plug();
        wire
    }

    /// Deletes the veth pair: the server's interface is gone.
    pub fn unplug(&self) {
        self.client.ip(&["link", "del", "vc"]);
    }

    /// Makes the veth pair (again, after [`Wire::unplug`]: the server's interface is then
    /// another interface of the same name, as after `ifdown`/`ifup` of a VLAN), with the
    /// addresses, up.
    pub fn plug(&self) {
        let (client, server) = (&self.client, &self.server);
        client.ip(&[
            "link",
            "add",
            "vc",
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IFACE,
            "netns",
            &server.name,
        ]);
        for a in CLIENT_V4 {
            client.ip(&["addr", "add", &format!("{a}/24"), "dev", "vc"]);
        }
        for a in CLIENT_V6 {
            client.ip(&["addr", "add", &format!("{a}/64"), "dev", "vc", "nodad"]);
        }
        server.ip(&[
            "addr",
            "add",
            &format!("{SERVER_V4}/24"),
            "dev",
            SERVER_IFACE,
        ]);
        server.ip(&[
            "addr",
            "add",
            &format!("{SERVER_V6}/64"),
            "dev",
            SERVER_IFACE,
            "nodad",
        ]);
        client.ip(&["link", "set", "vc", "up"]);
        server.ip(&["link", "set", SERVER_IFACE, "up"]);
    }

    /// Gives the client one more source address (IPv4 /24 or IPv6 /64 of the wire).
    pub fn add_client_addr(&self, addr: &str) {
        if addr.contains(':') {
            self.client
                .ip(&["addr", "add", &format!("{addr}/64"), "dev", "vc", "nodad"]);
        } else {
            self.client
                .ip(&["addr", "add", &format!("{addr}/24"), "dev", "vc"]);
        }
    }

    /// Opens a TCP connection from `src` (one of the client's addresses) to `dst` within
    /// `timeout`; `Ok` once the handshake completed, i.e. the server's kernel saw the SYN.
    pub fn connect(&self, src: &str, dst: SocketAddr, timeout: Duration) -> std::io::Result<()> {
        let src: IpAddr = src.parse().expect("source address");
        self.client.enter(|| {
            let sock = Socket::new(Domain::for_address(dst), Type::STREAM, None)?;
            sock.bind(&SocketAddr::new(src, 0).into())?;
            sock.connect_timeout(&dst.into(), timeout)
        })
    }

    /// Panics unless a TCP handshake from `src` to `dst` completes within 5 s.
    #[track_caller]
    pub fn assert_connects(&self, src: &str, dst: SocketAddr) {
        if let Err(e) = self.connect(src, dst, Duration::from_secs(5)) {
            panic!("{src} -> {dst} should connect: {e}");
        }
    }

    /// Panics unless the SYN from `src` to `dst` goes unanswered (dropped) for 800 ms.
    #[track_caller]
    pub fn assert_refused(&self, src: &str, dst: SocketAddr) {
        match self.connect(src, dst, Duration::from_millis(800)) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("{src} -> {dst}: expected the SYN to be dropped, got {other:?}"),
        }
    }
}
