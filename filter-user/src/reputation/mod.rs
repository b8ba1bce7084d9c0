//! Reputation engine: rDNS, FCrDNS, DNSBL/DNSWL (RFC 5782) into verdicts.
//!
//! Given a peer address, the engine asks DNS what the mail world knows about it (its PTR and
//! whether that names it back, and what each configured DNSBL/DNSWL zone says), adds up the
//! weights of the evidence and turns the score into `pass`, `limit` or `drop` with an expiry.
//!
//! Where operators get burned, it is careful:
//! - a DNS failure is not a missing PTR and not a listing: it adds no weight and can only
//!   make a verdict more lenient and shorter-lived (see [`policy`]);
//! - a DNSBL's refusal codes (127.255.255.x: public resolver, over quota, typo) and answers
//!   outside 127/8 are never listings; they are counted per zone and warned about;
//! - the daemon's intake is budgeted ([`Engine::submit_seen`]): a bounded coalescing queue
//!   that serves proven-real senders before first SYNs (see [`budget`]), a
//!   rate cap and an in-flight cap, so a flood of new peers never becomes a flood of queries.
//!
//! Entry points: [`Engine`] (daemon), [`check`] and [`CheckReport`] (`mxscreen check`),
//! [`ReputationConfig`] and its sections (config).
pub mod budget;
pub mod canary;
pub mod codes;
pub mod config;
pub mod dnsbl;
pub mod engine;
pub mod gather;
pub mod names;
pub mod nameservers;
pub mod policy;
pub mod quota;
pub mod rdns;
pub mod report;
pub mod resolver;
pub mod stats;
pub mod verdict;

pub use budget::{Class, Submit};
pub use canary::CanaryStatus;
pub use config::{
    CodeWeight, DnsblConfig, ExplainTo, ListsConfig, Nameserver, PolicyConfig, RdnsConfig,
    ReputationConfig, ResolverConfig,
};
pub use engine::{Engine, EngineError};
pub use report::{CheckReport, check};
pub use stats::{Stats, ZoneStats};
pub use verdict::{Evidence, Finding, Listing, Verdict};
