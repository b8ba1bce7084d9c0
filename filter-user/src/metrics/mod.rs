//! Prometheus metrics: `GET /metrics` on `[metrics] listen`, in the Prometheus text format
//! (0.0.4), built on the `metrics` facade and `metrics-exporter-prometheus`.
//!
//! Why that crate: it writes the classic text format that Prometheus scrapes and
//! `promtool check metrics` checks, with counter names exactly as given (`..._total`);
//! prometheus-client only writes OpenMetrics, whose counter `TYPE`/`HELP` lines drop the
//! `_total` that promtool's lint then asks for. The facade also lets the reputation engine
//! time its DNS queries (`histogram!`) without a handle threaded through it, at no cost when
//! no recorder is installed (`mxscreen check`, tests).
//!
//! Every number is read from its source when Prometheus scrapes, never pushed ahead of time:
//! each source is a [`Families`] — described once at start, set at every scrape — so a new
//! source (feeds, a fleet link) is one more implementation in the list the daemon passes to
//! [`start`]. A scrape reads the datapath counters through a handle of its own, the engine's
//! atomics and the [`Facts`] the daemon publishes (its census of the maps): it never walks a
//! map and never waits for the daemon's main loop.
//!
//! - [`datapath`]: the kernel program's outcome counters;
//! - [`daemon`]: what the daemon publishes: cached verdicts, map fill, reloads, build info;
//! - [`engine`]: the reputation engine's budget, evaluations and DNS answers, per zone;
//! - [`feeds`]: each blocklist feed's entries, last load and trouble;
//! - [`fleet`]: the fleet link, when `[fleet]` is on;
//! - [`balancer`]: what the balancer watch suspects;
//! - [`server`]: the HTTP endpoint.

pub mod balancer;
pub mod daemon;
pub mod datapath;
pub mod engine;
pub mod feeds;
pub mod fleet;
pub mod mta;
mod server;

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

pub use self::{
    balancer::BalancerFamilies,
    daemon::{DaemonFamilies, Facts, SharedFacts},
    datapath::DatapathFamilies,
    engine::EngineFamilies,
    feeds::FeedFamilies,
    fleet::FleetFamilies,
    mta::MtaFamilies,
    server::Endpoint,
};
use crate::reputation::stats::DNS_LOOKUP_SECONDS;

/// One source of metric families.
pub trait Families: Send + Sync + 'static {
    /// Names, units and help texts (`describe_counter!`, `describe_gauge!`, ...): once, at start.
    fn describe(&self);
    /// Sets every value from the source (counters with `absolute`, gauges with `set`): at
    /// every scrape.
    fn update(&self) -> Result<()>;
}

/// Upper bounds of the DNS latency buckets, in seconds: a local resolver's cache hit (under
/// a millisecond) to `resolver.timeout`'s range (seconds).
const DNS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What a scrape runs: every source's update, then the exporter's rendering.
pub struct Scraper {
    families: Vec<Box<dyn Families>>,
    handle: PrometheusHandle,
}

impl Scraper {
    /// The text Prometheus reads.
    pub fn render(&self) -> Result<String> {
        for f in &self.families {
            f.update()?;
        }
        Ok(self.handle.render())
    }
}

/// How long a counter or gauge series is kept without being set. Every scrape sets each one
/// the daemon still has (see [`Families::update`]), so one left unset is gone from its
/// source: a zone or a feed a reload removed, an interface detached. The time only has to
/// outlast two scrapes overlapping.
const UNSET_SERIES_KEPT: Duration = Duration::from_secs(2);

/// The recorder every scrape renders from, with the DNS latency buckets; counter and gauge
/// series no scrape sets any more are dropped (histograms are recorded as lookups happen,
/// not at scrapes, and stay).
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DNS_LOOKUP_SECONDS.to_owned()), DNS_BUCKETS)
        .expect("the bucket list is not empty")
        .idle_timeout(
            MetricKindMask::COUNTER | MetricKindMask::GAUGE,
            Some(UNSET_SERIES_KEPT),
        )
}

/// Installs the process-wide recorder, describes every family and serves `GET /metrics` on
/// `listen` (bound before this returns, so a taken port fails the start).
pub async fn start(listen: SocketAddr, families: Vec<Box<dyn Families>>) -> Result<Endpoint> {
    let handle = builder()
        .install_recorder()
        .context("installing the metrics recorder")?;
    for f in &families {
        f.describe();
    }
    server::serve(listen, Scraper { families, handle })
        .await
        .with_context(|| format!("metrics.listen {listen}"))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Describes and updates `families` into a recorder of their own and renders it.
    pub fn render(families: &[&dyn Families]) -> String {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            for f in families {
                f.describe();
                f.update().unwrap();
            }
        });
        handle.render()
    }

    /// A series no scrape sets any more (a zone a reload removed) leaves the output; the
    /// ones still set stay, however long between scrapes.
    #[test]
    fn series_no_longer_set_are_dropped() {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        let scrape = |zones: &[&str]| {
            ::metrics::with_local_recorder(&recorder, || {
                for z in zones {
                    ::metrics::gauge!("zone_gauge", "zone" => z.to_string()).set(1.0);
                    ::metrics::counter!("zone_total", "zone" => z.to_string()).absolute(3);
                }
            });
            handle.render()
        };
        let first = scrape(&["a.test", "b.test"]);
        assert!(first.contains("zone=\"b.test\""), "{first}");
        std::thread::sleep(UNSET_SERIES_KEPT + Duration::from_millis(200));
        let later = scrape(&["a.test"]);
        assert!(
            later.contains("zone_gauge{zone=\"a.test\"}")
                && later.contains("zone_total{zone=\"a.test\"}"),
            "{later}"
        );
        assert!(!later.contains("b.test"), "{later}");
    }
}
