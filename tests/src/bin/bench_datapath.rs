//! `cargo xtask bench datapath`: ns per packet of the datapath under BPF_PROG_TEST_RUN, for
//! each path a packet can take, side by side with an empty XDP_PASS program (the floor) in
//! the same run, plus the kernel's memlock figure for every map at the default sizes.
//! Not a test: it prints numbers. Results go into BENCHMARKS.md.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
};

use filter_common::{Action, ListEntry, Reason, Verdict, map_names};
use ipnet::{IpNet, Ipv4Net};
use mxscreen::datapath::{ListKind, MapSizes};
use mxscreen_tests::{
    kernel::{Entry, TestDatapath},
    packets::{Frame, L4, Tcp},
};

/// Runs per measurement and measurements per case; the median is reported.
const REPEAT: u32 = 200_000;
const ROUNDS: usize = 15;

fn main() {
    let floor = Floor::load();
    let floor_ns = median(|| floor.run_ns(&Frame::syn(v4(1)).build()));
    let mut rows: Vec<(String, f64)> = vec![("empty XDP_PASS program (floor)".into(), floor_ns)];

    let mut dp = TestDatapath::with_sizes(MapSizes {
        verdicts: 1 << 20,
        deny: 1 << 17,
        ..MapSizes::small()
    });
    let icmp = Frame {
        l4: L4::Icmp,
        ..Frame::syn(v4(1))
    }
    .build();
    rows.push(("non-TCP (ICMP echo)".into(), measure(&dp, &icmp)));
    rows.push((
        "TCP SYN to port 22".into(),
        measure(&dp, &Frame::tcp(v4(1), 22, Tcp::Syn).build()),
    ));
    rows.push((
        "TCP ACK to port 25 (established)".into(),
        measure(&dp, &Frame::tcp(v4(1), 25, Tcp::Ack).build()),
    ));
    // Steady state of an unknown peer: reported once, then passed within the dedup window.
    rows.push((
        "unknown SYN (already reported)".into(),
        measure(&dp, &Frame::syn(v4(2)).build()),
    ));

    let pass = Verdict::new(Action::Pass, Reason::Reputation, 0);
    fill_verdicts(&mut dp, 1_000, pass);
    rows.push((
        "verdict hit, 1k verdicts".into(),
        measure(&dp, &Frame::syn(v4(10_000 + 500)).build()),
    ));
    fill_verdicts(&mut dp, 1_000_000, pass);
    rows.push((
        "verdict hit, 1M verdicts".into(),
        measure(&dp, &Frame::syn(v4(10_000 + 765_432)).build()),
    ));

    let entry = ListEntry::new(Reason::Feed, 0);
    for i in 0..100_000u32 {
        // 100k distinct /24s spread over 203.x.y.0 and 198.x.y.0 style space.
        let net = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap();
        dp.maps
            .list_insert(ListKind::Deny, IpNet::V4(net), entry)
            .unwrap();
    }
    let hit = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (54_321 << 8) + 7));
    rows.push((
        "deny-trie hit, 100k prefixes".into(),
        measure(&dp, &Frame::syn(hit).build()),
    ));
    rows.push((
        "deny-trie miss, 100k prefixes, verdict hit".into(),
        measure(&dp, &Frame::syn(v4(10_000 + 42)).build()),
    ));
    drop(dp);

    println!(
        "Datapath cost per packet, BPF_PROG_TEST_RUN (XDP entry point), median of {ROUNDS} x {REPEAT} runs"
    );
    println!("| case | ns/packet | x floor |");
    println!("|---|---:|---:|");
    for (name, ns) in &rows {
        println!("| {name} | {ns:.1} | {:.2} |", ns / floor_ns);
    }
    println!();
    memlock_at_default_sizes();
}

fn v4(n: u32) -> IpAddr {
    // 10.0.0.0/8 keys never leave this process: they are map keys, no packet is sent.
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn fill_verdicts(dp: &mut TestDatapath, n: u32, v: Verdict) {
    for i in 0..n {
        dp.maps.verdict_set(v4(10_000 + i), v).unwrap();
    }
}

fn measure(dp: &TestDatapath, frame: &[u8]) -> f64 {
    median(|| {
        dp.try_run(Entry::Xdp, frame, REPEAT)
            .expect("test_run")
            .1
            .as_nanos() as f64
    })
}

fn median(mut f: impl FnMut() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..ROUNDS).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The floor: `r0 = XDP_PASS; exit`, assembled and loaded here with raw bpf(2) calls, and
/// timed by the same BPF_PROG_TEST_RUN the datapath cases use.
struct Floor {
    fd: OwnedFd,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

impl Floor {
    fn load() -> Self {
        // mov64 r0, 2 (XDP_PASS); exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut attr = [0u8; 144];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        // SAFETY: attr is a zeroed bpf_attr with the prog-load fields set; pointers are live.
        let fd =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), attr.len()) };
        assert!(
            fd >= 0,
            "loading the floor program: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: the kernel just returned this descriptor to us.
        Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        }
    }

    fn run_ns(&self, frame: &[u8]) -> f64 {
        let mut attr = [0u8; 144];
        attr[0..4].copy_from_slice(&(self.fd.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
        attr[32..36].copy_from_slice(&REPEAT.to_ne_bytes());
        // SAFETY: attr is a zeroed bpf_attr with the test-run fields set; pointers are live.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                attr.as_mut_ptr(),
                attr.len(),
            )
        };
        assert_eq!(rc, 0, "floor test run: {}", std::io::Error::last_os_error());
        let retval = u32::from_ne_bytes(attr[4..8].try_into().unwrap());
        assert_eq!(retval, 2, "floor returns XDP_PASS");
        f64::from(u32::from_ne_bytes(attr[36..40].try_into().unwrap()))
    }
}

/// Loads one instance at the default sizes and asks bpftool for each map's memlock.
fn memlock_at_default_sizes() {
    let before = map_ids();
    let dp = TestDatapath::with_sizes(MapSizes::default());
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool (cargo xtask setup)");
    assert!(out.status.success(), "bpftool map show failed");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    println!(
        "Map memory at default sizes (bpftool bytes_memlock; tries allocate on use, so empty)"
    );
    println!("| map | max entries | memlock |");
    println!("|---|---:|---:|");
    let mut total = 0u64;
    for name in map_names::ALL {
        let m = maps
            .iter()
            .find(|m| m["name"] == name && !before.contains(&m["id"].as_u64().unwrap_or(0)))
            .unwrap_or_else(|| panic!("map {name} not listed by bpftool"));
        let bytes = m["bytes_memlock"].as_u64().unwrap_or(0);
        total += bytes;
        println!("| {name} | {} | {} |", m["max_entries"], human(bytes));
    }
    println!("| total | | {} |", human(total));
    drop(dp);
}

fn map_ids() -> BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()
        .expect("bpftool");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    maps.iter().filter_map(|m| m["id"].as_u64()).collect()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
