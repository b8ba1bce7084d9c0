//! SIGHUP: re-read the config and apply what can change live.

use super::{Daemon, RunOptions, read_config};

/// SIGHUP: re-read the config; apply ports, limits, first contact, observe, zones, weights,
/// thresholds, resolver, lists and feeds (each read again: an unchanged file writes nothing)
/// live. What needs a restart (interfaces, mode, map sizes,
/// pin directory, socket, state file) is named in a warning. A bad config changes nothing.
pub fn reload(d: &mut Daemon, opts: &RunOptions) {
    let opts = RunOptions {
        config: opts.config.clone().or_else(|| d.config_path.clone()),
        ..opts.clone()
    };
    let (new, _) = match read_config(&opts) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed; keeping the running config");
            return;
        }
    };
    if let Err(e) = d.engine.reload(new.reputation()) {
        tracing::error!(error = %e, "reload failed; keeping the running config");
        return;
    }
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
    // Keep what cannot change live as it runs, so status tells the truth.
    d.cfg.datapath.interfaces = old.datapath.interfaces.clone();
    d.cfg.datapath.mode = old.datapath.mode;
    d.cfg.datapath.maps = old.datapath.maps;
    d.cfg.datapath.pin_dir = old.datapath.pin_dir.clone();
    d.cfg.control.socket = old.control.socket.clone();
    d.cfg.state.file = old.state.file.clone();
    d.rotation.configure(
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
    match d.apply() {
        Ok(()) => {
            tracing::info!(zones = d.cfg.dnsbl.len(), ports = ?d.cfg.datapath.ports, observe = d.cfg.policy.observe, "config reloaded")
        }
        Err(e) => tracing::error!(error = %format!("{e:#}"), "applying the reloaded config failed"),
    }
    if !restart.is_empty() {
        tracing::warn!(keys = %restart.join(", "), "changed in the config but only applied at restart");
    }
}
