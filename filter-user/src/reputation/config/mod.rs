//! The reputation engine's config sections: `[resolver]`, `[[dnsbl]]`, `[rdns]`, `[policy]` and
//! `[lists]` (with its `[[lists.feed]]` files), each with its documented default and its own
//! checks, one file per concern. The
//! config file loader (`crate::config`) embeds them; [`ReputationConfig`] is the typed view
//! the engine takes.
//!
//! Every default says why it is what it is; an operator who runs with an empty config gets a
//! filter that is safe to put in front of a real MX. A field's doc comment is also what
//! `mxscreen config default` prints above the key.

mod dnsbl;
mod feeds;
mod policy;
mod resolver;

use std::net::IpAddr;

pub use self::{
    dnsbl::{CodeWeight, DnsblConfig, default_dnsbls, validate_dnsbls},
    feeds::{FeedAction, FeedConfig, FeedFormat},
    policy::{ListsConfig, PolicyConfig, RdnsConfig, builtin_allow},
    resolver::{Nameserver, PUBLIC_RESOLVERS, ResolverConfig, public_resolvers},
};
use crate::invalid_key::InvalidKey;

/// Everything the reputation engine reads, built from the config file by
/// `Config::reputation` (or by hand in tests and benchmarks).
#[derive(Clone, Debug, PartialEq)]
pub struct ReputationConfig {
    pub resolver: ResolverConfig,
    /// The DNSBL/DNSWL zones.
    pub dnsbl: Vec<DnsblConfig>,
    pub rdns: RdnsConfig,
    pub policy: PolicyConfig,
    pub lists: ListsConfig,
}

impl ReputationConfig {
    /// Checks what serde cannot: ranges, thresholds, duplicate zones.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        self.resolver.validate()?;
        validate_dnsbls(&self.dnsbl)?;
        self.rdns.validate()?;
        self.policy.validate()
    }

    /// Public resolvers among the configured nameservers (for the start-up warning).
    pub fn public_nameservers(&self) -> Vec<IpAddr> {
        public_resolvers(self.resolver.nameservers.iter().map(|n| n.0.ip()))
    }
}
