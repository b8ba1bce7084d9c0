//! `stats` and `status`: counters and the daemon's own state, for the operator.

use std::time::Duration;

use anyhow::Result;
use filter_common::{Action, Counter, program_names};

use super::Daemon;
use crate::{
    control::protocol::{
        InterfaceStatus, MapFill, ProgramStatus, ReloadStatus, ResolverStatus, Source, StatsReply,
        StatusReply,
    },
    datapath::{ListKind, clock},
    duration,
    reputation::Stats,
    state::unix_now,
};

impl Daemon {
    pub(super) fn stats(&self) -> Result<StatsReply> {
        let counters = self.maps.counters()?;
        let datapath = Counter::ALL
            .iter()
            .map(|c| (c.name().to_owned(), counters[*c as usize]))
            .collect();
        let mut by_action: Vec<(Action, u64)> = Action::ALL.iter().map(|a| (*a, 0)).collect();
        let mut by_source = std::collections::BTreeMap::<Source, u64>::new();
        let now = clock::now_ns();
        self.maps.for_each_verdict_chunk(|chunk| {
            for (_, v) in chunk
                .iter()
                .filter(|(_, v)| v.expires_ns == 0 || v.expires_ns > now)
            {
                // The action the datapath applies: an unknown byte passes, here as there.
                if let Some(slot) = by_action.iter_mut().find(|(a, _)| *a == v.action()) {
                    slot.1 += 1;
                }
                *by_source.entry(Source::from(v.reason())).or_default() += 1;
            }
            true
        })?;
        Ok(StatsReply {
            datapath,
            verdicts_by_action: by_action,
            verdicts_by_reason: by_source.into_iter().collect(),
            engine: self.engine.stats(),
        })
    }

    pub(super) fn status(&mut self) -> Result<StatusReply> {
        let mut programs = Vec::new();
        for name in [program_names::XDP, program_names::TC] {
            if let Some(p) = self.ebpf.program(name) {
                let id = p.info().map(|i| i.id()).unwrap_or(0);
                programs.push(ProgramStatus {
                    name: name.to_owned(),
                    id,
                });
            }
        }
        let sizes = self.cfg.datapath.maps;
        let fill = |name: &str, entries: usize, per_family: u32| MapFill {
            name: name.into(),
            entries: entries as u64,
            max_entries: per_family.saturating_mul(2),
        };
        let maps = vec![
            fill(
                "allow (v4+v6)",
                self.maps.list_entries(ListKind::Allow)?.len(),
                sizes.allow,
            ),
            fill(
                "deny (v4+v6)",
                self.maps.list_entries(ListKind::Deny)?.len(),
                sizes.deny,
            ),
            fill("verdicts (v4+v6)", self.verdict_count()?, sizes.verdicts),
        ];
        let engine = self.engine.stats();
        Ok(StatusReply {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_path.as_ref().map(|p| p.display().to_string()),
            observe: self.cfg.policy.observe,
            first_contact: self.cfg.datapath.first_contact,
            ports: self.cfg.datapath.ports.clone(),
            interfaces: self
                .attached
                .iter()
                .map(|a| InterfaceStatus {
                    name: a.iface.clone(),
                    mode: a.mode,
                })
                .collect(),
            programs,
            maps,
            warnings: self.status_warnings(&engine),
            reload: self.reloads.clone(),
            resolver: ResolverStatus {
                nameservers: self.cfg.resolver.nameservers.clone(),
                engine,
            },
            fleet: self.fleet.status().map(|mut f| {
                f.refused = self.fleet_refused;
                Box::new(f)
            }),
        })
    }

    /// Setup warnings plus a line per zone that has answered with refusal codes.
    fn status_warnings(&self, stats: &Stats) -> Vec<String> {
        let mut w = self.engine.warnings();
        if let Some(ReloadStatus {
            at,
            error: Some(error),
            ..
        }) = &self.reloads
        {
            let ago = duration::format(Duration::from_secs(unix_now().saturating_sub(*at)));
            w.push(format!(
                "the last reload ({ago} ago) failed and the previous config is still running: {error}"
            ));
        }
        for (zone, z) in &stats.zones {
            if z.error_codes > 0 {
                w.push(format!(
                    "{zone} refused {} queries with error codes (127.255.255.x): those peers were not screened by it; check resolver.nameservers",
                    z.error_codes
                ));
            }
        }
        w
    }

    /// Cached verdicts (expired ones included: they hold their slot until swept).
    fn verdict_count(&self) -> Result<usize> {
        let mut n = 0;
        self.maps.for_each_verdict_chunk(|c| {
            n += c.len();
            true
        })?;
        Ok(n)
    }
}
