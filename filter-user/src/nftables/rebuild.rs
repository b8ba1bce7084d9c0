//! Writing the table again from the handle's bookkeeping, after something else deleted it.
//!
//! `nft flush ruleset` deletes every table, mxscreen's too, and it is how most firewalls
//! load: the first line of Debian's `/etc/nftables.conf`, run by `systemctl reload
//! nftables`, and of many a hand-written script. The eBPF datapath's links are out of its
//! reach; the table is not. Without it every SYN passes
//! (fail-open), so nothing breaks, but nothing is screened either until the daemon writes the
//! table again — which it does at the next heartbeat, within a second, from what it keeps:
//! own entries, network verdicts, feeds, verdicts and the rules they need.
//!
//! What the kernel alone held is gone with it. The named counters (outcomes, feeds' hits)
//! start again from what the last heartbeat read of them, so `stats` and the metrics go on
//! counting, short of at most a second's SYNs; a source's hits (its element's counter, read
//! only when asked for) restart at 0; and every source not decided by an element is a first
//! contact again (reported anew).

use std::{collections::HashMap, net::IpAddr};

use anyhow::{Context as _, Result};
use filter_common::{ListEntry, PeerVerdict};

use super::{Nftables, entries::feed_table, lists::Lists, sets::Kind};
use crate::datapath::ListKind;

impl Nftables {
    /// Empties the bookkeeping of the table's verdicts and decision elements (the table holds
    /// none of them: deleted, or a write of them failed whole) and returns the verdicts.
    /// Held-back writes go too: whoever writes the verdicts again writes them.
    pub(super) fn forget_elements(&mut self) -> HashMap<IpAddr, PeerVerdict> {
        self.later.clear();
        self.verdict_count = [0; 2];
        self.decided.clear();
        self.walked.clear();
        self.uncounted.clear();
        self.carried.clear();
        std::mem::take(&mut self.verdicts)
    }

    /// Writes the whole table again (it is gone: see the module's comment). A write that
    /// fails is logged and the others go on, so one bad entry costs no more than itself.
    pub(super) fn rebuild(&mut self) -> Result<()> {
        // The feeds keep their ids (every feed's chain and counter is made by the first
        // rewrite below), so each counter starts from its own reading.
        let emptied = self.lists.emptied();
        let Lists { own, feeds, .. } = std::mem::replace(&mut self.lists, emptied);
        let verdicts = self.forget_elements();
        self.applied = None;
        let tallies = self.tallies.clone();
        self.sync_rules_seeded(&tallies)
            .context("writing the rules again")?;
        let mut failed = 0;
        let mut check = |what: &dyn std::fmt::Display, r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %format!("{e:#}"), "writing {what} again into the nftables table failed");
                failed += 1;
            }
        };
        for ((kind, p), o) in own {
            let entry = ListEntry::new(o.reason, o.expires_ns);
            let r = match kind {
                Kind::OwnAllow => self.list_insert(ListKind::Allow, p.net(), entry),
                Kind::OwnDeny => self.list_insert(ListKind::Deny, p.net(), entry),
                Kind::Network => {
                    self.network_verdict_set(p.net(), o.action, o.reason, o.expires_ns)
                }
                _ => continue,
            };
            check(&p.net(), r);
        }
        for f in feeds {
            let r = self.feed_load(&f.name, feed_table(f.kind), f.set).map(drop);
            check(&format_args!("feed {}", f.name), r);
        }
        let r = self.verdicts_restore(verdicts.into_iter().collect());
        check(&"the verdicts", r);
        anyhow::ensure!(failed == 0, "{failed} writes failed (logged above)");
        Ok(())
    }
}
