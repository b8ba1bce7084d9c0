//! What the daemon publishes for a scrape: its census of the maps (cached verdicts, list
//! entries), map capacities, attachments, observe mode, reloads, start time and version.

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use ::metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use anyhow::Result;
use filter_common::Reason;

use super::Families;
use crate::{
    control::protocol::Source,
    datapath::{Census, MapSizes, attach::AttachedMode},
};

pub const VERDICTS: &str = "mxscreen_verdicts_cached";
pub const VERDICTS_BY_SOURCE: &str = "mxscreen_verdicts_cached_by_source";
pub const MAP_ENTRIES: &str = "mxscreen_map_entries";
pub const MAP_CAPACITY: &str = "mxscreen_map_capacity_entries";
pub const OBSERVE: &str = "mxscreen_observe_mode";
pub const ATTACHED: &str = "mxscreen_attached_info";
pub const RELOADS: &str = "mxscreen_config_reloads_total";
pub const LAST_RELOAD_OK: &str = "mxscreen_config_last_reload_successful";
pub const LAST_RELOAD_SUCCESS: &str = "mxscreen_config_last_reload_success_timestamp_seconds";
pub const RESTART_PENDING: &str = "mxscreen_config_restart_pending_keys";
pub const START_TIME: &str = "mxscreen_start_time_seconds";
pub const BUILD_INFO: &str = "mxscreen_build_info";

/// The daemon's facts as of its last change; the main loop writes, scrapes read.
#[derive(Clone, Debug)]
pub struct Facts {
    pub census: Census,
    pub capacity: MapSizes,
    pub observe: bool,
    /// Each interface with its attach mode and whether it is screened now (not gone).
    pub interfaces: Vec<(String, AttachedMode, bool)>,
    /// Which backend screens (`ebpf`, `nftables`) and, when `auto` fell back to nftables,
    /// why eBPF was not used.
    pub backend: (String, Option<String>),
    pub reloads: Reloads,
    pub started: SystemTime,
    /// Shared entries this host refused (the fleet's).
    pub fleet_refused: u64,
}

impl Facts {
    /// A daemon starting at `started`, before it has counted or attached anything.
    pub fn new(started: SystemTime) -> Self {
        Self {
            census: Census::default(),
            capacity: MapSizes::default(),
            observe: false,
            interfaces: Vec::new(),
            backend: (String::new(), None),
            reloads: Reloads::new(started),
            started,
            fleet_refused: 0,
        }
    }
}

/// SIGHUP outcomes.
#[derive(Clone, Debug)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    pub last_ok: bool,
    /// When the running config was last applied: the start, then each successful reload.
    pub last_success: SystemTime,
    /// When the last reload was asked for; `None` before the first.
    pub last_at: Option<SystemTime>,
    /// Why the last reload failed; `None` if it succeeded.
    pub error: Option<String>,
    /// The keys the file changed that only a restart applies (they keep their running
    /// values until then), as of the last successful reload.
    pub restart_pending: Vec<&'static str>,
}

impl Reloads {
    pub fn new(now: SystemTime) -> Self {
        Self {
            succeeded: 0,
            failed: 0,
            last_ok: true,
            last_success: now,
            last_at: None,
            error: None,
            restart_pending: Vec::new(),
        }
    }

    /// One reload's outcome: the keys waiting for a restart, or why it failed.
    pub fn record(&mut self, outcome: Result<Vec<&'static str>, String>) {
        let now = SystemTime::now();
        self.last_at = Some(now);
        self.last_ok = outcome.is_ok();
        match outcome {
            Ok(pending) => {
                self.succeeded += 1;
                self.last_success = now;
                self.error = None;
                self.restart_pending = pending;
            }
            Err(e) => {
                self.failed += 1;
                self.error = Some(e);
            }
        }
    }
}

pub type SharedFacts = Arc<Mutex<Facts>>;

/// Reads the facts the daemon published.
pub struct DaemonFamilies(pub SharedFacts);

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl Families for DaemonFamilies {
    fn describe(&self) {
        describe_gauge!(
            VERDICTS,
            Unit::Count,
            "Verdicts cached in the datapath's map, by action (`mxscreen stats`)."
        );
        describe_gauge!(
            VERDICTS_BY_SOURCE,
            Unit::Count,
            "Verdicts cached in the datapath's map, by where they came from (`mxscreen stats`)."
        );
        describe_gauge!(
            MAP_ENTRIES,
            Unit::Count,
            "Entries in the verdict, allow and deny maps, both address families (`mxscreen status`)."
        );
        describe_gauge!(
            MAP_CAPACITY,
            Unit::Count,
            "Capacity of the verdict, allow and deny maps, both address families ([datapath.maps])."
        );
        describe_gauge!(
            OBSERVE,
            "1 while observe mode is on: decisions are counted, nothing is dropped or limited."
        );
        describe_gauge!(
            ATTACHED,
            "1 per interface screened, with its attach mode and backend (ebpf, nftables); on nftables chosen by auto, why eBPF was not used (`mxscreen status`)."
        );
        describe_counter!(
            RELOADS,
            Unit::Count,
            "Config reloads (SIGHUP), by result: a failed one changed nothing."
        );
        describe_gauge!(
            LAST_RELOAD_OK,
            "1 if the last config reload succeeded (or none was asked), 0 if it failed."
        );
        describe_gauge!(
            LAST_RELOAD_SUCCESS,
            Unit::Seconds,
            "Unix time the running config was applied: the start, then each successful reload."
        );
        describe_gauge!(
            RESTART_PENDING,
            Unit::Count,
            "Keys the config file changed that only a restart applies (`mxscreen status` names them); 0 when the daemon runs what the file says."
        );
        describe_gauge!(START_TIME, Unit::Seconds, "Unix time the daemon started.");
        describe_gauge!(
            BUILD_INFO,
            "Always 1; the labels name the running mxscreen."
        );
    }

    fn update(&self) -> Result<()> {
        let f = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (action, n) in f.census.verdicts_by_action() {
            gauge!(VERDICTS, "action" => action.name()).set(n as f64);
        }
        for (reason, n) in f.census.verdicts_by_reason() {
            gauge!(VERDICTS_BY_SOURCE, "source" => source_name(reason)).set(n as f64);
        }
        // The lists' shared map per family, both families in a series; the verdicts' map of
        // each family a series of its own (one can fill alone), as `status` shows them.
        for (map, entries, capacity) in f.census.list_fill(&f.capacity) {
            gauge!(MAP_ENTRIES, "map" => map).set(entries as f64);
            gauge!(MAP_CAPACITY, "map" => map).set(capacity as f64);
        }
        for ((_, entries, capacity), family) in f
            .census
            .verdict_fill(&f.capacity)
            .into_iter()
            .zip(["v4", "v6"])
        {
            gauge!(MAP_ENTRIES, "map" => "verdicts", "family" => family).set(entries as f64);
            gauge!(MAP_CAPACITY, "map" => "verdicts", "family" => family).set(capacity as f64);
        }
        gauge!(OBSERVE).set(if f.observe { 1.0 } else { 0.0 });
        let (backend, ebpf_error) = &f.backend;
        // 0 while an interface is gone (`status`: NOT SCREENED): a scrape keeps every series
        // it saw, so a vanished one would read 1 for ever.
        for (iface, mode, screened) in &f.interfaces {
            let mut labels = vec![
                ("interface", iface.clone()),
                ("mode", mode.name().to_owned()),
                ("backend", backend.clone()),
            ];
            if let Some(why) = ebpf_error {
                labels.push(("ebpf_error", why.clone()));
            }
            gauge!(ATTACHED, &labels).set(if *screened { 1.0 } else { 0.0 });
        }
        counter!(RELOADS, "result" => "success").absolute(f.reloads.succeeded);
        counter!(RELOADS, "result" => "failure").absolute(f.reloads.failed);
        gauge!(LAST_RELOAD_OK).set(if f.reloads.last_ok { 1.0 } else { 0.0 });
        gauge!(LAST_RELOAD_SUCCESS).set(unix_secs(f.reloads.last_success));
        gauge!(RESTART_PENDING).set(f.reloads.restart_pending.len() as f64);
        gauge!(START_TIME).set(unix_secs(f.started));
        gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Ok(())
    }
}

/// The name `stats` gives a verdict's reason.
fn source_name(r: Reason) -> &'static str {
    Source::from(r).name()
}

#[cfg(test)]
mod tests {
    use filter_common::{Action, PeerVerdict};

    use super::*;
    use crate::metrics::testing::render;

    /// The census and facts render as the families a dashboard reads, with help and types.
    #[test]
    fn facts_render_as_families() {
        let mut facts = Facts::new(SystemTime::now());
        facts.census.replace(
            "2001:db8::1".parse().unwrap(),
            None,
            &PeerVerdict::new(Action::Drop, Reason::Manual, 0),
        );
        facts.interfaces = vec![
            ("eth0".into(), AttachedMode::Tc, true),
            ("eth1".into(), AttachedMode::Tc, false),
        ];
        facts.backend = ("ebpf".into(), None);
        let text = render(&[&DaemonFamilies(Arc::new(Mutex::new(facts)))]);
        for line in [
            "# TYPE mxscreen_verdicts_cached gauge",
            "mxscreen_verdicts_cached{action=\"drop\"} 1",
            "mxscreen_verdicts_cached{action=\"pass\"} 0",
            "mxscreen_verdicts_cached_by_source{source=\"manual\"} 1",
            "mxscreen_map_capacity_entries{map=\"verdicts\",family=\"v6\"} 262144",
            "mxscreen_map_entries{map=\"verdicts\",family=\"v6\"} 1",
            "mxscreen_map_entries{map=\"verdicts\",family=\"v4\"} 0",
            "mxscreen_attached_info{interface=\"eth0\",mode=\"tc\",backend=\"ebpf\"} 1",
            "mxscreen_attached_info{interface=\"eth1\",mode=\"tc\",backend=\"ebpf\"} 0",
            "# TYPE mxscreen_config_reloads_total counter",
            "mxscreen_config_reloads_total{result=\"failure\"} 0",
            "mxscreen_config_last_reload_successful 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("# HELP mxscreen_map_entries "), "{text}");
    }
}
