//! The Exim half of the import test: a Debian-style configuration (macros in the main
//! section, `.ifdef` blocks, a connect ACL that delays end-user space, a RCPT ACL with a DNSWL
//! exemption, a deny that exempts partners, per-code lists and a bitmask), and the real Exim
//! asked about every host with `exim4 -bh`, which runs the ACLs of an SMTP session from that
//! address, DNS lookups included, without a network connection.

use std::{collections::HashMap, io::Write as _, path::Path, process::Stdio};

use filter_common::Action;
use mxscreen_tests::{dns::require_binary, mta::private_mounts};

use super::{Decided, World, config_check, hosts, import, mxscreen};

/// The one host where Exim's statement order and mxscreen's "an allowlist wins" part: it is
/// delayed by the connect ACL (zen.spamhaus.org PBL) and accepted by the RCPT ACL's DNSWL
/// exemption: Exim slows it and takes its mail, mxscreen passes it. The import names it.
const DIFFERS: &str = "198.51.100.12";

fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# Macros, as /etc/exim4/conf.d/main/00_local_macros sets them
CHECK_RCPT_IP_DNSBLS = zen.spamhaus.org=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.9 : \
                       bl.spamcop.net=127.0.0.2
.ifndef MAIN_ACL_CHECK_RCPT
MAIN_ACL_CHECK_RCPT = acl_check_rcpt
.endif

primary_hostname = mx.example.org
domainlist local_domains = example.org
hostlist relay_from_hosts = 127.0.0.1 : ::::1
hostlist partners = 198.51.100.16 : 203.0.113.0/28
log_file_path = {d}/exim-log/%slog
spool_directory = {d}/exim-spool
acl_smtp_connect = acl_check_connect
acl_smtp_rcpt = MAIN_ACL_CHECK_RCPT

begin acl

acl_check_connect:
  accept  hosts = +relay_from_hosts
  # End-user space and known snowshoe ranges: make bots give up, let MTAs through.
  warn    dnslists = zen.spamhaus.org=127.0.0.10,127.0.0.11 : \
                     bl.mailspike.net=127.0.0.10,127.0.0.11,127.0.0.12
          delay = 20s
          log_message = slowed: $dnslist_domain ($dnslist_value)
  accept

acl_check_rcpt:
  accept  hosts = :
  deny    !domains = +local_domains
          message = relay not permitted
  # DNSWL medium and high trust (the third bit): skip the blocklists.
  accept  dnslists = list.dnswl.org&0.0.0.2
  .ifdef CHECK_RCPT_IP_DNSBLS
  deny    !hosts = +relay_from_hosts : +partners
          !authenticated = *
          message = $sender_host_address is listed at $dnslist_domain ($dnslist_value: $dnslist_text)
          dnslists = CHECK_RCPT_IP_DNSBLS
  .endif
  deny    message = rejected because $sender_host_address is in a black list at $dnslist_domain
          dnslists = <; b.barracudacentral.org=127.0.0.2 ; psbl.surriel.com/$sender_host_address
  warn    dnslists = dnsbl.sorbs.net
          add_header = X-Warning: $sender_host_address is listed at $dnslist_domain
  # Only for mail claiming to come from the spammers' domain.
  deny    senders = *@spammers.example
          dnslists = hostkarma.junkemailfilter.com=127.0.0.2
  accept

begin routers
"#
    )
}

/// What Exim did with a session from `host`: drop (a 5xx, or DENY/DROP), limit (a delay,
/// or DEFER), or pass.
fn exim_bh(w: &World, conf: &Path, host: &str) -> (Action, String) {
    let exim = require_binary("exim4");
    let mut cmd = private_mounts(w.dir.path(), None);
    cmd.arg(exim).args(["-C"]).arg(conf).args(["-bh", host]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = w.ns.enter(|| cmd.spawn().expect("exim4 -bh"));
    let session = "EHLO client.example.net\r\nMAIL FROM:<sender@example.net>\r\nRCPT TO:<postmaster@example.org>\r\nQUIT\r\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(session.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let action = if transcript.contains("\": DENY")
        || transcript.contains("\": DROP")
        || transcript
            .lines()
            .any(|l| l.starts_with("550 ") || l.starts_with("554 "))
    {
        Action::Drop
    } else if transcript.contains("delay modifier requests") || transcript.contains("\": DEFER") {
        Action::Limit
    } else {
        Action::Pass
    };
    (action, transcript)
}

pub fn compare(w: &World) {
    for sub in ["exim-log", "exim-spool"] {
        let p = w.dir.path().join(sub);
        std::fs::create_dir_all(&p).unwrap();
        mxscreen_tests::netns::run("chown", &["Debian-exim:Debian-exim", p.to_str().unwrap()]);
    }
    let conf = w.file("exim4.conf", &config(w.dir.path()));
    let (toml, summary) = import("exim", &[conf.as_path()]);
    let path = config_check(w, "exim.toml", &toml);
    let header = toml
        .replace("\n#", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        header.contains("exim4.conf:22) runs in another ACL"),
        "the import should name the delay its allowlist cancels:\n{toml}"
    );
    // The partners the deny exempts are allowed (198.51.100.16 and 203.0.113.5 are listed
    // by its lists: Exim passes them, and so must mxscreen).
    assert!(
        header.contains(
            "exempts 198.51.100.16/32, 203.0.113.0/28 from this statement: in lists.allow"
        ),
        "the import should allow the partners the deny exempts:\n{toml}"
    );
    let decided: HashMap<&str, Decided> = mxscreen(w, &path).into_iter().collect();
    let mut seen = HashMap::new();
    for host in hosts() {
        let (exim, transcript) = exim_bh(w, &conf, host);
        assert!(
            !transcript.contains("temporarily rejected") && !transcript.contains("DNS error"),
            "{host}: a DNS failure in Exim:\n{transcript}"
        );
        let mx = &decided[host];
        let why =
            format!("{host}: Exim {exim:?}, mxscreen {mx:?}\n{summary}\n{transcript}\n{toml}");
        if host == DIFFERS {
            assert_eq!((exim, mx.action), (Action::Limit, Action::Pass), "{why}");
        } else {
            assert_eq!(mx.action, exim, "{why}");
        }
        eprintln!(
            "exim: {host:>16}: Exim {:>5}, mxscreen {:>5} (score {})",
            exim.name(),
            mx.action.name(),
            mx.score
        );
        *seen.entry(exim.name()).or_insert(0) += 1;
    }
    // Every outcome occurs, so none of the comparisons is vacuous.
    assert!(
        ["drop", "limit", "pass"]
            .iter()
            .all(|a| seen.get(a).is_some_and(|n| *n > 0)),
        "{seen:?}"
    );
}
