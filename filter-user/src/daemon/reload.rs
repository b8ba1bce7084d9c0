//! SIGHUP: re-read the config and apply what can change live, and remember how it went so
//! `status` can say (a reload that failed leaves the old config running, which an operator
//! who only sent the signal would otherwise never learn).

use anyhow::{Result, anyhow};

use super::{Daemon, RunOptions, read_config};
use crate::config::Config;

/// SIGHUP: re-read the config; apply ports, limits, first contact, observe, zones, weights,
/// thresholds, resolver, lists and feeds (each read again: an unchanged file writes nothing)
/// live. What needs a restart ([`RESTART_ONLY`]) is named in a warning and kept as it runs.
/// A bad config changes nothing. The outcome, and the restart-only keys the file changed,
/// are recorded for `status` and the metrics.
pub fn reload(d: &mut Daemon, opts: &RunOptions) {
    let result = try_reload(d, opts).map_err(|e| {
        let error = format!("{e:#}");
        tracing::error!(%error, "reload failed; keeping the running config");
        error
    });
    d.count_reload(result);
}

/// Applies the file; returns the restart-only keys it changed (kept as they run).
fn try_reload(d: &mut Daemon, opts: &RunOptions) -> Result<Vec<&'static str>> {
    let opts = RunOptions {
        config: opts.config.clone().or_else(|| d.config_path.clone()),
        ..opts.clone()
    };
    let (new, _) = read_config(&opts)?;
    let old = d.cfg.clone();
    let pending = switch_to(d, new).map_err(|e| {
        // A file that validates can still fail to apply (a list over its map's size, a
        // kernel that refuses a write): the running config goes back in, as promised.
        match switch_to(d, old) {
            Ok(_) => e,
            Err(back) => e.context(format!(
                "and putting the running config back failed too: {back:#}"
            )),
        }
    })?;
    tracing::info!(zones = d.cfg.dnsbl.len(), ports = ?d.cfg.datapath.ports, observe = d.cfg.policy.observe, "config reloaded");
    Ok(pending)
}

/// Makes `new` the running config: the engine's, the daemon's and the datapath's. Returns
/// the restart-only keys `new` changes, kept as they run (the running config holds them as
/// they were at start).
fn switch_to(d: &mut Daemon, new: Config) -> Result<Vec<&'static str>> {
    d.engine.reload(new.reputation()).map_err(|e| anyhow!(e))?;
    let old = std::mem::replace(&mut d.cfg, new);
    let restart = restart_only_changes(&old, &d.cfg);
    keep_restart_only(&mut d.cfg, &old);
    d.mta_asks
        .set_window(crate::duration::nanos(d.cfg.policy.explain_every));
    let rotation = (
        d.cfg.policy.v6_rotation_prefix,
        d.cfg.policy.v6_rotation_after,
    );
    d.verdicts
        .configure_rotation(d.maps.as_mut(), rotation, d.cfg.policy.observe)
        .map_err(|e| e.context("applying the IPv6 rotation settings"))?;
    for name in d.feeds.configure(d.cfg.lists.feed.clone()) {
        match d.maps.feed_drop(&name) {
            Ok(change) => {
                tracing::info!(feed = %name, removed = change.removed, "feed no longer configured; its entries are gone")
            }
            Err(e) => {
                tracing::error!(feed = %name, error = %format!("{e:#}"), "removing a feed failed")
            }
        }
    }

    if !restart.is_empty() {
        tracing::warn!(keys = %restart.join(", "), "changed in the config but only applied at restart");
    }
    d.apply()
        .map_err(|e| e.context("applying the reloaded config"))?;
    Ok(restart)
}

/// The keys SIGHUP cannot apply, as the warning names them (the README's *Signals*
/// paragraph lists the same): what binds a socket or a port, attaches, sizes or pins the
/// maps, or connects to the fleet, is set up once at start.
pub const RESTART_ONLY: &[&str] = &[
    "datapath.interfaces",
    "datapath.mode",
    "datapath.backend",
    "datapath.maps",
    "datapath.pin_dir",
    "control.socket",
    "state.file",
    "metrics.listen",
    "query",
    "policy_service",
    "fleet",
];

/// Which of [`RESTART_ONLY`] differ between the running config and the file's.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (old, new);
    let changed = [
        o.datapath.interfaces != n.datapath.interfaces,
        o.datapath.mode != n.datapath.mode,
        o.datapath.backend != n.datapath.backend,
        o.datapath.maps != n.datapath.maps,
        o.datapath.pin_dir != n.datapath.pin_dir,
        o.control.socket != n.control.socket,
        o.state.file != n.state.file,
        o.metrics.listen != n.metrics.listen,
        o.query != n.query,
        o.policy_service != n.policy_service,
        o.fleet != n.fleet,
    ];
    RESTART_ONLY
        .iter()
        .zip(changed)
        .filter_map(|(key, c)| c.then_some(*key))
        .collect()
}

/// Keeps what cannot change live as it runs, so `status` tells the truth.
fn keep_restart_only(cfg: &mut Config, old: &Config) {
    cfg.datapath.interfaces = old.datapath.interfaces.clone();
    cfg.datapath.mode = old.datapath.mode;
    cfg.datapath.backend = old.datapath.backend;
    cfg.datapath.maps = old.datapath.maps;
    cfg.datapath.pin_dir = old.datapath.pin_dir.clone();
    cfg.control.socket = old.control.socket.clone();
    cfg.state.file = old.state.file.clone();
    cfg.metrics = old.metrics.clone();
    cfg.fleet = old.fleet.clone();
    cfg.query = old.query.clone();
    cfg.policy_service = old.policy_service.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A changed metrics endpoint is named and kept as it runs, like every restart-only key.
    #[test]
    fn restart_only_keys_are_named_and_kept() {
        let old = Config::default();
        let mut new = Config::default();
        new.metrics.listen = Some("127.0.0.1:9725".parse().unwrap());
        new.control.socket = "/run/other.sock".into();
        new.policy.observe = true;
        assert_eq!(
            restart_only_changes(&old, &new),
            ["control.socket", "metrics.listen"]
        );
        keep_restart_only(&mut new, &old);
        assert_eq!(new.metrics, old.metrics);
        assert_eq!(new.control.socket, old.control.socket);
        assert!(new.policy.observe, "a live key changes");
        assert!(restart_only_changes(&old, &new).is_empty());
    }

    /// The README's *Signals* paragraph names every restart-only key.
    #[test]
    fn the_readme_names_every_restart_only_key() {
        let readme = include_str!("../../../README.md");
        let signals = readme
            .split("**Signals.**")
            .nth(1)
            .and_then(|s| s.split("\n\n").next())
            .expect("a Signals paragraph in the README");
        for key in RESTART_ONLY {
            assert!(
                signals.contains(&format!("`{key}`")),
                "the README's Signals paragraph does not name `{key}`: {signals}"
            );
        }
    }
}
