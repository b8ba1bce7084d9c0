//! `mxscreen run`: loads and attaches the datapath, resolves the peers it reports through the
//! reputation engine, writes their verdicts, serves the control socket, and on SIGINT/SIGTERM
//! detaches and exits 0. SIGHUP re-reads the config and applies what can change live.
//!
//! The [`Daemon`] is made of parts, each with its own fields and the methods that change them:
//!
//! - [`lists`]: the list owner — config, host and manual entries in the maps and the state
//!   file; [`protect`]: what can never be dropped;
//! - [`verdicts`]: the verdict writer — the engine's verdicts into the maps, with their log
//!   lines and evidence; [`rotation`]: IPv6 networks whose addresses rotate;
//! - [`fleet`]: the fleet bridge — what is shared with the fleet and taken from it;
//! - [`program`]: the program and the interfaces it is attached to ([`interfaces`]: which).
//!
//! The daemon composes them:
//!
//! - this file: start-up and the main loop, which owns the [`Daemon`] (no locks);
//! - [`reactor`]: what the daemon does on its own — new peers, verdicts, the fleet's events,
//!   the heartbeat, the sweep of expired entries;
//! - [`requests`]: the answers to the operator's control requests that change something;
//!   [`forget`]: `mxscreen forget`, verdicts removed here and on the fleet;
//! - [`listing`]: `list` (streamed) and lookups; [`status`]: `stats` and `status`;
//! - [`reload`]: what SIGHUP does;
//! - [`census`]: the counts of what the maps hold, and the facts published for metrics;
//! - [`systemd`]: readiness and reloads told to systemd (`Type=notify`);
//! - [`mta`]: the MTA's query socket and policy service, on a thread of their own;
//! - [`balancer`]: the watch for a load balancer, SNAT or PROXY protocol in front of the
//!   host, on a thread of its own.

mod balancer;
mod census;
mod fleet;
mod forget;
pub mod interfaces;
mod listing;
mod lists;
mod mta;
mod program;
pub mod protect;
mod reactor;
mod reload;
mod requests;
pub mod rotation;
mod status;
mod systemd;
mod verdicts;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use self::{
    balancer::BalancerWatch,
    fleet::FleetBridge,
    lists::ListOwner,
    mta::MtaDoor,
    program::{PeerEvents, Program},
    rotation::Rotation,
    verdicts::VerdictWriter,
};
use crate::{
    config::Config,
    control::{
        protocol::BackendStatus,
        server::{Call, ControlSocket},
    },
    datapath::{AttachMode, BackendChoice, Census, Datapath},
    feeds::Feeds,
    fleet::{Fleet, FleetEvent},
    metrics::{
        self, BalancerFamilies, DaemonFamilies, DatapathFamilies, EngineFamilies, Facts, Families,
        FeedFamilies, FleetFamilies, MtaFamilies, SharedFacts,
    },
    query::{EvidenceCache, MtaAsks, asks::MtaNews},
    reputation::{Engine, Verdict},
    state::State,
};

/// How often expired manual entries and verdicts are swept from the maps. The datapath
/// already ignores expired entries and the LRU maps are preallocated, so the sweep only keeps
/// `list`, `stats` and the state file tidy; with a million verdicts it is the daemon's largest
/// cost (batched reads; its CPU time is in BENCHMARKS.md, "Daemon"), hence once a minute.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The most verdicts the main loop takes from the engine before it turns to its other
/// inputs (and the datapath writes them: nftables in one transaction).
const VERDICT_BURST: usize = 256;

/// Command-line overrides of the config file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub config: Option<PathBuf>,
    pub interfaces: Vec<String>,
    pub mode: Option<AttachMode>,
    pub backend: Option<BackendChoice>,
    pub observe: bool,
}

/// Everything the running daemon holds, by part; owned by the main loop alone (no locks).
/// The parts keep their own fields and the methods that change them; the daemon hands each
/// the maps (and the config) it needs and publishes what they did.
pub struct Daemon {
    cfg: Config,
    config_path: Option<PathBuf>,
    started: Instant,
    /// What screens (the eBPF program or the nftables table) and where.
    program: Program,
    /// Which backend screens, and why.
    backend: BackendStatus,
    /// The datapath, whichever backend it is.
    maps: Box<dyn Datapath>,
    engine: Engine,
    feeds: Feeds,
    /// The config's and the operators' list entries, and what can never be dropped.
    lists: ListOwner,
    /// The engine's verdicts (and rotating networks') into the maps.
    verdicts: VerdictWriter,
    /// What is shared with the fleet and taken from it.
    fleet: FleetBridge,
    /// What the maps hold, counted (see [`census`]).
    census: Census,
    /// What a metrics scrape reads, published by the main loop; also how SIGHUP reloads
    /// went, which `status` reports.
    facts: SharedFacts,
    /// What the MTA asked about (shared with its thread), for the balancer watch.
    mta_asks: Arc<MtaAsks>,
    /// The watch for a balancer, SNAT or PROXY protocol in front of the host.
    balancer: BalancerWatch,
}

/// What the main loop waits on besides the control socket, timers and signals.
struct Inputs {
    /// New peers the datapath reports.
    events: PeerEvents,
    /// The engine's verdicts.
    verdicts: mpsc::Receiver<Verdict>,
    fleet: mpsc::Receiver<FleetEvent>,
    /// What the MTA's questions tell (explained refusals).
    mta_news: mpsc::Receiver<MtaNews>,
}

/// News from the MTA's questions waiting for the main loop: beyond it, a refusal is lost
/// (one more explained connection for that peer).
const MTA_NEWS: usize = 1024;

/// Reads the config (file or defaults) and applies the command-line overrides.
fn read_config(opts: &RunOptions) -> Result<(Config, Option<PathBuf>)> {
    let (mut cfg, origin) = Config::resolve(opts.config.as_deref())?;
    if !opts.interfaces.is_empty() {
        cfg.datapath.interfaces = opts.interfaces.clone();
    }
    if let Some(mode) = opts.mode {
        cfg.datapath.mode = mode;
    }
    if let Some(backend) = opts.backend {
        cfg.datapath.backend = backend;
    }
    cfg.policy.observe |= opts.observe;
    Ok((cfg, origin))
}

/// The interfaces to attach to: the config's, else the default route's.
fn screened_interfaces(cfg: &Config) -> Result<Vec<String>> {
    if cfg.datapath.interfaces.is_empty() {
        interfaces::default_route_interfaces()
    } else {
        Ok(cfg.datapath.interfaces.clone())
    }
}

pub async fn run(opts: RunOptions) -> Result<()> {
    let (cfg, origin) = read_config(&opts)?;
    match &origin {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => tracing::info!("no config file; running with built-in defaults"),
    }
    if let Some(w) = cfg.hold_warning() {
        tracing::warn!("{w}");
    }
    let ifaces = screened_interfaces(&cfg)?;
    let state = State::load(&cfg.state.file)?;
    // Bind the socket before touching the kernel: a second daemon stops here, harmlessly.
    let mut socket = ControlSocket::bind(&cfg.control.socket).await?;
    let (mut d, inputs) = Daemon::load(cfg, origin, state, &ifaces)?;
    let served = screen_until_stopped(&mut d, inputs, &mut socket, &opts).await;
    // Whatever ended it, a signal or an error: nothing is left screening (the nftables table
    // is deleted, its verdicts saved; an error exit used to leave it to expire by the
    // liveness element, while readers still held the handle).
    systemd::stopping();
    d.program.detach_all();
    drop(socket);
    // An error is printed once, by the caller, as the process's last word.
    tracing::info!(error = served.is_err(), "detached; exiting");
    served
}

/// Everything between opening the backend and a stop: the metrics endpoint, the lists and the
/// MTA's side door, then the main loop until SIGINT or SIGTERM (`Ok`) or an error.
async fn screen_until_stopped(
    d: &mut Daemon,
    mut inputs: Inputs,
    socket: &mut ControlSocket,
    opts: &RunOptions,
) -> Result<()> {
    // Bound before screening, like the control socket: a taken port stops the start here.
    let _metrics = match d.cfg.metrics.listen {
        Some(addr) => Some(metrics::start(addr, d.metric_families()?).await?),
        None => None,
    };
    let _mta_door = d.start_screening(&mut inputs.fleet).await?;
    let (calls_tx, calls) = mpsc::channel(64);
    let server = socket.serve(calls_tx);
    let served = d.serve(inputs, calls, opts).await;
    server.abort();
    served
}

impl Daemon {
    /// Opens the backend on the interfaces (screening no port until the config is written)
    /// and starts the engine and the fleet link: no list written yet.
    fn load(
        cfg: Config,
        config_path: Option<PathBuf>,
        state: State,
        ifaces: &[String],
    ) -> Result<(Self, Inputs)> {
        // Feeds are read off the main loop from now, while the kernel verifies the program,
        // and written once the daemon is ready (the config and manual entries before them,
        // from the first SYN).
        let mut feeds = Feeds::default();
        feeds.configure(cfg.lists.feed.clone());
        let opened = program::open(&cfg, ifaces)?;
        let maps = opened.datapath;
        let events = opened.events;
        let (engine, verdicts) =
            Engine::spawn(cfg.reputation()).context("starting the reputation engine")?;
        // Runs as long as the daemon's runtime.
        crate::reputation::canary::spawn(engine.clone());
        let evidence = Arc::new(EvidenceCache::for_verdict_map(cfg.datapath.maps.peers));
        let (fleet, fleet_events) = Fleet::start(&cfg.fleet, state.entries())?;
        let rotation = Rotation::new(cfg.policy.v6_rotation_prefix, cfg.policy.v6_rotation_after);
        let (mta_news_tx, mta_news) = mpsc::channel(MTA_NEWS);
        let explain_ns = crate::duration::nanos(cfg.policy.explain_every);
        let mta_asks = Arc::new(MtaAsks::new(mta_news_tx, explain_ns));
        // The decision log for `mxscreen report`, beside the state file.
        let decisions = crate::report::Recorder::start(
            crate::report::log::path_for(&cfg.state.file),
            crate::report::log::CAP,
        );
        let balancer = BalancerWatch::start(maps.reader()?, mta_asks.clone())
            .context("starting the balancer watch")?;
        let d = Daemon {
            cfg,
            config_path,
            started: Instant::now(),
            program: opened.program,
            backend: opened.status,
            maps,
            engine,
            feeds,
            lists: ListOwner::new(state),
            verdicts: VerdictWriter::new(evidence, rotation, decisions),
            fleet: FleetBridge::new(fleet),
            census: Census::default(),
            facts: Arc::new(Mutex::new(Facts::new(SystemTime::now()))),
            mta_asks,
            balancer,
        };
        let inputs = Inputs {
            events,
            verdicts,
            fleet: fleet_events,
            mta_news,
        };
        Ok((d, inputs))
    }

    /// Writes the config and the lists (enforced from then on), opens the MTA's side door,
    /// and gets ready: the rotating networks of the pinned verdicts, the fleet's
    /// shared state, the census.
    async fn start_screening(
        &mut self,
        fleet_events: &mut mpsc::Receiver<FleetEvent>,
    ) -> Result<Option<MtaDoor>> {
        self.apply()?;
        let evidence = self.verdicts.evidence().clone();
        let peers = self.fleet.new_peers(self.engine.clone());
        let mta_door = mta::start(
            &self.cfg,
            self.maps.as_ref(),
            evidence,
            peers,
            self.mta_asks.clone(),
        )?;
        self.verdicts
            .learn_rotation(self.maps.as_mut(), self.cfg.policy.observe)?;
        // The fleet's shared state is loaded before "ready" (bounded: a bus that cannot be
        // reached is given up on within seconds). The program is attached first, so the
        // host screens with its pinned verdicts and its own lists meanwhile.
        self.join_fleet(fleet_events).await;
        self.take_census()?;
        Ok(mta_door)
    }

    /// The main loop: until SIGINT or SIGTERM, each input to the part that handles it.
    async fn serve(
        &mut self,
        mut inputs: Inputs,
        mut calls: mpsc::Receiver<Call>,
        opts: &RunOptions,
    ) -> Result<()> {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        let mut beat = tokio::time::interval(reactor::BEAT_EVERY);
        // The fleet's shared verdicts, taken in before "ready", are in the kernel by now.
        self.maps.flush()?;
        tracing::info!(socket = %self.cfg.control.socket.display(), state = %self.cfg.state.file.display(), "ready");
        systemd::ready(&self.status_line());
        loop {
            tokio::select! {
                batch = inputs.events.next_batch() => {
                    let batch = batch?;
                    self.maps.peers_reported(&batch);
                    for peer in &batch {
                        self.on_new_peer(peer);
                    }
                }
                Some(v) = inputs.verdicts.recv() => {
                    self.on_verdict(&v);
                    // The verdicts ready by now go with it: nftables writes them in one
                    // transaction, whose commit costs what one verdict's would.
                    for _ in 1..VERDICT_BURST {
                        let Ok(v) = inputs.verdicts.try_recv() else { break };
                        self.on_verdict(&v);
                    }
                }
                Some(ev) = inputs.fleet.recv() => self.on_fleet(ev),
                Some(news) = inputs.mta_news.recv() => self.on_mta_news(news),
                read = self.feeds.next() => {
                    if let Err(e) = self.feeds.apply(self.maps.as_mut(), read).and_then(|()| self.recount_lists()) {
                        tracing::warn!(error = %format!("{e:#}"), "loading a feed into the datapath failed");
                    }
                }
                Some((req, reply)) = calls.recv() => {
                    let _ = reply.send(self.handle(req));
                }
                _ = beat.tick() => {
                    if self.program.follow_interfaces(self.cfg.datapath.mode) {
                        self.publish();
                    }
                    if let Err(e) = self.beat() {
                        tracing::warn!(error = %format!("{e:#}"), "heartbeat to the datapath failed");
                    }
                }
                _ = sweep.tick() => {
                    if let Err(e) = self.sweep() {
                        tracing::warn!(error = %format!("{e:#}"), "sweeping expired entries failed");
                    }
                }
                _ = sighup.recv() => {
                    systemd::reloading();
                    reload::reload(self, opts);
                    systemd::ready(&self.status_line());
                }
                _ = sigint.recv() => return Ok(()),
                _ = sigterm.recv() => return Ok(()),
            }
            // What the datapath held back (nftables: verdicts) goes to the kernel before the
            // next input.
            if let Err(e) = self.maps.flush() {
                tracing::warn!(error = %format!("{e:#}"), "writing verdicts to the datapath failed");
            }
        }
    }

    /// The sources a metrics scrape reads; another source is one more line here.
    fn metric_families(&self) -> Result<Vec<Box<dyn Families>>> {
        let mut families: Vec<Box<dyn Families>> = vec![
            Box::new(DatapathFamilies(self.maps.reader()?)),
            Box::new(DaemonFamilies(self.facts.clone())),
            Box::new(EngineFamilies(self.engine.clone())),
            Box::new(BalancerFamilies(self.balancer.shared())),
            Box::new(MtaFamilies(self.mta_asks.clone())),
            Box::new(FeedFamilies(self.feeds.published())),
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
            .program
            .interfaces()
            .iter()
            .map(|a| match &a.down {
                None => format!("{} ({})", a.name, a.mode),
                Some(why) => format!("{} (not screened: {why})", a.name),
            })
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
}
