//! `cargo xtask bench mta-dns`: the DNS queries the MTA sends for each listed sender's
//! connection that reaches it, with Exim's own `dnslists` ACL versus the README's ACL that
//! asks mxscreen instead (the goal: zero). A real Exim in the MTA namespace resolves through
//! a counting forwarder on its resolver address (127.0.0.1:53, in front of unbound, which
//! stubs the DNSBL zone to rbldnsd); mxscreen asks unbound directly, so only the MTA's own
//! queries are counted. Prints a table; results go into BENCHMARKS.md.

use std::{net::IpAddr, os::unix::fs::PermissionsExt as _, time::Duration};

use mxscreen_tests::{
    daemon::{MxDaemon, Spec},
    dns::{Forwarder, Mode, RblZone, Rbldnsd, Unbound, listing},
    mta::{Exim, EximSpec, swaks},
    netns::{SERVER_IFACE, SERVER_V4, Wire},
};

const LISTED: &str = "192.0.2.20";
const ZONE: &str = "zen.test";
/// Listed connections sent per ACL.
const CONNECTIONS: usize = 10;
/// The explain window in the asking run: connections are spaced beyond it, so every one of
/// them is explained and reaches Exim (the worst case for the MTA; with the default 4h
/// window, all but the first of a window are dropped at SYN and cost Exim nothing at all).
const EXPLAIN: Duration = Duration::from_secs(1);

struct Row {
    acl: &'static str,
    reached: usize,
    dnsbl: usize,
    all: usize,
}

fn main() {
    let wire = Wire::new("bm");
    wire.add_client_addr(LISTED);
    let (_rbl, unbound, counter) = wire.server.enter(|| {
        let rbl = Rbldnsd::start(&[RblZone::new(
            ZONE,
            Duration::from_secs(900),
            vec![listing(LISTED, "127.0.0.2", "listed for the benchmark")],
        )]);
        let unbound = Unbound::start_on("127.0.0.53:53".parse().unwrap(), &[(ZONE, rbl.addr)]);
        let counter = Forwarder::start_on(
            "127.0.0.1:53".parse().unwrap(),
            Mode::Forward {
                upstream: unbound.addr,
                delay: Duration::ZERO,
            },
        );
        (rbl, unbound, counter)
    });
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let own = (
        "acl_smtp_connect = acl_dnslists\n".to_owned(),
        format!(
            "acl_dnslists:\n  deny    dnslists = {ZONE}\n          message = $sender_host_address is listed in $dnslist_domain: $dnslist_text\n  accept\n"
        ),
    );
    let mut rows = vec![measure(
        &wire,
        &counter,
        "Exim's own `deny dnslists = zen.test` (with `$dnslist_text`), no mxscreen",
        None,
        Some(own),
    )];

    let spec = Spec {
        sections: format!(
            "[resolver]\nnameservers = [\"{}\"]\n\n[rdns]\nenabled = false\n\n[policy]\nexplain_every = \"{}s\"\n\n[lists]\nallow = []\n\n[[dnsbl]]\nzone = \"{ZONE}\"\nweight = 10\n",
            unbound.addr,
            EXPLAIN.as_secs()
        ),
        run_dir: Some(run.path().to_path_buf()),
        ..Default::default()
    };
    let d = MxDaemon::start(&wire.server, SERVER_IFACE, spec);
    assert_eq!(d.query(LISTED), "action=unknown");
    assert_eq!(d.wait_verdict(LISTED, Duration::from_secs(10)), "drop");
    rows.push(measure(
        &wire,
        &counter,
        "the README's ACL asking mxscreen (every connection explained)",
        Some(run.path()),
        None,
    ));

    println!(
        "DNS queries Exim sends per listed connection, measured in one run (`cargo xtask bench mta-dns`)"
    );
    println!(
        "| Exim's connect ACL | listed connections that reached Exim | DNSBL queries by Exim | per connection | all DNS queries by Exim (incl. its rDNS) | per connection |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {} | {:.1} |",
            r.acl,
            r.reached,
            r.dnsbl,
            r.dnsbl as f64 / r.reached as f64,
            r.all,
            r.all as f64 / r.reached as f64
        );
    }
}

/// Starts an Exim with this connect ACL, sends the listed connections (each refused with a
/// 554 by Exim), and counts the DNS queries Exim sent.
fn measure(
    wire: &Wire,
    counter: &Forwarder,
    acl: &'static str,
    asks: Option<&std::path::Path>,
    own_acl: Option<(String, String)>,
) -> Row {
    let exim = Exim::start(
        &wire.server,
        EximSpec {
            hostname: "mx.bench.test".into(),
            local_domain: "bench.test".into(),
            dnsbl: ZONE.into(),
            dnsbl_refuses: false,
            ports: vec![25],
            asks_mxscreen: asks.map(std::path::Path::to_path_buf),
            own_acl,
        },
    );
    let before = counter.queries().len();
    let server: IpAddr = SERVER_V4.parse().unwrap();
    let mut reached = 0;
    for i in 0..CONNECTIONS {
        std::thread::sleep(EXPLAIN + Duration::from_millis(200));
        let r = swaks(
            &wire.client,
            LISTED,
            server,
            25,
            "postmaster@bench.test",
            &format!("bench-{i}"),
            Duration::from_secs(5),
        );
        assert!(!r.accepted, "{}", r.transcript);
        if r.transcript.contains("<** 5") {
            reached += 1;
        }
    }
    assert!(
        exim.mainlog().matches("rejected connection").count() >= reached,
        "{}",
        exim.mainlog()
    );
    let seen = &counter.queries()[before..];
    let dnsbl = seen
        .iter()
        .filter(|q| q.name.ends_with(&format!("{ZONE}.")))
        .count();
    Row {
        acl,
        reached,
        dnsbl,
        all: seen.len(),
    }
}
