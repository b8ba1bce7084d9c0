//! `cargo xtask bench daemon`: the daemon as deployed — RSS idle and with 1M cached
//! verdicts, CPU it spends per minute holding them, how long `stats` and `list --verdicts`
//! take, and the time from a new peer's first SYN to its verdict in the map (p50/p99) with a
//! local DNSBL (rbldnsd) on the MTA host. Prints numbers; results go into BENCHMARKS.md.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use filter_common::{Action, Peer, Reason, Verdict, map_names};
use mxscreen::datapath::clock;
use mxscreen_tests::{
    daemon::{MxDaemon, Spec},
    dns::{RblZone, Rbldnsd, listing},
    netns::{SERVER_IFACE, SERVER_V4, Wire},
};
use socket2::{Domain, Socket, Type};

const PEERS: u32 = 400;
const FILL: u32 = 1_000_000;

fn main() {
    let wire = Wire::new("bd");
    // Client sources 198.51.100.0/22-ish: added in one `ip -batch` call.
    let batch: String = (0..PEERS)
        .map(|i| format!("addr add {}/16 dev vc\n", peer(i)))
        .collect();
    let batch_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(batch_file.path(), batch).unwrap();
    mxscreen_tests::netns::run(
        "ip",
        &[
            "-n",
            &wire.client.name,
            "-batch",
            batch_file.path().to_str().unwrap(),
        ],
    );
    wire.server
        .ip(&["addr", "add", "198.51.0.1/16", "dev", SERVER_IFACE]);
    // Every 4th peer is listed, so both pass and drop verdicts are timed.
    let listings = (0..PEERS)
        .step_by(4)
        .map(|i| listing(&peer(i).to_string(), "127.0.0.2", "bench"))
        .collect();
    let rbl = wire
        .server
        .enter(|| Rbldnsd::start(&[RblZone::new("bl.bench", Duration::from_secs(900), listings)]));
    let _listener = wire
        .server
        .enter(|| std::net::TcpListener::bind(format!("{SERVER_V4}:25")).unwrap());
    let spec = Spec {
        datapath: "[datapath.maps]\nverdicts = 1100000\n".into(),
        sections: format!(
            "[resolver]\nnameservers = [\"{}\"]\nmax_lookups_per_sec = 1000\n\n[rdns]\nenabled = false\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"bl.bench\"\nweight = 10\n",
            rbl.addr
        ),
        ..Default::default()
    };
    let d = MxDaemon::start(&wire.server, SERVER_IFACE, spec);
    let pid = daemon_pid(&d);
    std::thread::sleep(Duration::from_secs(2));
    let idle = rss_kib(pid);

    let peers_path = d.pin_dir.join(map_names::PEERS_V4);
    let map = MapData::from_pin(&peers_path).expect("pinned per-source map");
    let verdicts: HashMap<MapData, [u8; 4], Peer> =
        HashMap::try_from(Map::LruHashMap(map)).unwrap();

    // First SYN to verdict in the map.
    let mut lat = Vec::new();
    for i in 0..PEERS {
        let src = peer(i);
        let t0 = Instant::now();
        let _sock = syn(&wire, src, format!("{SERVER_V4}:25").parse().unwrap());
        let deadline = t0 + Duration::from_secs(10);
        loop {
            // The datapath keeps an entry for the unknown peer; the verdict comes later.
            if verdicts
                .get(&src.octets(), 0)
                .is_ok_and(|p| p.verdict().is_some())
            {
                lat.push(t0.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no verdict for {src}:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    // 1M verdicts, written straight into the pinned map as the daemon would have.
    let mut verdicts = verdicts;
    let mut v = Peer::empty();
    v.set_verdict(&Verdict::new(
        Action::Pass,
        Reason::Reputation,
        clock::expiry_after(Duration::from_secs(3600)),
    ));
    let t = Instant::now();
    for i in 0..FILL {
        verdicts
            .insert(Ipv4Addr::from(0x0a00_0000 + i).octets(), v, 0)
            .unwrap();
    }
    let fill = t.elapsed();
    let cpu0 = cpu_ticks(pid);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let cpu_per_min =
        (cpu_ticks(pid) - cpu0) as f64 / ticks_per_sec() / t.elapsed().as_secs_f64() * 60.0;
    let full = rss_kib(pid);
    let t = Instant::now();
    d.cli_ok(&["stats", "--json"]);
    let stats_time = t.elapsed();
    let t = Instant::now();
    let listed = d.cli_ok(&["list", "--verdicts", "--json"]);
    let list_time = t.elapsed();
    let hwm = hwm_kib(pid);

    println!("Daemon, measured in one run (`cargo xtask bench daemon`)");
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| RSS idle (after start, default zones replaced by one local zone) | {:.1} MiB |",
        idle as f64 / 1024.0
    );
    println!(
        "| first SYN → verdict in the map, p50 ({PEERS} new peers, one at a time) | {:.2} ms |",
        ms(pct(0.50))
    );
    println!(
        "| first SYN → verdict in the map, p99 | {:.2} ms |",
        ms(pct(0.99))
    );
    println!(
        "| first SYN → verdict in the map, max | {:.2} ms |",
        ms(*lat.last().unwrap())
    );
    println!(
        "| writing 1M verdicts into the pinned map (from another process) | {:.1} s |",
        fill.as_secs_f64()
    );
    println!(
        "| RSS with 1M verdicts cached (after a minute of sweeps) | {:.1} MiB |",
        full as f64 / 1024.0
    );
    println!("| daemon CPU per minute holding 1M verdicts (sweeps) | {cpu_per_min:.2} s |");
    println!(
        "| `mxscreen stats --json` with 1M verdicts | {:.2} s |",
        stats_time.as_secs_f64()
    );
    println!(
        "| `mxscreen list --verdicts --json` with 1M verdicts ({} MiB of JSON) | {:.2} s |",
        listed.len() >> 20,
        list_time.as_secs_f64()
    );
    println!(
        "| daemon peak RSS (VmHWM) over the run | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
}

fn peer(i: u32) -> Ipv4Addr {
    // 198.51.x.y: the documentation /24 widened to a /16 inside the test namespaces only.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 1, 0)) + i)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Starts a TCP handshake from `src` (the SYN leaves at once) without waiting for it.
fn syn(wire: &Wire, src: Ipv4Addr, dst: SocketAddr) -> Socket {
    wire.client.enter(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(src.into(), 0).into()).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&dst.into());
        s
    })
}

fn daemon_pid(d: &MxDaemon) -> i32 {
    let out = d.cli_ok(&["status", "--json"]);
    let _: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The daemon is the process holding our socket: find it by its config path.
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(d.config.to_str().unwrap()) {
            return pid;
        }
    }
    panic!("daemon process not found");
}

fn status_field(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn hwm_kib(pid: i32) -> u64 {
    status_field(pid, "VmHWM:")
}

fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}
