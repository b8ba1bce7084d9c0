//! The DNS client: hickory-resolver set up for screening, and its results sorted into what
//! the engine has to tell apart (an answer, a definite "no such record", and "we don't know").
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{
        ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig,
        ResolverOpts,
    },
    net::{DnsError, NetError, NoRecords, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{Name, RData, RecordType},
    },
};

use super::{
    config::{ResolverConfig, public_resolvers},
    stats::{Counters, DNS_LOOKUP_SECONDS},
};

/// What one query came back with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Records of the asked type (never empty), and the smallest TTL among them.
    Answer(Vec<T>, Duration),
    /// NXDOMAIN, or NOERROR with no record of the type. A definite negative; the TTL is the
    /// SOA's negative TTL when the server sent one.
    Negative {
        nxdomain: bool,
        ttl: Option<Duration>,
    },
    /// SERVFAIL, REFUSED, timeout, network error: the question is still open.
    TempFail(String),
}

/// The engine's resolver.
pub struct Dns {
    resolver: TokioResolver,
    /// The nameservers in use (from config or resolv.conf), for logs and warnings.
    pub servers: Vec<IpAddr>,
    counters: Arc<Counters>,
}

/// Could not set up the resolver.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot set up the DNS resolver: {0} (set resolver.nameservers in the config, or fix /etc/resolv.conf)"
)]
pub struct ResolverError(String);

impl Dns {
    /// Builds the resolver: `cfg.nameservers` or else `/etc/resolv.conf`, with the timeouts
    /// and cache size of `cfg`. Needs no runtime until the first query.
    pub fn new(cfg: &ResolverConfig, counters: Arc<Counters>) -> Result<Self, ResolverError> {
        let (hconfig, mut opts) = if cfg.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverError(e.to_string()))?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|ns| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = ns.0.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = ns.0.port();
                    NameServerConfig::new(ns.0.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                HickoryConfig::from_parts(None, Vec::new(), servers),
                ResolverOpts::default(),
            )
        };
        if hconfig.name_servers().is_empty() {
            return Err(ResolverError("no nameserver configured".to_owned()));
        }
        opts.timeout = cfg.timeout;
        opts.attempts = cfg.attempts;
        opts.cache_size = cfg.cache_size;
        if cfg.cache_size == 0 {
            // Nothing is cached, so hickory's clamp of TTLs to a day only hides what the
            // server said: keep the TTLs as sent, for `rfc2181_ttl` to read.
            let sent = Some(Duration::from_secs(u32::MAX.into()));
            opts.positive_max_ttl = sent;
            opts.negative_max_ttl = sent;
        }
        // Two servers at once (when there are two): hickory gives each try of a query one
        // `timeout` in all, so with one server at a time a dead first server costs that
        // whole try, and its penalty decays, so it keeps coming first. Asking two at once
        // costs the second resolver the query (each caches, so a list sees at most twice
        // the queries), and a dead server costs nothing.
        opts.num_concurrent_reqs = 2;
        // Everything we ask is a fully qualified name; /etc/hosts must not answer PTRs.
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = false;
        // Our own in-flight cap bounds concurrency; hickory's per-connection cap (32) would
        // otherwise turn a burst into spurious "busy" failures.
        opts.max_active_requests = opts.max_active_requests.max(1024);
        let servers = hconfig.name_servers().iter().map(|s| s.ip).collect();
        let resolver = Resolver::builder_with_config(hconfig, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolverError(e.to_string()))?;
        Ok(Self {
            resolver,
            servers,
            counters,
        })
    }

    /// The well-known public resolvers among the servers in use.
    pub fn public_servers(&self) -> Vec<IpAddr> {
        public_resolvers(self.servers.iter().copied())
    }

    /// One question; its time goes into the latency histogram under `zone`.
    async fn lookup(
        &self,
        zone: &str,
        name: impl QueryName,
        rtype: RecordType,
    ) -> Outcome<(RData, u32)> {
        let name = match name.query_name() {
            Ok(n) => n,
            Err(e) => return Outcome::TempFail(e),
        };
        self.counters.queries_sent.inc();
        let started = Instant::now();
        let result = self.resolver.lookup(name, rtype).await;
        metrics::histogram!(DNS_LOOKUP_SECONDS, "zone" => zone.to_owned())
            .record(started.elapsed().as_secs_f64());
        match result {
            // An NXDOMAIN that also carries records (a misbehaving resolver): the name does
            // not exist, whatever the records say.
            Ok(lookup) if lookup.message().metadata.response_code == ResponseCode::NXDomain => {
                Outcome::Negative {
                    nxdomain: true,
                    ttl: None,
                }
            }
            Ok(lookup) => {
                let records: Vec<_> = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| (r.data.clone(), rfc2181_ttl(r.ttl)))
                    .collect();
                match records.iter().map(|r| r.1).min() {
                    Some(ttl) => Outcome::Answer(records, Duration::from_secs(ttl.into())),
                    None => Outcome::Negative {
                        nxdomain: false,
                        ttl: None,
                    },
                }
            }
            Err(e) => classify_error(e),
        }
    }

    /// PTR names of `ip` (already in reverse-name form: `name`). `zone` labels the
    /// lookup's time in the latency histogram (a DNSBL zone, or `rdns`), here and below.
    pub async fn ptr(&self, zone: &str, name: impl QueryName) -> Outcome<Name> {
        map(
            self.lookup(zone, name, RecordType::PTR).await,
            |d| match d {
                RData::PTR(p) => Some(p.0),
                _ => None,
            },
        )
    }

    pub async fn a(&self, zone: &str, name: impl QueryName) -> Outcome<Ipv4Addr> {
        map(self.lookup(zone, name, RecordType::A).await, |d| match d {
            RData::A(a) => Some(a.0),
            _ => None,
        })
    }

    pub async fn aaaa(&self, zone: &str, name: impl QueryName) -> Outcome<Ipv6Addr> {
        map(
            self.lookup(zone, name, RecordType::AAAA).await,
            |d| match d {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            },
        )
    }

    /// TXT strings, each record's character-strings joined.
    pub async fn txt(&self, zone: &str, name: impl QueryName) -> Outcome<String> {
        map(
            self.lookup(zone, name, RecordType::TXT).await,
            |d| match d {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s))
                        .collect::<String>(),
                ),
                _ => None,
            },
        )
    }
}

/// A name to ask about: one the engine wrote (`&str`, e.g. a DNSBL query name, parsed here)
/// or one DNS gave it (a PTR's target, asked exactly as it came: its labels may hold any
/// byte, which text would not carry through).
pub trait QueryName {
    fn query_name(self) -> Result<Name, String>;
}

impl QueryName for &str {
    fn query_name(self) -> Result<Name, String> {
        Name::from_ascii(self).map_err(|e| format!("invalid name {self}: {e}"))
    }
}

impl QueryName for &String {
    fn query_name(self) -> Result<Name, String> {
        self.as_str().query_name()
    }
}

impl QueryName for &Name {
    fn query_name(self) -> Result<Name, String> {
        let mut name = self.clone();
        name.set_fqdn(true);
        Ok(name)
    }
}

/// A TTL as RFC 2181 section 8 reads it: a value with the top bit set is treated as zero.
fn rfc2181_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 { 0 } else { ttl }
}

fn map<T>(o: Outcome<(RData, u32)>, f: impl Fn(RData) -> Option<T>) -> Outcome<T> {
    match o {
        Outcome::Answer(records, ttl) => {
            let items: Vec<T> = records.into_iter().filter_map(|(d, _)| f(d)).collect();
            if items.is_empty() {
                Outcome::Negative {
                    nxdomain: false,
                    ttl: None,
                }
            } else {
                Outcome::Answer(items, ttl)
            }
        }
        Outcome::Negative { nxdomain, ttl } => Outcome::Negative { nxdomain, ttl },
        Outcome::TempFail(e) => Outcome::TempFail(e),
    }
}

/// NXDOMAIN and NODATA are answers; everything else leaves the question open.
fn classify_error(e: NetError) -> Outcome<(RData, u32)> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code,
            negative_ttl,
            ..
        })) if matches!(
            response_code,
            ResponseCode::NXDomain | ResponseCode::NoError
        ) =>
        {
            Outcome::Negative {
                nxdomain: response_code == ResponseCode::NXDomain,
                ttl: negative_ttl.map(|t| Duration::from_secs(rfc2181_ttl(t).into())),
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => Outcome::TempFail(rcode_name(code)),
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { response_code, .. })) => {
            Outcome::TempFail(rcode_name(response_code))
        }
        NetError::Timeout => Outcome::TempFail("timeout".to_owned()),
        other => Outcome::TempFail(other.to_string()),
    }
}

/// The mnemonic operators know from dig (`SERVFAIL`), with hickory's description.
fn rcode_name(code: ResponseCode) -> String {
    let mnemonic = match code {
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::NotAuth => "NOTAUTH",
        _ => return format!("rcode {}", u16::from(code)),
    };
    format!("{mnemonic} ({code})")
}
