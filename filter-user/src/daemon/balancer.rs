//! The balancer watch: notices when something in front of the host hides the clients'
//! addresses, which turns mxscreen's judgement of senders into a judgement of one box.
//!
//! Behind a load balancer or SNAT the kernel sees the balancer's address on every SYN: on a
//! private address it is allow-listed and nothing is screened, on a public one all inbound
//! mail shares its verdict. Behind the PROXY protocol the MTA learns the real client and asks
//! mxscreen about it, while the datapath only ever saw the balancer. Once per window
//! ([`WINDOW`], 10 minutes) a thread of its own compares two looks at the maps, through a
//! read-only handle, with what the maps already count:
//!
//! - *one source*: the verdict hit counters of the per-source entries (with the hits the
//!   decision cache holds) against the datapath's counters of subject SYNs — one source over
//!   half of at least [`MIN_SYNS`];
//! - *private sources*: the hit counters of the built-in private allow entries (RFC 1918,
//!   CGNAT, ULA, link-local) against the same — over half of at least [`MIN_SYNS`];
//! - *unseen peers*: the MTA's questions about addresses on no list ([`MtaAsks`]) — over half
//!   of at least [`MIN_ASKS`] about addresses whose SYN the datapath never saw.
//!
//! A window with less traffic decides nothing: the state stays, so a quiet night does not
//! clear a warning that comes back in the morning. Each change of state is logged once
//! (a warning when it starts, an info line when it ends); `status`, `status --json` and the
//! metrics show the state and the shares measured.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::IpAddr,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Result;
use filter_common::Counter;
use ipnet::IpNet;

use crate::{
    control::protocol::{BalancerCheck, BalancerStatus},
    datapath::{DatapathRead, ListKind},
    duration,
    query::{MtaAsks, asks::AskCounts},
    reputation::config::builtin_allow,
    state::unix_now,
};

/// The window the checks are made over.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Environment override of [`WINDOW`] (a duration, e.g. `20s`), for the test suites.
pub const WINDOW_ENV: &str = "MXSCREEN_BALANCER_WINDOW";
/// Subject SYNs a window needs before its shares mean anything.
pub const MIN_SYNS: u64 = 300;
/// Questions from the MTA a window needs before their share means anything.
pub const MIN_ASKS: u64 = 20;
/// Sources whose hits are kept from one look to the next (the most hit ones): enough for
/// any host, bounded for a million verdicts.
const TRACKED: usize = 65_536;

/// The outcomes that are subject SYNs: every counter of a SYN to a screened port.
const SUBJECT: &[Counter] = &[
    Counter::PassedAllow,
    Counter::PassedVerdict,
    Counter::PassedLimit,
    Counter::DroppedDeny,
    Counter::DroppedFeed,
    Counter::DroppedVerdict,
    Counter::Limited,
    Counter::Held,
    Counter::Unknown,
    Counter::PassedStale,
    Counter::Explained,
];

/// The running watch; stops its thread when dropped.
pub struct BalancerWatch {
    status: Arc<Mutex<BalancerStatus>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One look at the maps and the MTA's questions.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    subject: u64,
    private_hits: u64,
    /// Verdict hits of the most hit sources.
    sources: HashMap<IpAddr, u64>,
    /// At most this many hits for a source not in `sources` (0 unless the cap cut some off).
    untracked_max: u64,
    asks: AskCounts,
}

/// What happened between two looks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Window {
    syns: u64,
    /// The source with the most SYNs (a lower bound of them) in the window.
    top: Option<(IpAddr, u64)>,
    private: u64,
    asks: AskCounts,
}

/// The built-in private ranges of the allow list (loopback aside: its SYNs never reach an
/// interface mxscreen is attached to).
pub fn private_ranges() -> Vec<IpNet> {
    builtin_allow()
        .iter()
        .filter(|n| !n.addr().is_loopback())
        .copied()
        .collect()
}

/// [`WINDOW`], or the test suites' override.
fn window() -> Duration {
    std::env::var(WINDOW_ENV)
        .ok()
        .and_then(|s| duration::parse(&s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(WINDOW)
}

impl BalancerWatch {
    /// Starts the watch on a thread of its own, reading the maps through `reader`.
    pub fn start(reader: Box<dyn DatapathRead>, asks: Arc<MtaAsks>) -> Result<Self> {
        let window = window();
        let status = Arc::new(Mutex::new(BalancerStatus {
            window_secs: window.as_secs(),
            ..BalancerStatus::default()
        }));
        let (stop, stopped) = mpsc::channel();
        let shared = status.clone();
        let thread = std::thread::Builder::new()
            .name("mxscreen-balancer".into())
            .spawn(move || {
                watch(
                    reader.as_ref(),
                    &private_ranges(),
                    &asks,
                    &shared,
                    window,
                    &stopped,
                )
            })?;
        Ok(Self {
            status,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// What the last window showed.
    pub fn status(&self) -> BalancerStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The shared status, for the metrics.
    pub fn shared(&self) -> Arc<Mutex<BalancerStatus>> {
        self.status.clone()
    }
}

impl Drop for BalancerWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread: a look every `window` until told to stop (or the daemon goes).
fn watch(
    reader: &dyn DatapathRead,
    private: &[IpNet],
    asks: &MtaAsks,
    status: &Mutex<BalancerStatus>,
    window: Duration,
    stopped: &mpsc::Receiver<()>,
) {
    let mut before = None;
    loop {
        match snapshot(reader, private, asks) {
            Ok(now) => {
                if let Some(before) = &before {
                    let w = measure(before, &now);
                    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                    judge(&mut s, &w, unix_now());
                }
                before = Some(now);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "balancer watch: reading the maps failed")
            }
        }
        if stopped.recv_timeout(window) != Err(mpsc::RecvTimeoutError::Timeout) {
            return;
        }
    }
}

/// Reads the counters, the private allow entries' hits and the most hit sources.
fn snapshot(reader: &dyn DatapathRead, private: &[IpNet], asks: &MtaAsks) -> Result<Snapshot> {
    // The totals first, at one moment: what happens during the walk below (it takes a while
    // with a million verdicts) falls into the next window, not into none.
    let asked = asks.counts();
    let counters = reader.counters()?;
    let subject = SUBJECT.iter().map(|c| counters[*c as usize]).sum();
    let mut private_hits = 0;
    for net in private {
        if let Some(e) = reader.list_exact(ListKind::Allow, *net)? {
            private_hits += e.hits;
        }
    }
    // The most hit sources, in a heap of bounded size (least hit on top).
    let mut heap: BinaryHeap<Reverse<(u64, IpAddr)>> = BinaryHeap::new();
    let mut untracked_max = 0;
    reader.for_each_verdict_chunk(&mut |chunk| {
        for (ip, v) in chunk.into_iter().filter(|(_, v)| v.hits > 0) {
            heap.push(Reverse((v.hits, ip)));
            if heap.len() > TRACKED
                && let Some(Reverse((hits, _))) = heap.pop()
            {
                untracked_max = untracked_max.max(hits);
            }
        }
        true
    })?;
    Ok(Snapshot {
        subject,
        private_hits,
        sources: heap.into_iter().map(|Reverse((h, ip))| (ip, h)).collect(),
        untracked_max,
        asks: asked,
    })
}

/// The window between two looks. A source's SYNs are its hits now less its hits before —
/// or less the most an untracked source could have had, so the count is never too high; a
/// verdict written again in between (its hits start from 0) counts none.
fn measure(before: &Snapshot, now: &Snapshot) -> Window {
    let top = now
        .sources
        .iter()
        .map(|(ip, h)| {
            let was = before
                .sources
                .get(ip)
                .copied()
                .unwrap_or(before.untracked_max);
            (*ip, h.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .max_by_key(|(ip, n)| (*n, Reverse(*ip)));
    Window {
        syns: now.subject.saturating_sub(before.subject),
        top,
        private: now.private_hits.saturating_sub(before.private_hits),
        asks: AskCounts {
            asked: now.asks.asked.saturating_sub(before.asks.asked),
            unseen: now.asks.unseen.saturating_sub(before.asks.unseen),
        },
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Updates the status from one window, logging each change of state.
fn judge(s: &mut BalancerStatus, w: &Window, now: u64) {
    s.syns = w.syns;
    s.asks = w.asks.asked;
    let window = duration::format(Duration::from_secs(s.window_secs));
    if w.syns >= MIN_SYNS {
        let (source, top) = w.top.map_or((None, 0), |(ip, n)| (Some(ip), n));
        let changed = set(&mut s.one_source, share(top, w.syns), now);
        s.one_source.source = source;
        if changed {
            log_change("one_source", &s.one_source, &warning_one_source(s));
        }
        if set(&mut s.private_sources, share(w.private, w.syns), now) {
            log_change("private_sources", &s.private_sources, &warning_private(s));
        }
    }
    if w.asks.asked >= MIN_ASKS && set(&mut s.unseen_peers, share(w.asks.unseen, w.asks.asked), now)
    {
        log_change("unseen_peers", &s.unseen_peers, &warning_unseen(s));
    }
    tracing::debug!(syns = w.syns, asks = w.asks.asked, %window, "balancer watch: window measured");
}

/// Records a deciding window's share; returns whether the state changed.
fn set(c: &mut BalancerCheck, share: f64, now: u64) -> bool {
    c.share = share;
    let suspected = share > 0.5;
    let changed = c.since.is_none() || c.suspected != suspected;
    if changed {
        c.since = Some(now);
    }
    let was = c.suspected;
    c.suspected = suspected;
    // The first window that decides is only news when it suspects something.
    changed && (suspected || was)
}

fn log_change(check: &str, c: &BalancerCheck, warning: &str) {
    if c.suspected {
        tracing::warn!(check, share = format!("{:.2}", c.share), "{warning}");
    } else {
        tracing::info!(
            check,
            share = format!("{:.2}", c.share),
            "balancer watch: {check} no longer suspected"
        );
    }
}

fn percent(share: f64) -> u32 {
    (share * 100.0).round() as u32
}

fn warning_one_source(s: &BalancerStatus) -> String {
    let c = &s.one_source;
    let who = c
        .source
        .map_or_else(|| "one source".into(), |ip| format!("one source, {ip},"));
    format!(
        "{who} carried {}% of the SYNs to the screened ports in the last {}: a load balancer or NAT in front of this host? mxscreen then judges it, not the senders behind it (README: Behind a load balancer, SNAT or PROXY protocol)",
        percent(c.share),
        duration::format(Duration::from_secs(s.window_secs))
    )
}

fn warning_private(s: &BalancerStatus) -> String {
    format!(
        "the built-in private ranges carried {}% of the SYNs to the screened ports in the last {}: a load balancer on a private address in front of this host (then nothing behind it is screened), or your internal clients send most of the port-25 mail (README: Behind a load balancer, SNAT or PROXY protocol)",
        percent(s.private_sources.share),
        duration::format(Duration::from_secs(s.window_secs))
    )
}

fn warning_unseen(s: &BalancerStatus) -> String {
    format!(
        "{}% of the MTA's questions in the last {} were about addresses whose SYN the datapath never saw: the PROXY protocol in front of the MTA, mail arriving through an interface mxscreen is not attached to, or an MTA asking on ports mxscreen does not screen (README: Behind a load balancer, SNAT or PROXY protocol)",
        percent(s.unseen_peers.share),
        duration::format(Duration::from_secs(s.window_secs))
    )
}

/// The lines `status` adds, one per check suspected.
pub fn warnings(s: &BalancerStatus) -> Vec<String> {
    let mut w = Vec::new();
    if s.one_source.suspected {
        w.push(warning_one_source(s));
    }
    if s.private_sources.suspected {
        w.push(warning_private(s));
    }
    if s.unseen_peers.suspected {
        w.push(warning_unseen(s));
    }
    w
}

#[cfg(test)]
mod tests;
