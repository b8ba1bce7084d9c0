//! What the fleet guards against, each found by a QA pass against a real redis-server: times
//! out of range on the bus (a record that failed every join, one that killed the fleet
//! task), a shared verdict longer than this host would keep its own, a change that lost to
//! a later one reported as plain success (and a clock a day ahead winning every change),
//! two hosts with one fleet name, and a Redis emptied without the connection dropping.

use std::time::Duration;

use mxscreen_tests::daemon::MxDaemon;
use serde_json::Value;

use super::{CLEAN, OTHER, SHARED_WITHIN, bed, blocked, fleet_status, host, now_ms, smtp, within};

const CHANNEL: &str = "mxscreen:changes";
const DAY_MS: u128 = 86_400_000;

/// A manual block of `ip` as another host (`mx9`) would share it; `tail` ends the record.
fn block_record(ip: &str, changed_ms: u128, tail: &str) -> String {
    format!(
        r#"{{"kind":"manual","list":"deny","net":"{ip}/32","reason":"x","created":1,"host":"mx9","changed_ms":{changed_ms},"removed":false,"force":false{tail}}}"#
    )
}

/// Stores `record` under `key` (as a host's join would find it) and publishes it.
fn store_and_publish(b: &super::Bed, key: &str, record: &str) {
    b.redis.cli(&["SET", key, record]);
    b.redis.cli(&["PUBLISH", CHANNEL, record]);
}

fn malformed(d: &MxDaemon) -> u64 {
    fleet_status(d)["malformed"].as_u64().unwrap()
}

/// QA: `"expires":18446744073709551` was taken by every host, and its PX (out of Redis's
/// range) then failed the whole join at every reconnect — the host screened alone for
/// good, and every host joined the outage at its next restart (the entry was in their
/// state files). `"expires":20000000000000000` panicked the fleet task (`e * 1000`) in a
/// debug build, while `status` still said "up".
#[test]
fn records_with_times_out_of_range_are_ignored_and_never_stop_the_link() {
    let b = bed("ft");
    let mut a = host(&b, "mx-a", "xdp");
    let c = host(&b, "mx-b", "tc");
    c.cli_ok(&["block", OTHER]);
    within(SHARED_WITHIN, "block reaches mx-a", || {
        blocked(&a, OTHER).is_some()
    });
    let before = malformed(&a);
    for (ip, expires) in [
        ("192.0.2.45", "18446744073709551"),
        ("192.0.2.46", "20000000000000000"),
    ] {
        let rec = block_record(ip, now_ms(), &format!(r#","expires":{expires}"#));
        store_and_publish(&b, &format!("mxscreen:block:{ip}/32"), &rec);
    }
    within(SHARED_WITHIN, "both records judged malformed", || {
        malformed(&a) >= before + 2
    });
    // A few pings and prunes later the link still carries changes, both ways.
    std::thread::sleep(Duration::from_secs(2));
    c.cli_ok(&["block", CLEAN]);
    within(SHARED_WITHIN, "a later block reaches mx-a", || {
        blocked(&a, CLEAN).is_some()
    });
    for d in [&a, &c] {
        let listed = d.cli_ok(&["list", "--blocked"]);
        assert!(
            !listed.contains("192.0.2.45") && !listed.contains("192.0.2.46"),
            "{listed}"
        );
        assert_eq!(fleet_status(d)["link"], "up");
    }

    // An upgraded host whose state file holds such an entry (taken before the checks), and
    // which finds the bad records in Redis, joins all the same.
    a.stop();
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&a.state).unwrap()).unwrap();
    state["entries"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "list": "deny", "net": "192.0.2.47/32", "created": 1,
            "expires": 18_446_744_073_709_551u64, "origin": "mx9"
        }));
    std::fs::write(&a.state, state.to_string()).unwrap();
    a.restart();
    let f = fleet_status(&a);
    assert_eq!(f["link"], "up", "{f}");
    assert!(blocked(&a, CLEAN).is_some() && blocked(&a, OTHER).is_some());
    let log = a.log_text();
    assert!(
        log.contains("a manual entry of the state file is not shared with the fleet")
            && log.contains("longer than an entry can last"),
        "{log}"
    );
}

/// QA: a shared verdict expiring 100 years ahead was applied as-is: the kernel dropped the
/// source for 36 499 days. A verdict is kept no longer than this host keeps its own
/// (`policy.ttl_max`, 6 h here), whatever the record or the maker's clock says.
#[test]
fn a_shared_verdict_lives_no_longer_than_this_host_keeps_its_own() {
    let b = bed("fv");
    let a = host(&b, "mx-a", "xdp");
    let verdict = |ip: &str, made_ms: u128, expires_ms: u128| {
        format!(
            r#"{{"kind":"verdict","ip":"{ip}","action":"drop","source":"reputation","score":10,"evidence":"dnsbl:bl.test=listed","expires_ms":{expires_ms},"host":"mx9","made_ms":{made_ms}}}"#
        )
    };
    let now = now_ms();
    let before = malformed(&a);
    for rec in [
        verdict("192.0.2.48", now, now + 30 * DAY_MS),
        // The maker's clock two minutes ahead (within the tolerance), the verdict a day long.
        verdict("192.0.2.49", now + 120_000, now + 120_000 + DAY_MS),
        verdict("192.0.2.50", now, now + 36_600 * DAY_MS),
    ] {
        b.redis.cli(&["PUBLISH", CHANNEL, &rec]);
    }
    let six_hours_from_now = (now / 1000) as u64 + 6 * 3600 + 5;
    for ip in ["192.0.2.48", "192.0.2.49"] {
        within(SHARED_WITHIN, "the verdict is applied", || {
            a.verdict(ip).is_some()
        });
        let e = a.verdict_entry(ip).unwrap();
        assert!(
            e["expires"].as_u64().unwrap() <= six_hours_from_now,
            "kept past policy.ttl_max: {e}"
        );
        assert_eq!(e["origin"], "mx9", "{e}");
    }
    within(SHARED_WITHIN, "100 years is malformed", || {
        malformed(&a) > before
    });
    assert_eq!(a.verdict("192.0.2.50"), None);
}

/// QA: `unblock` printed "unblocked" while Redis kept the block (a later change, from a
/// host whose clock ran a day ahead): the other host still dropped the source, and the
/// block came back here at the next restart. A change from a clock too far ahead is
/// malformed, and loses in Redis too; one within the tolerance wins, and the command says
/// so.
#[test]
fn a_change_that_loses_to_a_later_one_says_so_and_a_clock_far_ahead_never_wins() {
    let b = bed("fk");
    let a = host(&b, "mx-a", "xdp");
    let c = host(&b, "mx-b", "tc");

    a.cli_ok(&["block", CLEAN]);
    within(SHARED_WITHIN, "block reaches mx-b", || {
        blocked(&c, CLEAN).is_some()
    });
    let key = format!("mxscreen:block:{CLEAN}/32");
    b.redis
        .cli(&["SET", &key, &block_record(CLEAN, now_ms() + DAY_MS, "")]);
    let out = a.cli_ok(&["unblock", CLEAN]);
    assert!(!out.contains("warning"), "{out}");
    within(SHARED_WITHIN, "the unblock reaches mx-b", || {
        blocked(&c, CLEAN).is_none()
    });
    let held: Value = serde_json::from_str(&b.redis.cli(&["GET", &key])).unwrap();
    assert_eq!(held["removed"], true, "{held}");
    b.wire.assert_connects(CLEAN, smtp());

    // Two minutes ahead is within the tolerance: that block is the later change, and stays.
    let key = format!("mxscreen:block:{OTHER}/32");
    store_and_publish(&b, &key, &block_record(OTHER, now_ms() + 120_000, ""));
    for d in [&a, &c] {
        within(SHARED_WITHIN, "the block reaches both hosts", || {
            blocked(d, OTHER).is_some_and(|e| e["origin"] == "mx9")
        });
    }
    let out = a.cli_ok(&["unblock", OTHER]);
    assert!(
        out.starts_with(&format!("unblocked {OTHER}/32; warning: the fleet holds a later change of {OTHER}/32, a block made on mx9 ("))
            && out.contains("ahead of this host's clock")
            && out.contains("it stays in force on every host, this one included"),
        "{out}"
    );
    within(SHARED_WITHIN, "the fleet's block is back on mx-a", || {
        blocked(&a, OTHER).is_some()
    });
    assert!(blocked(&c, OTHER).is_some());
    b.wire.assert_refused(OTHER, smtp());
}

/// QA: two hosts with one `fleet.name` (cloned VMs keeping one hostname) took each other's
/// changes for their own and silently shared nothing. Each process signs what it sends
/// with a number of its own: they share, and say the name is taken twice.
#[test]
fn two_hosts_with_one_name_share_and_are_told_so() {
    let b = bed("fn");
    let a = host(&b, "mx-a", "xdp");
    let twin = host(&b, "mx-a", "tc");
    twin.cli_ok(&["block", CLEAN]);
    within(SHARED_WITHIN, "the twin's block reaches mx-a", || {
        blocked(&a, CLEAN).is_some()
    });
    let f = fleet_status(&a);
    assert!(f["name_clashes"].as_u64().unwrap() >= 1, "{f}");
    let text = a.cli_ok(&["status"]);
    assert!(
        text.contains("another host uses the fleet name mx-a")
            && text.contains("set a distinct fleet.name on each host"),
        "{text}"
    );
    assert!(
        a.log_text()
            .contains("another host uses the fleet name mx-a")
    );
    // A host does not take its own messages for another's.
    assert_eq!(fleet_status(&twin)["name_clashes"], 0);
}

/// QA: a Redis emptied without a disconnect (FLUSHALL, a failover keeping the connection)
/// stayed empty until some host reconnected, and a host started meanwhile lacked the
/// blocks. Each host checks its marker key every 5 s and fills Redis again.
#[test]
fn a_redis_emptied_under_the_link_is_filled_again() {
    let b = bed("fl");
    let a = host(&b, "mx-a", "xdp");
    a.cli_ok(&["block", CLEAN, "--reason", "kept"]);
    let key = format!("mxscreen:block:{CLEAN}/32");
    assert_eq!(b.redis.cli(&["EXISTS", &key]).trim(), "1");
    b.redis.cli(&["FLUSHALL"]);
    let took = within(
        Duration::from_secs(10),
        "the block is in Redis again",
        || b.redis.cli(&["EXISTS", &key]).trim() == "1",
    );
    eprintln!("Redis filled again {took:?} after FLUSHALL");
    assert!(a.log_text().contains("Redis lost the fleet's data"));
    assert_eq!(fleet_status(&a)["refills"], 1);
    let c = host(&b, "mx-b", "tc");
    assert!(blocked(&c, CLEAN).is_some_and(|e| e["reason"] == "kept"));
}
