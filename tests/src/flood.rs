//! A bounded SYN flood for the drop benchmark: prebuilt Ethernet frames sent through an
//! AF_PACKET socket in the client namespace (qdisc bypassed, 64 frames a `sendmmsg`), from
//! one thread pinned to one CPU, and what that flood cost that CPU.
//!
//! On a veth the receiving side runs in the sender's own softirq (NAPI is scheduled on the
//! sending CPU and runs when the transmit path re-enables bottom halves), and without
//! CONFIG_IRQ_TIME_ACCOUNTING that time is charged to the sending thread. So the cost of one
//! SYN is the sending thread's CPU time, plus whatever the CPU's ksoftirqd took over, divided
//! by the SYNs sent: other processes on the machine do not count, only their cache traffic
//! does.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::netns::NetNs;

const SOL_PACKET: libc::c_int = 263;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const BATCH: usize = 64;

/// A raw socket on one interface of a namespace.
pub struct Flood {
    sock: OwnedFd,
}

/// What sending cost.
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub frames: u64,
    /// CPU time of the sending thread and the CPU's ksoftirqd, ns.
    pub cpu_ns: u64,
}

impl Cost {
    pub fn ns_per_frame(&self) -> f64 {
        self.cpu_ns as f64 / self.frames.max(1) as f64
    }
}

impl Flood {
    /// A socket bound to `iface` in `ns`.
    pub fn new(ns: &NetNs, iface: &str) -> Self {
        ns.enter(|| {
            let ifindex = nix::net::if_::if_nametoindex(iface).expect("interface");
            // SAFETY: plain socket(2); the descriptor is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: the kernel just returned it.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let one: libc::c_int = 1;
            // SAFETY: a valid socket and option buffer.
            unsafe {
                libc::setsockopt(
                    fd,
                    SOL_PACKET,
                    PACKET_QDISC_BYPASS,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                );
            }
            // SAFETY: zeroed sockaddr_ll with the family and interface set.
            let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: a valid socket and address of the stated size.
            let rc = unsafe {
                libc::bind(
                    fd,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind to {iface}: {}", io::Error::last_os_error());
            Self { sock }
        })
    }

    /// Sends `count` frames, cycling through `frames`, from the calling thread pinned to
    /// `cpu`; returns what it cost that CPU.
    pub fn send(&self, frames: &[Vec<u8>], count: u64, cpu: usize) -> Cost {
        pin(cpu);
        let softirqd = ksoftirqd(cpu);
        let (t0, k0) = (thread_cpu_ns(), softirqd.map_or(0, task_ns));
        let mut sent = 0u64;
        let mut next = 0usize;
        // SAFETY: all-zero iovecs and message headers are valid; they are filled per batch
        // and never move (fixed length), so the headers' pointers stay good.
        let mut iov: Vec<libc::iovec> = vec![unsafe { zeroed() }; BATCH];
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; BATCH];
        while sent < count {
            let n = BATCH.min((count - sent) as usize);
            for i in 0..n {
                let f = &frames[(next + i) % frames.len()];
                iov[i] = libc::iovec {
                    iov_base: f.as_ptr() as *mut libc::c_void,
                    iov_len: f.len(),
                };
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs` holds `n` headers pointing at live frames.
            let rc =
                unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    continue;
                }
                panic!("sendmmsg: {e}");
            }
            sent += rc as u64;
            next = (next + rc as usize) % frames.len();
        }
        let (t1, k1) = (thread_cpu_ns(), softirqd.map_or(0, task_ns));
        Cost {
            frames: sent,
            cpu_ns: (t1 - t0) + (k1 - k0),
        }
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin to a CPU");
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// CPU time of `ksoftirqd/<cpu>` so far, ns (0 if it cannot be read).
pub fn softirqd_ns(cpu: usize) -> u64 {
    ksoftirqd(cpu).map_or(0, task_ns)
}

/// The pid of `ksoftirqd/<cpu>`.
fn ksoftirqd(cpu: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{cpu}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// A task's CPU time so far, ns (the first field of /proc/PID/schedstat).
fn task_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
