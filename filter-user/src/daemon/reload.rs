//! SIGHUP: re-read the config and apply what can change live, and remember how it went so
//! `status` can say (a reload that failed leaves the old config running, which an operator
//! who only sent the signal would otherwise never learn).

use anyhow::{Result, anyhow};

use super::{Daemon, RunOptions, read_config};

/// SIGHUP: re-read the config; apply ports, limits, first contact, observe, zones, weights,
/// thresholds, resolver, lists and feeds (each read again: an unchanged file writes nothing)
/// live. What needs a restart (interfaces, mode, map sizes, pin directory, sockets, state
/// file, metrics endpoint, fleet) is named in a warning. A bad config changes nothing. The
/// outcome is recorded for `status` and the metrics.
pub fn reload(d: &mut Daemon, opts: &RunOptions) {
    let result = try_reload(d, opts).map_err(|e| {
        let error = format!("{e:#}");
        tracing::error!(%error, "reload failed; keeping the running config");
        error
    });
    d.count_reload(result);
}

fn try_reload(d: &mut Daemon, opts: &RunOptions) -> Result<()> {
    let opts = RunOptions {
        config: opts.config.clone().or_else(|| d.config_path.clone()),
        ..opts.clone()
    };
    let (new, _) = read_config(&opts)?;
    d.engine.reload(new.reputation()).map_err(|e| anyhow!(e))?;
    let old = std::mem::replace(&mut d.cfg, new);
    let mut restart = Vec::new();
    if old.datapath.interfaces != d.cfg.datapath.interfaces
        || old.datapath.mode != d.cfg.datapath.mode
    {
        restart.push("datapath.interfaces/mode");
    }
    if old.datapath.maps != d.cfg.datapath.maps || old.datapath.pin_dir != d.cfg.datapath.pin_dir {
        restart.push("datapath.maps/pin_dir");
    }
    if old.control.socket != d.cfg.control.socket || old.state.file != d.cfg.state.file {
        restart.push("control.socket/state.file");
    }
    if old.metrics != d.cfg.metrics {
        restart.push("metrics.listen");
    }
    if old.fleet != d.cfg.fleet {
        restart.push("fleet");
    }
    if old.query != d.cfg.query || old.policy_service != d.cfg.policy_service {
        restart.push("query/policy_service");
    }
    // Keep what cannot change live as it runs, so status tells the truth.
    d.cfg.datapath.interfaces = old.datapath.interfaces.clone();
    d.cfg.datapath.mode = old.datapath.mode;
    d.cfg.datapath.maps = old.datapath.maps;
    d.cfg.datapath.pin_dir = old.datapath.pin_dir.clone();
    d.cfg.control.socket = old.control.socket.clone();
    d.cfg.state.file = old.state.file.clone();
    d.cfg.metrics = old.metrics.clone();
    d.cfg.fleet = old.fleet.clone();
    d.cfg.query = old.query.clone();
    d.cfg.policy_service = old.policy_service.clone();
    d.verdicts.configure_rotation(
        d.cfg.policy.v6_rotation_prefix,
        d.cfg.policy.v6_rotation_after,
    );
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
    tracing::info!(zones = d.cfg.dnsbl.len(), ports = ?d.cfg.datapath.ports, observe = d.cfg.policy.observe, "config reloaded");
    Ok(())
}
