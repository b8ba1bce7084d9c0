//! `mxscreen run`: loads and attaches the datapath, resolves the peers it reports through the
//! reputation engine, writes their verdicts, serves the control socket, and on SIGINT/SIGTERM
//! detaches and exits 0. SIGHUP re-reads the config and applies what can change live.
//!
//! - this file: start-up and the main loop, which owns the [`Daemon`] (no locks);
//! - [`reactor`]: what the daemon does on its own — list reconciliation, new peers,
//!   verdicts into the maps, feeds loaded, the sweep of expired entries;
//! - [`rotation`]: IPv6 networks whose addresses rotate get a verdict of their own;
//! - [`requests`]: the answers to the operator's control requests that change something;
//!   [`forget`]: `mxscreen forget`, verdicts removed here and on the fleet;
//! - [`listing`]: `list` (streamed) and lookups; [`status`]: `stats` and `status`;
//! - [`reload`]: what SIGHUP does;
//! - [`shared`]: what the fleet sends (shared entries and verdicts, peers to evaluate);
//! - [`protect`]: addresses that can never be dropped; [`interfaces`]: where to attach;
//! - [`census`]: the counts of what the maps hold, and the facts published for metrics;
//! - [`systemd`]: readiness and reloads told to systemd (`Type=notify`);
//! - [`mta`]: the MTA's query socket and policy service, on a thread of their own;
//! - [`balancer`]: the watch for a load balancer, SNAT or PROXY protocol in front of the
//!   host, on a thread of its own.

mod balancer;
mod census;
mod forget;
pub mod interfaces;
mod listing;
mod mta;
pub mod protect;
mod reactor;
mod reload;
mod requests;
pub mod rotation;
mod shared;
mod status;
mod systemd;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::{balancer::BalancerWatch, protect::Protected, rotation::Rotation};
use crate::{
    config::Config,
    control::server::ControlSocket,
    datapath::{self, AttachMode, Attached, Census, DatapathMaps, Events, LoadOptions},
    feeds::Feeds,
    fleet::Fleet,
    metrics::{
        self, BalancerFamilies, DaemonFamilies, DatapathFamilies, EngineFamilies, Facts, Families,
        FleetFamilies, SharedFacts,
    },
    query::{EvidenceCache, MtaAsks},
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
    /// The last evaluations' evidence, for the MTA's answers (shared with their thread).
    pub evidence: Arc<EvidenceCache>,
    /// What the maps hold, counted (see [`census`]).
    pub census: Census,
    /// What a metrics scrape reads, published by the main loop; also how SIGHUP reloads
    /// went, which `status` reports.
    pub facts: SharedFacts,
    /// The fleet handle (inert when `[fleet]` is off).
    pub fleet: Fleet,
    /// Which fleet host made each verdict taken from the fleet (shared with a running
    /// `list`, copied on write).
    pub shared_origins: Arc<shared::SharedOrigins>,
    /// Shared entries refused by this host's checks.
    pub fleet_refused: u64,
    /// What the MTA asked about (shared with its thread), for the balancer watch.
    pub mta_asks: Arc<MtaAsks>,
    /// The watch for a balancer, SNAT or PROXY protocol in front of the host.
    pub balancer: BalancerWatch,
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
    let evidence = Arc::new(EvidenceCache::for_verdict_map(cfg.datapath.maps.verdicts));
    let (fleet, mut fleet_events) = Fleet::start(&cfg.fleet, state.entries())?;
    let rotation = Rotation::new(cfg.policy.v6_rotation_prefix, cfg.policy.v6_rotation_after);
    let mta_asks = Arc::new(MtaAsks::default());
    let balancer = BalancerWatch::start(maps.reader()?, mta_asks.clone())
        .context("starting the balancer watch")?;
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
        evidence,
        census: Census::default(),
        facts: Arc::new(Mutex::new(Facts::new(SystemTime::now()))),
        fleet,
        shared_origins: Default::default(),
        fleet_refused: 0,
        mta_asks,
        balancer,
    };
    // Bound before attaching, like the control socket: a taken port stops the start here.
    let _metrics = match d.cfg.metrics.listen {
        Some(addr) => Some(metrics::start(addr, d.metric_families()?).await?),
        None => None,
    };
    d.apply()?;
    let mta_door = mta::start(
        &d.cfg,
        &d.maps,
        d.evidence.clone(),
        d.engine.clone(),
        d.mta_asks.clone(),
    )?;
    d.attach_all(&ifaces)?;
    // Feeds are read off the main loop and written as they arrive (within two seconds for a
    // million lines); the config and manual entries are enforced from the first SYN.
    d.feeds.configure(d.cfg.lists.feed.clone());
    d.learn_rotation()?;
    // The fleet's shared state is loaded before "ready" (bounded: a bus that cannot be
    // reached is given up on within seconds). The program is attached first, so the
    // host screens with its pinned verdicts and its own lists meanwhile.
    d.join_fleet(&mut fleet_events).await;
    d.take_census()?;

    let (calls_tx, mut calls) = mpsc::channel(64);
    let server = socket.serve(calls_tx);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    let mut beat = tokio::time::interval(reactor::BEAT_EVERY);
    tracing::info!(socket = %d.cfg.control.socket.display(), state = %d.cfg.state.file.display(), "ready");
    systemd::ready(&d.status_line());

    loop {
        tokio::select! {
            batch = events.next_batch() => {
                for peer in batch? {
                    d.on_new_peer(peer.ip);
                }
            }
            Some(v) = verdicts.recv() => d.on_verdict(&v),
            Some(ev) = fleet_events.recv() => d.on_fleet(ev),
            read = d.feeds.next() => {
                if let Err(e) = d.feeds.apply(&mut d.maps, read).and_then(|()| d.recount_lists()) {
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
            _ = sighup.recv() => {
                systemd::reloading();
                reload::reload(&mut d, &opts);
                systemd::ready(&d.status_line());
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    systemd::stopping();
    server.abort();
    drop(mta_door);
    d.detach_all();
    drop(socket);
    tracing::info!("detached; exiting");
    Ok(())
}

impl Daemon {
    /// The sources a metrics scrape reads; another source is one more line here.
    fn metric_families(&self) -> Result<Vec<Box<dyn Families>>> {
        let mut families: Vec<Box<dyn Families>> = vec![
            Box::new(DatapathFamilies(self.maps.reader()?)),
            Box::new(DaemonFamilies(self.facts.clone())),
            Box::new(EngineFamilies(self.engine.clone())),
            Box::new(BalancerFamilies(self.balancer.shared())),
        ];
        if let Some(status) = self.fleet.status_watch() {
            families.push(Box::new(FleetFamilies {
                status,
                facts: self.facts.clone(),
            }));
        }
        Ok(families)
    }

    /// One line for `systemctl status`.
    fn status_line(&self) -> String {
        let ifaces: Vec<String> = self
            .attached
            .iter()
            .map(|a| format!("{} ({})", a.iface, a.mode))
            .collect();
        format!(
            "screening ports {:?} on {}{}",
            self.cfg.datapath.ports,
            ifaces.join(", "),
            if self.cfg.policy.observe {
                "; observe mode: nothing is dropped"
            } else {
                ""
            }
        )
    }

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
