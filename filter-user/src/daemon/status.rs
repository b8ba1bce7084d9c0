//! `stats` and `status`: counters and the daemon's own state, for the operator.

use std::time::Duration;

use anyhow::Result;
use filter_common::Counter;

use super::Daemon;
use crate::{
    control::protocol::{
        ExplainStatus, MapFill, ReloadStatus, ResolverStatus, Source, StatsReply, StatusReply,
    },
    datapath::clock,
    duration,
    reputation::{Stats, codes, quota},
    state::unix_now,
};

impl Daemon {
    /// From a fresh census (which the metrics endpoint then serves too).
    pub(super) fn stats(&mut self) -> Result<StatsReply> {
        self.take_census()?;
        let counters = self.maps.counters()?;
        let datapath = Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), counters[*c as usize]))
            .collect();
        let by_source: std::collections::BTreeMap<Source, u64> = self
            .census
            .verdicts_by_reason()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (Source::from(r), n))
            .collect();
        Ok(StatsReply {
            datapath,
            verdicts_by_action: self.census.verdicts_by_action().collect(),
            verdicts_by_reason: by_source.into_iter().collect(),
            engine: self.engine.stats(),
        })
    }

    pub(super) fn status(&mut self) -> Result<StatusReply> {
        self.take_census()?;
        // The lists share one map per family (their rows: both families); each family's
        // verdicts have a map of their own (a row each: one can fill alone).
        let sizes = &self.cfg.datapath.maps;
        let maps = self
            .census
            .list_fill(sizes)
            .into_iter()
            .map(|(name, n, size)| (format!("{name} (v4+v6)"), n, size))
            .chain(
                self.census
                    .verdict_fill(sizes)
                    .into_iter()
                    .map(|(name, n, size)| (name.to_owned(), n, size)),
            )
            .map(|(name, entries, max_entries)| MapFill {
                name,
                entries,
                max_entries: u32::try_from(max_entries).unwrap_or(u32::MAX),
            })
            .collect();
        let engine = self.engine.stats();
        Ok(StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            observe: self.cfg.policy.observe,
            first_contact: self.cfg.datapath.first_contact,
            ports: self.cfg.datapath.ports.clone(),
            backend: self.backend.clone(),
            interfaces: self.program.interfaces(),
            programs: self.program.programs(),
            maps,
            warnings: self.status_warnings(&engine),
            reload: self.reload_status(),
            feeds: self.feeds.status(),
            resolver: ResolverStatus {
                nameservers: self.cfg.resolver.nameservers.clone(),
                canary: self.engine.canary(),
                engine,
            },
            fleet: self.fleet.status(),
            balancer: Box::new(self.balancer.status()),
            explain: self.explain_status(),
        })
    }

    /// Explained refusals as they stand (`status`, `check`).
    pub(super) fn explain_status(&self) -> ExplainStatus {
        ExplainStatus {
            on: self.mta_asks.explaining(clock::now_ns()),
            every_secs: self.cfg.policy.explain_every.as_secs(),
            to: self.cfg.policy.explain_to.name().into(),
            mta_last_asked: self.mta_asks.last_asked_unix(),
        }
    }

    /// Setup warnings plus a line per zone that has answered with refusal codes.
    fn status_warnings(&self, stats: &Stats) -> Vec<String> {
        let mut w = self.engine.warnings();
        if let Some(r) = &self.reload_status() {
            if let Some(error) = &r.error {
                let ago = duration::format(Duration::from_secs(unix_now().saturating_sub(r.at)));
                w.push(format!(
                    "the last reload ({ago} ago) failed and the previous config is still running: {error}"
                ));
            }
            if !r.restart_pending.is_empty() {
                w.push(format!(
                    "changed in the config file but applied only at a restart (running as at start until then): {}",
                    r.restart_pending.join(", ")
                ));
            }
        }
        if let Some(aside) = self.lists.state().moved_aside() {
            w.push(format!(
                "the state file did not parse at start and was moved to {}: the manual blocks and allows in it are not applied (restore them from it, then restart)",
                aside.display()
            ));
        }
        w.extend(super::balancer::warnings(&self.balancer.status()));
        w.extend(self.program.warnings());
        for (map, n, size) in self.census.verdicts_near_full(&self.cfg.datapath.maps) {
            w.push(format!(
                "the {map} map holds {n} of {size}: a new verdict there {} (raise datapath.maps.verdicts)",
                match self.backend.name.as_str() {
                    "nftables" => "makes room by removing pass verdicts and those expiring soonest",
                    _ => "pushes out the least recently used one",
                }
            ));
        }
        if let Ok(Some(r)) = self.maps.new_sources()
            && r.unheld()
        {
            w.push(format!(
                "first contact is passing unheld: {} new sources a second, above the {} the datapath can remember for hold_max (a spoofed flood?); verdicts are kept, and holding resumes when the rate falls (raise datapath.maps.seen to hold through more)",
                r.per_s, r.hold_bound
            ));
        }
        for (source, c) in self.engine.canary().iter().filter(|(_, c)| !c.ok) {
            w.push(format!(
                "resolver canary failed for {source}: {}; {}",
                c.detail,
                c.consequence(source)
            ));
        }
        for (zone, z) in &stats.zones {
            if quota::near(z.queries_today, z.daily_query_quota) {
                w.push(quota::message(zone, z.queries_today, z.daily_query_quota));
            }
            if z.error_codes > 0 {
                w.push(codes::refusal_warning(
                    zone,
                    z.error_codes,
                    z.last_error_code,
                ));
            }
        }
        w
    }

    /// How SIGHUP reloads went (kept with the facts the metrics read); `None` before the
    /// first.
    fn reload_status(&self) -> Option<ReloadStatus> {
        let f = self.facts.lock().unwrap_or_else(|e| e.into_inner());
        let r = &f.reloads;
        r.last_at.map(|at| ReloadStatus {
            at: at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ok: r.succeeded,
            failed: r.failed,
            error: r.error.clone(),
            restart_pending: r.restart_pending.iter().map(|k| (*k).to_owned()).collect(),
        })
    }
}
