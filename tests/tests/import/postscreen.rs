//! The postscreen half of the import test: main.cf settings in the styles of four mail
//! suites (written for this test, after what each ships), and a real postscreen asked about
//! every host.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use filter_common::Action;
use mxscreen::{config::Config, reputation::Finding};
use mxscreen_tests::postfix::Postfix;
use socket2::{Domain, Socket, Type};

use super::{Decided, SERVER_V4, SERVER_V6, World, config_check, hosts, import, mxscreen};

/// Where postscreen listens.
const PORT: u16 = 2525;

/// One mail suite's postscreen settings: files (name, text) given the world's directory,
/// where access tables are written.
pub struct Style {
    pub name: &'static str,
    pub files: fn(&Path) -> Vec<(&'static str, String)>,
}

pub const STYLES: &[Style] = &[
    Style {
        name: "mailcow",
        files: mailcow,
    },
    Style {
        name: "docker-mailserver",
        files: docker_mailserver,
    },
    Style {
        name: "iRedMail",
        files: iredmail,
    },
    Style {
        name: "Modoboa",
        files: modoboa,
    },
];

/// mailcow: main.cf plus dns_blocklists.cf, which its start script appends; weighted
/// per-code entries, several per zone, DNSWL and mailspike allowlists, an all-permit cidr.
fn mailcow(dir: &Path) -> Vec<(&'static str, String)> {
    let access = dir.join("postscreen_access.cidr");
    std::fs::write(&access, "# Allowed senders\n203.0.113.5/32 permit\n").unwrap();
    let main = format!(
        "mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 [fe80::]/10 [fc00::]/7\n\
         postscreen_access_list = permit_mynetworks,\n  cidr:{}\npostscreen_bare_newline_enable = no\n\
         postscreen_blacklist_action = drop\npostscreen_cache_cleanup_interval = 24h\npostscreen_dnsbl_action = enforce\n\
         postscreen_dnsbl_threshold = 6\npostscreen_dnsbl_ttl = 5m\npostscreen_greet_action = enforce\npostscreen_greet_ttl = 2d\n\
         postscreen_non_smtp_command_enable = no\npostscreen_pipelining_enable = no\n",
        access.display()
    );
    let sites = "# Content loaded from dns_blocklists.cf, edit only if really necessary!\n\
        postscreen_dnsbl_sites = wl.mailspike.net=127.0.0.[18;19;20]*-2\n  hostkarma.junkemailfilter.com=127.0.0.1*-2\n\
        \x20 list.dnswl.org=127.0.[0..255].0*-2\n  list.dnswl.org=127.0.[0..255].1*-4\n  list.dnswl.org=127.0.[0..255].2*-6\n\
        \x20 list.dnswl.org=127.0.[0..255].3*-8\n  ix.dnsbl.manitu.net*2\n  bl.spamcop.net*2\n  bl.suomispam.net*2\n\
        \x20 hostkarma.junkemailfilter.com=127.0.0.2*3\n  hostkarma.junkemailfilter.com=127.0.0.4*2\n\
        \x20 hostkarma.junkemailfilter.com=127.0.1.2*1\n  backscatter.spameatingmonkey.net*2\n  bl.ipv6.spameatingmonkey.net*2\n\
        \x20 bl.spameatingmonkey.net*2\n  b.barracudacentral.org=127.0.0.2*7\n  bl.mailspike.net=127.0.0.2*5\n\
        \x20 bl.mailspike.net=127.0.0.[10;11;12]*4\n  dnsbl.sorbs.net=127.0.0.10*8\n  dnsbl.sorbs.net=127.0.0.5*6\n\
        \x20 zen.spamhaus.org=127.0.0.[10;11]*8\n  zen.spamhaus.org=127.0.0.[4..7]*6\n  zen.spamhaus.org=127.0.0.3*4\n\
        \x20 zen.spamhaus.org=127.0.0.2*3\n";
    vec![("main.cf", main), ("dns_blocklists.cf", sites.to_owned())]
}

/// docker-mailserver: one filter per zone, DNSWL by trust level, the allowlist threshold
/// under its 3.6 name, and a `$name` reference.
fn docker_mailserver(_: &Path) -> Vec<(&'static str, String)> {
    let main = "dms_zen = zen.spamhaus.org\n\
        postscreen_dnsbl_sites =\n    ${dms_zen}=127.0.0.[2..11]*3\n    bl.mailspike.net=127.0.0.[2..12]*2\n\
        \x20   bl.spameatingmonkey.net=127.0.0.2*2\n    psbl.surriel.com*1\n    list.dnswl.org=127.0.[0..255].0*-2\n\
        \x20   list.dnswl.org=127.0.[0..255].1*-3\n    list.dnswl.org=127.0.[0..255].[2..3]*-4\n\
        postscreen_dnsbl_threshold = 3\npostscreen_dnsbl_allowlist_threshold = -1\npostscreen_dnsbl_action = enforce\n\
        postscreen_greet_action = enforce\npostscreen_bare_newline_action = enforce\n";
    vec![("main.cf", main.to_owned())]
}

/// iRedMail: few zones, the old whitelist name, a reply map, and a cidr table that both
/// permits and rejects.
fn iredmail(dir: &Path) -> Vec<(&'static str, String)> {
    let access = dir.join("iredmail_postscreen_access.cidr");
    std::fs::write(
        &access,
        "# Rules are checked in order\n203.0.113.5 permit\n203.0.113.66 reject\n",
    )
    .unwrap();
    let reply = dir.join("postscreen_dnsbl_reply");
    std::fs::write(&reply, "zen.spamhaus.org  zen.spamhaus.org\n").unwrap();
    let main = format!(
        "postscreen_greet_action = drop\npostscreen_blacklist_action = drop\npostscreen_dnsbl_action = drop\n\
         postscreen_dnsbl_threshold = 2\npostscreen_dnsbl_sites =\n    zen.spamhaus.org=127.0.0.[2..11]*2\n\
         \x20   b.barracudacentral.org=127.0.0.2*2\n    list.dnswl.org=127.0.[0..255].[1..3]*-2\n\
         postscreen_dnsbl_reply_map = texthash:{}\npostscreen_access_list = permit_mynetworks cidr:{}\n\
         postscreen_dnsbl_whitelist_threshold = -2\n",
        reply.display(),
        access.display()
    );
    vec![("main.cf", main)]
}

/// Modoboa: unfiltered zones, Spamhaus' allowlist, DNSWL patterns over the whole of 127/8.
fn modoboa(_: &Path) -> Vec<(&'static str, String)> {
    let main = "postscreen_dnsbl_threshold = 3\npostscreen_dnsbl_sites =\n        zen.spamhaus.org=127.0.0.[2..11]*3\n\
        \x20       bl.spameatingmonkey.net*2\n        bl.spamcop.net\n        dnsbl.sorbs.net\n        swl.spamhaus.org*-4\n\
        \x20       list.dnswl.org=127.[0..255].[0..255].0*-2\n        list.dnswl.org=127.[0..255].[0..255].1*-4\n\
        \x20       list.dnswl.org=127.[0..255].[0..255].[2..3]*-6\npostscreen_dnsbl_whitelist_threshold = -2\n\
        postscreen_dnsbl_action = enforce\npostscreen_greet_action = enforce\n";
    vec![("main.cf", main.to_owned())]
}

/// What postscreen said about a host.
#[derive(Debug, Default)]
struct Said {
    score: Option<i32>,
    allowlisted: bool,
    denylisted: bool,
}

/// Starts postscreen (`-v`) with the style's settings and asks it about every host.
fn postscreen(w: &World, texts: &str) -> HashMap<&'static str, Said> {
    // mynetworks before the style's settings (a style may set its own), our greet wait after.
    let main = format!("mynetworks = 127.0.0.0/8\n{texts}\npostscreen_greet_wait = 3s\n");
    let services = format!(
        "{PORT} inet n - n - 1 postscreen -v\nsmtpd pass - - n - - smtpd\ndnsblog unix - - n - 0 dnsblog\n\
         tlsproxy unix - - n - 0 tlsproxy\n"
    );
    let pf = Postfix::start_with(&w.ns, PORT, "example.org", None, &main, &services);
    let log = pf.log();
    let mut out = HashMap::new();
    for host in hosts() {
        let mark = log.mark();
        let ip: IpAddr = host.parse().unwrap();
        let server: IpAddr = if ip.is_ipv4() { SERVER_V4 } else { SERVER_V6 }
            .parse()
            .unwrap();
        let stream = w.ns.enter(|| connect(ip, SocketAddr::new(server, PORT)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let said = loop {
            let text = log.text();
            let new = text.get(mark..).unwrap_or_default();
            let said = said_about(new, host);
            if said.score.is_some()
                || said.allowlisted
                || (said.denylisted && new.contains("521 5.3.2"))
            {
                break said;
            }
            assert!(
                Instant::now() < deadline,
                "postscreen said nothing about {host}:\n{text}\n{}",
                pf.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(stream);
        out.insert(host, said);
    }
    out
}

fn connect(src: IpAddr, dst: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::for_address(dst), Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(src, 0).into()).unwrap();
    s.connect_timeout(&dst.into(), Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"));
    s.into()
}

/// The postscreen log lines after a connection from `host`: its score, its access-list
/// verdict.
fn said_about(log: &str, host: &str) -> Said {
    let mut said = Said::default();
    let bracketed = format!("[{host}]:");
    for line in log.lines() {
        if let Some(rest) = line
            .split(&format!("psc_dnsbl_retrieve: addr={host} score="))
            .nth(1)
        {
            said.score = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        }
        if line.contains(&bracketed) {
            said.allowlisted |= line.contains("ALLOWLISTED") || line.contains("WHITELISTED");
            said.denylisted |= line.contains("DENYLISTED") || line.contains("BLACKLISTED");
        }
    }
    said
}

/// Whether an allow feed of `cfg` lists `host` (the cidr table itself, by its path).
fn in_allow_feed(cfg: &Config, host: &str) -> bool {
    let ip: IpAddr = host.parse().unwrap();
    cfg.lists
        .feed
        .iter()
        .filter(|f| f.action.name() == "allow")
        .any(|f| {
            std::fs::read_to_string(&f.path).unwrap().lines().any(|l| {
                let first = l.split_whitespace().next().unwrap_or("#");
                let net: Option<ipnet::IpNet> = first
                    .parse()
                    .ok()
                    .or_else(|| first.parse::<IpAddr>().ok().map(Into::into));
                net.is_some_and(|n| n.contains(&ip))
            })
        })
}

/// Translates the style, checks the translation, and compares its decisions with
/// postscreen's for every host.
pub fn compare(w: &World, style: &Style) -> usize {
    let files = (style.files)(w.dir.path());
    let paths: Vec<_> = files
        .iter()
        .map(|(name, text)| w.file(&format!("{}-{name}", style.name), text))
        .collect();
    let (toml, summary) = import(
        "postscreen",
        &paths.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
    );
    let path = config_check(w, &format!("{}.toml", style.name), &toml);
    let cfg = Config::load(&path).unwrap();
    let threshold = cfg.policy.drop_threshold;
    let decided: HashMap<&str, Decided> = mxscreen(w, &path).into_iter().collect();
    let all: String = files
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let said = postscreen(w, &all);
    let mut differing = 0;
    let why = |host: &str| {
        format!(
            "{}: {host}: postscreen {:?}, mxscreen {:?}\n{summary}\n{toml}",
            style.name, said[host], decided[host]
        )
    };
    for host in hosts() {
        let (ps, mx) = (&said[host], &decided[host]);
        eprintln!(
            "{}: {host:>16}: postscreen {ps:?}, mxscreen {:?} score {}",
            style.name, mx.action, mx.score
        );
        if ps.allowlisted {
            assert!(
                mx.listed == Some(Finding::StaticAllow) || in_allow_feed(&cfg, host),
                "{}",
                why(host)
            );
            continue;
        }
        if ps.denylisted {
            assert_eq!(mx.listed, Some(Finding::StaticDeny), "{}", why(host));
            continue;
        }
        let score = ps.score.unwrap_or_else(|| panic!("{}", why(host)));
        // The documented difference: a site without a filter counts a refusal
        // (127.255.255.x) in postscreen, never in mxscreen. Such a site is a zone table
        // without `codes`, weighing what the site did.
        let refusals: i32 = cfg
            .dnsbl
            .iter()
            .filter(|z| z.codes.is_empty() && mx.refused_by.contains(&format!("dnsbl:{}", z.zone)))
            .map(|z| z.weight)
            .sum();
        assert_eq!(mx.score + refusals, score, "{}", why(host));
        differing += usize::from(refusals != 0);
        if refusals == 0 {
            assert_eq!(
                mx.action == Action::Drop,
                score >= threshold,
                "{}",
                why(host)
            );
        }
    }
    differing
}
