//! `mxscreen run`: loads and attaches the datapath, resolves the peers it reports through the
//! reputation engine, writes their verdicts, serves the control socket, and on SIGINT/SIGTERM
//! detaches and exits 0. SIGHUP re-reads the config and applies what can change live.
//!
//! - this file: start-up and the main loop, which owns the [`Daemon`] (no locks);
//! - [`reactor`]: what the daemon does on its own — list reconciliation, new peers,
//!   verdicts into the maps, feeds loaded, the sweep of expired entries;
//! - [`rotation`]: IPv6 networks whose addresses rotate get a verdict of their own;
//! - [`requests`]: the answers to the operator's control requests, and [`listing`] what
//!   `list` and `check` show;
//! - [`reload`]: what SIGHUP does;
//! - [`protect`]: addresses that can never be dropped; [`interfaces`]: where to attach.

pub mod interfaces;
mod listing;
pub mod protect;
mod reactor;
mod reload;
mod requests;
pub mod rotation;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::{protect::Protected, rotation::Rotation};
use crate::{
    config::Config,
    control::server::ControlSocket,
    datapath::{self, AttachMode, Attached, DatapathMaps, Events, LoadOptions},
    feeds::Feeds,
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

/// Everything the running daemon holds. Owned by the main loop alone.
pub struct Daemon {
    pub cfg: Config,
    pub config_path: Option<PathBuf>,
    pub ebpf: Ebpf,
    pub maps: DatapathMaps,
    pub attached: Vec<Attached>,
    pub state: State,
    pub engine: Engine,
    pub protected: Vec<Protected>,
    pub feeds: Feeds,
    pub rotation: Rotation,
    pub started: Instant,
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
    let mut events = Events::take(&mut ebpf)?
        .into_async()
        .context("polling the event ring")?;
    let (engine, mut verdicts) =
        Engine::spawn(cfg.reputation()).context("starting the reputation engine")?;
    let rotation = Rotation::new(cfg.policy.v6_rotation_prefix, cfg.policy.v6_rotation_after);
    let mut d = Daemon {
        cfg,
        config_path: origin,
        ebpf,
        maps,
        attached: Vec::new(),
        state,
        engine,
        protected: Vec::new(),
        feeds: Feeds::default(),
        rotation,
        started: Instant::now(),
    };
    d.apply()?;
    d.attach_all(&ifaces)?;
    // Feeds are read off the main loop and written as they arrive (within two seconds for a
    // million lines); the config and manual entries are enforced from the first SYN.
    d.feeds.configure(d.cfg.lists.feed.clone());
    d.learn_rotation()?;

    let (calls_tx, mut calls) = mpsc::channel(64);
    let server = socket.serve(calls_tx);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut beat = tokio::time::interval(reactor::BEAT_EVERY);
    tracing::info!(socket = %d.cfg.control.socket.display(), state = %d.cfg.state.file.display(), "ready");

    loop {
        tokio::select! {
            batch = events.next_batch() => {
                for peer in batch? {
                    d.on_new_peer(peer.ip);
                }
            }
            Some(v) = verdicts.recv() => d.on_verdict(&v),
            read = d.feeds.next() => {
                if let Err(e) = d.feeds.apply(&mut d.maps, read) {
                    tracing::warn!(error = %format!("{e:#}"), "loading a feed into the datapath failed");
                }
            }
            Some((req, reply)) = calls.recv() => {
                let _ = reply.send(d.handle(req));
            }
            _ = beat.tick() => {
                if let Err(e) = d.beat() {
                    tracing::warn!(error = %format!("{e:#}"), "heartbeat to the datapath failed");
                }
            }
            _ = sweep.tick() => {
                if let Err(e) = d.sweep() {
                    tracing::warn!(error = %format!("{e:#}"), "sweeping expired entries failed");
                }
            }
            _ = sighup.recv() => reload::reload(&mut d, &opts),
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

impl Daemon {
    /// Attaches to every interface, or to none: on a failure the ones done are detached.
    fn attach_all(&mut self, ifaces: &[String]) -> Result<()> {
        for iface in ifaces {
            match datapath::attach(&mut self.ebpf, iface, self.cfg.datapath.mode) {
                Ok(a) => {
                    tracing::info!(iface = %a.iface, mode = %a.mode, ports = ?self.cfg.datapath.ports, observe = self.cfg.policy.observe, first_contact = %self.cfg.datapath.first_contact.name(), "attached");
                    self.attached.push(a);
                }
                Err(e) => {
                    self.detach_all();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Detaches every interface (in reverse order of attachment).
    pub fn detach_all(&mut self) {
        while let Some(a) = self.attached.pop() {
            let iface = a.iface.clone();
            if let Err(e) = a.detach(&mut self.ebpf) {
                tracing::warn!(%iface, error = %e, "detach failed (the link goes away with the process anyway)");
            }
        }
    }
}
