//! The daemon suites' test bed: a client and a server namespace on a veth, a real rbldnsd
//! serving the given zones and listeners on :25, :2525 (IPv4) and :25 (IPv6) in the server
//! namespace, where the daemon runs; real TCP handshakes from chosen client addresses.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::{
    dns::{RblZone, Rbldnsd},
    netns::{SERVER_V4, SERVER_V6, Wire},
};

/// Long enough for a handshake on a veth, short enough that a dropped SYN (first retransmit
/// after 1 s) is not rescued by its retransmission.
pub const REFUSED_WITHIN: Duration = Duration::from_millis(800);
pub const CONNECTS_WITHIN: Duration = Duration::from_secs(5);

pub struct Bed {
    pub wire: Wire,
    _rbl: Rbldnsd,
    pub rbl_addr: SocketAddr,
    _listeners: Accepting,
}

/// Listeners that accept and close every connection, as an MTA does. A listener nobody
/// accepts on fills its accept queue (128 connections), and then the kernel drops further
/// SYNs: a loop that connects until the daemon refuses would see the queue, not the daemon.
pub struct Accepting {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Accepting {
    pub fn new(listeners: Vec<TcpListener>) -> Self {
        for l in &listeners {
            l.set_nonblocking(true).expect("nonblocking listener");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let mut idle = true;
                for l in &listeners {
                    while let Ok((conn, _)) = l.accept() {
                        drop(conn);
                        idle = false;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn smtp4() -> SocketAddr {
    format!("{SERVER_V4}:25").parse().unwrap()
}
pub fn smtp6() -> SocketAddr {
    format!("[{SERVER_V6}]:25").parse().unwrap()
}
pub fn other4() -> SocketAddr {
    format!("{SERVER_V4}:2525").parse().unwrap()
}

impl Bed {
    /// Namespaces tagged `tag`, the client holding `sources` too, rbldnsd serving `zones`.
    pub fn new(tag: &str, sources: &[&str], zones: &[RblZone]) -> Self {
        let wire = Wire::new(tag);
        for a in sources {
            wire.add_client_addr(a);
        }
        let (rbl, listeners) = wire.server.enter(|| {
            let rbl = Rbldnsd::start(zones);
            let listeners = [smtp4(), other4(), smtp6()]
                .iter()
                .map(|a| TcpListener::bind(a).expect("listen"))
                .collect();
            (rbl, Accepting::new(listeners))
        });
        Self {
            rbl_addr: rbl.addr,
            wire,
            _rbl: rbl,
            _listeners: listeners,
        }
    }

    /// The SMTP port on the server for `src`'s family.
    pub fn smtp_for(src: &str) -> SocketAddr {
        if src.contains(':') { smtp6() } else { smtp4() }
    }

    #[track_caller]
    pub fn connects(&self, src: &str, dst: SocketAddr) {
        if let Err(e) = self.wire.connect(src, dst, CONNECTS_WITHIN) {
            panic!("{src} -> {dst} should connect: {e}");
        }
    }

    #[track_caller]
    pub fn refused(&self, src: &str, dst: SocketAddr) {
        match self.wire.connect(src, dst, REFUSED_WITHIN) {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            other => panic!("{src} -> {dst}: expected the SYN to be dropped, got {other:?}"),
        }
    }
}

/// A million-line feed as large drop lists are (IPv4 addresses, every fifth a /28), ending
/// with `listed`: what the feeds suite enforces and `cargo xtask bench feeds` times.
pub fn million_line_feed(listed: &str) -> String {
    let mut text = String::with_capacity(16 << 20);
    text.push_str("# one million lines\n");
    for i in 0..999_999u32 {
        let a = std::net::Ipv4Addr::from(0x0b00_0000 + i * 7);
        if i % 5 == 0 {
            text.push_str(&format!("{a}/28\n"));
        } else {
            text.push_str(&format!("{a}\n"));
        }
    }
    text.push_str(&format!("{listed}\n"));
    text
}
