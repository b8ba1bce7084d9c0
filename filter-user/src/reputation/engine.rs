//! The engine: one evaluation ([`Engine::evaluate`]) and the budgeted front the daemon feeds
//! new peers into ([`Engine::spawn`], [`Engine::submit`]).
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use filter_common::{Action, Reason};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tracing::{debug, warn};

use super::{
    budget::{Class, Queue, Submit, TokenBucket, take_token},
    canary::{self, CanaryStatus},
    config::{ReputationConfig, ResolverConfig},
    dnsbl::Zone,
    gather::{Gathered, Until, gather},
    names::canonical,
    nameservers::{self, Probe},
    policy,
    resolver::{Dns, ResolverError},
    stats::{Counters, Stats, ZoneCounters},
    verdict::{Evidence, Finding, Verdict},
};

/// The engine could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Resolver(#[from] ResolverError),
    #[error("invalid config: {0}")]
    Config(#[from] crate::invalid_key::InvalidKey),
}

/// Everything one evaluation needs; replaced as a whole on reload.
struct Evaluator {
    cfg: ReputationConfig,
    dns: Dns,
    zones: Vec<Zone>,
    /// Each nameserver alone, for the canary (when there are several).
    probes: Vec<Probe>,
}

struct Shared {
    evaluator: RwLock<Arc<Evaluator>>,
    counters: Arc<Counters>,
    zone_counters: Mutex<BTreeMap<String, Arc<ZoneCounters>>>,
    warnings: RwLock<Vec<String>>,
    queue: Queue,
    bucket: Mutex<TokenBucket>,
    inflight: Arc<Semaphore>,
    /// The permits `inflight` was created or last resized with.
    inflight_limit: Mutex<usize>,
}

/// Aborts the dispatcher when the last [`Engine`] clone goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The reputation engine. Cheap to clone; all clones share one budget and one set of counters.
///
/// ```no_run
/// # async fn demo(cfg: mxscreen::reputation::ReputationConfig) -> anyhow::Result<()> {
/// use mxscreen::reputation::{Engine, Submit};
/// // `check`: one evaluation, no queue.
/// let engine = Engine::new(cfg.clone())?;
/// let verdict = engine.evaluate("192.0.2.1".parse()?).await;
/// // The daemon: a dispatcher task, verdicts on a channel.
/// let (engine, mut verdicts) = Engine::spawn(cfg)?;
/// if engine.submit("192.0.2.1".parse()?) == Submit::Rejected { /* counted; stays unknown */ }
/// while let Some(v) = verdicts.recv().await { /* write v into the maps */ }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    _dispatcher: Option<Arc<AbortOnDrop>>,
}

impl Engine {
    /// Builds an engine from a config (validated again here). Logs a warning, and keeps it
    /// for [`Engine::warnings`], when the resolvers in use are public ones. Starts no task:
    /// [`Engine::evaluate`] works, [`Engine::submit`] queues but nothing drains the queue.
    pub fn new(cfg: ReputationConfig) -> Result<Self, EngineError> {
        cfg.validate()?;
        let counters = Arc::new(Counters::default());
        let zone_counters = Mutex::new(BTreeMap::new());
        let (evaluator, warnings) = build(cfg, &counters, &zone_counters)?;
        let r = &evaluator.cfg.resolver;
        let shared = Shared {
            inflight: Arc::new(Semaphore::new(r.max_inflight)),
            inflight_limit: Mutex::new(r.max_inflight),
            queue: Queue::new(r.queue_len, first_capacity(r)),
            bucket: Mutex::new(TokenBucket::new(r.max_lookups_per_sec)),
            zone_counters,
            warnings: RwLock::new(warnings),
            evaluator: RwLock::new(Arc::new(evaluator)),
            counters,
        };
        Ok(Engine {
            shared: Arc::new(shared),
            _dispatcher: None,
        })
    }

    /// [`Engine::new`] plus the dispatcher task that drains the queue within the budget;
    /// verdicts of submitted peers arrive on the returned channel. Must be called inside a
    /// tokio runtime. The task ends when the last clone of the engine is dropped.
    pub fn spawn(cfg: ReputationConfig) -> Result<(Self, mpsc::Receiver<Verdict>), EngineError> {
        let capacity = cfg.resolver.queue_len.max(16);
        let mut engine = Self::new(cfg)?;
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(dispatch(engine.shared.clone(), tx));
        engine._dispatcher = Some(Arc::new(AbortOnDrop(task)));
        Ok((engine, rx))
    }

    /// Replaces the config (SIGHUP): a new resolver and lists for the next evaluations, the
    /// budget resized in place. Running evaluations finish with the old config; queued
    /// peers, counters and the verdict channel are kept. On error nothing changes.
    pub fn reload(&self, cfg: ReputationConfig) -> Result<(), EngineError> {
        cfg.validate()?;
        let s = &self.shared;
        let (evaluator, warnings) = build(cfg, &s.counters, &s.zone_counters)?;
        let r = &evaluator.cfg.resolver;
        s.queue.set_capacity(r.queue_len, first_capacity(r));
        s.bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_rate(r.max_lookups_per_sec);
        self.resize_inflight(r.max_inflight);
        *s.warnings.write().unwrap_or_else(|e| e.into_inner()) = warnings;
        *s.evaluator.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(evaluator);
        Ok(())
    }

    fn resize_inflight(&self, new: usize) {
        let mut limit = self
            .shared
            .inflight_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if new > *limit {
            self.shared.inflight.add_permits(new - *limit);
        } else if new < *limit {
            // Forget what is free now; the rest is taken back as running evaluations end.
            let excess = *limit - new;
            let forgotten = self.shared.inflight.forget_permits(excess);
            if forgotten < excess {
                let sem = self.shared.inflight.clone();
                let rest = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(p) = sem.acquire_many(rest).await {
                        p.forget();
                    }
                });
            }
        }
        *limit = new;
    }

    /// The config in use.
    pub fn config(&self) -> ReputationConfig {
        self.evaluator().cfg.clone()
    }

    /// Warnings about the setup (public resolvers), also logged when found.
    pub fn warnings(&self) -> Vec<String> {
        self.shared
            .warnings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn evaluator(&self) -> Arc<Evaluator> {
        self.shared
            .evaluator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Evaluates one address now, outside the budget (for `check`, `forget --now` and
    /// tests), waiting for every answer: an explanation shows each lookup, and nothing is
    /// held meanwhile.
    pub async fn evaluate(&self, ip: IpAddr) -> Verdict {
        evaluate(
            &self.evaluator(),
            &self.shared.counters,
            ip,
            Until::EveryAnswer,
        )
        .await
    }

    /// Hands a proven-real peer (the MTA asked about it, an operator or the fleet wants it
    /// evaluated) to the budgeted queue; returns at once. See [`Submit`].
    pub fn submit(&self, ip: IpAddr) -> Submit {
        self.submit_seen(ip, Class::Real, tokio::time::Instant::now())
    }

    /// Hands a peer the datapath reported to the budgeted queue in its [`Class`]; `seen` is
    /// when its SYN was seen. Returns at once. See [`Submit`].
    pub fn submit_seen(&self, ip: IpAddr, class: Class, seen: tokio::time::Instant) -> Submit {
        let c = &self.shared.counters;
        c.submitted.inc();
        let result = self.shared.queue.submit(canonical(ip), class, seen);
        match result {
            Submit::Queued => c.queued.inc(),
            Submit::Coalesced => c.coalesced.inc(),
            Submit::Rejected => c.rejected_queue_full.inc(),
        }
        result
    }

    /// One round of the resolver canary with the config in use ([`canary`]; the daemon
    /// runs [`canary::spawn`]).
    pub async fn canary_round(&self) {
        let ev = self.evaluator();
        canary::round(
            &ev.dns,
            &ev.zones,
            &ev.probes,
            &ev.cfg,
            &self.shared.counters,
        )
        .await;
    }

    /// Forgets the canary's results (it was turned off): every source counts again.
    pub fn canary_off(&self) {
        let ev = self.evaluator();
        canary::clear(&ev.zones, &ev.probes, &self.shared.counters);
    }

    /// The canary's last results for the zones in use and rDNS, by display name.
    pub fn canary(&self) -> BTreeMap<String, CanaryStatus> {
        let ev = self.evaluator();
        canary::statuses(&ev.zones, &ev.probes, &self.shared.counters)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let (queued, pending) = self.shared.queue.depth();
        let zones = self
            .shared
            .zone_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Stats {
            first_expired: self.shared.queue.expired(),
            ..self
                .shared
                .counters
                .snapshot(&zones, queued as u64, (pending - queued) as u64)
        }
    }
}

/// First-SYN peers queued at most: one second of the budget, the age past which
/// evaluating them is no longer worth it (see [`super::budget::FIRST_MAX_AGE`]).
fn first_capacity(r: &ResolverConfig) -> usize {
    r.max_lookups_per_sec as usize
}

/// Builds the resolver and zones for `cfg`, with the warnings about its setup.
fn build(
    cfg: ReputationConfig,
    counters: &Arc<Counters>,
    zone_counters: &Mutex<BTreeMap<String, Arc<ZoneCounters>>>,
) -> Result<(Evaluator, Vec<String>), EngineError> {
    let dns = Dns::new(&cfg.resolver, counters.clone())?;
    let mut warnings = Vec::new();
    let public = dns.public_servers();
    if !public.is_empty() {
        let list = public
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let msg = format!(
            "resolver {list} is a public resolver: DNSBLs such as Spamhaus and DNSWL refuse \
             queries from public resolvers, so their answers will be error codes or nothing; \
             run a recursive resolver of your own (e.g. unbound on this host) and set \
             resolver.nameservers"
        );
        warn!("{msg}");
        warnings.push(msg);
    }
    let zones: Vec<Zone> = {
        let mut zc = zone_counters.lock().unwrap_or_else(|e| e.into_inner());
        let zones: Vec<Zone> = cfg
            .dnsbl
            .iter()
            .map(|z| {
                let counters = zc.entry(z.display_name()).or_default().clone();
                Zone::new(z.clone(), counters)
            })
            .collect();
        // A zone the config no longer has leaves `status`, `stats` and the metrics; its
        // counters start again from zero if it comes back.
        zc.retain(|name, _| zones.iter().any(|z| z.display == *name));
        zones
    };
    let probes = nameservers::probes(&cfg.resolver);
    Ok((
        Evaluator {
            cfg,
            dns,
            zones,
            probes,
        },
        warnings,
    ))
}

/// Drains the queue: one token and one in-flight permit per evaluation.
async fn dispatch(shared: Arc<Shared>, tx: mpsc::Sender<Verdict>) {
    loop {
        shared.queue.wait_nonempty().await;
        take_token(&shared.bucket).await;
        let Ok(permit) = shared.inflight.clone().acquire_owned().await else {
            return;
        };
        let Some(ip) = shared.queue.pop(tokio::time::Instant::now()) else {
            // Only first SYNs too old to be worth it were queued; the token was not spent.
            shared
                .bucket
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .give_back();
            continue;
        };
        let evaluator = shared
            .evaluator
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let shared = shared.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let verdict = evaluate(&evaluator, &shared.counters, ip, Until::DropCertain).await;
            shared.queue.done(ip);
            // Waiting here (channel full) holds the permit: a slow consumer slows intake
            // instead of growing a backlog.
            let _ = tx.send(verdict).await;
            drop(permit);
        });
    }
}

async fn evaluate(ev: &Evaluator, counters: &Counters, ip: IpAddr, until: Until) -> Verdict {
    let started = Instant::now();
    let ip = canonical(ip);
    let cfg = &ev.cfg;
    let policy = &cfg.policy;
    counters.evaluations.inc();
    let static_hit = if let Some((net, key)) = cfg.lists.allowing(&ip) {
        counters.static_allow.inc();
        Some((
            Action::Pass,
            Evidence::new("lists", Finding::StaticAllow, 0).detail(format!("{key} {net}")),
        ))
    } else if let Some(net) = cfg.lists.deny.iter().find(|n| n.contains(&ip)) {
        counters.static_deny.inc();
        Some((
            Action::Drop,
            Evidence::new("lists", Finding::StaticDeny, 0).detail(format!("lists.deny {net}")),
        ))
    } else {
        None
    };
    let verdict = if let Some((action, evidence)) = static_hit {
        Verdict {
            ip,
            action,
            reason: Reason::Config,
            score: 0,
            ttl: policy.ttl_max,
            evidence: vec![evidence],
            warnings: Vec::new(),
            elapsed: started.elapsed(),
        }
    } else {
        let Gathered { evidence, warnings } =
            gather(&ev.dns, &ev.zones, cfg, counters, ip, until).await;
        let d = policy::decide(&evidence, policy);
        Verdict {
            ip,
            action: d.action,
            reason: d.reason,
            score: d.score,
            ttl: d.ttl,
            evidence,
            warnings,
            elapsed: started.elapsed(),
        }
    };
    match verdict.action {
        Action::Pass => counters.verdict_pass.inc(),
        Action::Limit => counters.verdict_limit.inc(),
        Action::Drop => counters.verdict_drop.inc(),
    }
    if verdict.reason == Reason::Tempfail {
        counters.verdict_tempfail.inc();
    }
    debug!(
        %ip,
        action = verdict.action.name(),
        score = verdict.score,
        ttl_secs = verdict.ttl.as_secs(),
        "verdict"
    );
    verdict
}
