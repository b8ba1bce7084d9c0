//! `mxscreen run`: loads and attaches the datapath, resolves the peers it reports through the
//! reputation engine, writes their verdicts, serves the control socket, and on SIGINT/SIGTERM
//! detaches and exits 0. SIGHUP re-reads the config and applies what can change live.

mod core;
pub mod interfaces;
pub mod protect;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use filter_common::{FAMILY_V4, NewPeerEvent};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::core::Daemon;
pub use self::core::reasons;
use crate::{
    config::Config,
    control::server::ControlSocket,
    datapath::{self, AttachMode, DatapathMaps, LoadOptions},
    reputation::Engine,
    state::State,
};

/// How often expired manual entries and verdicts are swept from the maps. The datapath
/// already ignores expired entries and the LRU maps are preallocated, so the sweep only keeps
/// `list`, `stats` and the state file tidy; with a million verdicts it costs ~0.4 s of CPU
/// (batched reads, see BENCHMARKS.md), hence once a minute.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Command-line overrides of the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub mode: Option<AttachMode>,
    pub observe: bool,
}

/// Reads the config (file or defaults) and applies the command-line overrides.
fn read_config(opts: &RunOptions) -> Result<(Config, Option<PathBuf>)> {
    let (mut cfg, origin) = Config::resolve(opts.config.as_deref())?;
    if !opts.interfaces.is_empty() {
        cfg.datapath.interfaces = opts.interfaces.clone();
    }
    if let Some(mode) = opts.mode {
        cfg.datapath.mode = mode;
    }
    cfg.policy.observe |= opts.observe;
    Ok((cfg, origin))
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let (cfg, origin) = read_config(&opts)?;
    match &origin {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => tracing::info!("no config file; running with built-in defaults"),
    }
    let ifaces = if cfg.datapath.interfaces.is_empty() {
        interfaces::default_route_interfaces()?
    } else {
        cfg.datapath.interfaces.clone()
    };
    let state = State::load(&cfg.state.file)?;
    // Bind the socket before touching the kernel: a second daemon stops here, harmlessly.
    let mut socket = ControlSocket::bind(&cfg.control.socket).await?;

    let mut ebpf = datapath::load(&LoadOptions {
        sizes: cfg.datapath.maps,
        pin_dir: Some(cfg.datapath.pin_dir.clone()),
    })?;
    let maps = DatapathMaps::take(&mut ebpf)?;
    let events = datapath::maps::take_events(&mut ebpf)?;
    let (engine, mut verdicts) =
        Engine::spawn(cfg.reputation()).context("starting the reputation engine")?;
    let mut d = Daemon {
        cfg,
        config_path: origin,
        ebpf,
        maps,
        attached: Vec::new(),
        state,
        engine,
        protected: Vec::new(),
        started: Instant::now(),
    };
    d.apply()?;
    for iface in &ifaces {
        match datapath::attach(&mut d.ebpf, iface, d.cfg.datapath.mode) {
            Ok(a) => {
                tracing::info!(iface = %a.iface, mode = %a.mode, ports = ?d.cfg.datapath.ports, observe = d.cfg.policy.observe, first_contact = %d.cfg.datapath.first_contact.name(), "attached");
                d.attached.push(a);
            }
            Err(e) => {
                d.detach_all();
                return Err(e);
            }
        }
    }

    // SAFETY: the ring owns its map fd, which stays open and unchanged while the AsyncFd
    // owns the ring.
    let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("polling the event ring: {e}"))?;
    let (calls_tx, mut calls) = mpsc::channel(64);
    let server = socket.serve(calls_tx);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    tracing::info!(socket = %d.cfg.control.socket.display(), state = %d.cfg.state.file.display(), "ready");

    loop {
        tokio::select! {
            guard = events.readable_mut() => {
                let mut guard = guard?;
                let mut peers = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(ev) = parse_event(&item) {
                        peers.push(event_ip(&ev));
                    }
                }
                guard.clear_ready();
                for ip in peers {
                    d.on_new_peer(ip);
                }
            }
            Some(v) = verdicts.recv() => d.on_verdict(&v),
            Some((req, reply)) = calls.recv() => {
                let _ = reply.send(d.handle(req));
            }
            _ = sweep.tick() => {
                if let Err(e) = d.sweep() {
                    tracing::warn!(error = %format!("{e:#}"), "sweeping expired entries failed");
                }
            }
            _ = sighup.recv() => reload(&mut d, &opts),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    server.abort();
    d.detach_all();
    drop(socket);
    tracing::info!("detached; exiting");
    Ok(())
}

/// SIGHUP: re-read the config; apply ports, limits, first contact, observe, zones, weights,
/// thresholds, resolver and lists live. What needs a restart (interfaces, mode, map sizes,
/// pin directory, socket, state file) is named in a warning. A bad config changes nothing.
fn reload(d: &mut Daemon, opts: &RunOptions) {
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

/// A ring record as an event; `None` (and a warning) for a record of the wrong size, which
/// would mean a datapath from another build.
pub fn parse_event(bytes: &[u8]) -> Option<NewPeerEvent> {
    if bytes.len() != size_of::<NewPeerEvent>() {
        tracing::warn!(
            len = bytes.len(),
            "ignoring a new-peer event of unexpected size"
        );
        return None;
    }
    // SAFETY: length checked; NewPeerEvent is plain old data, valid for any bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NewPeerEvent>()) })
}

/// The source address of an event.
pub fn event_ip(ev: &NewPeerEvent) -> std::net::IpAddr {
    if ev.family == FAMILY_V4 {
        std::net::IpAddr::from([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]])
    } else {
        std::net::IpAddr::from(ev.addr)
    }
}
