//! Everything the datapath (`filter-ebpf`) and userspace (`filter-user`) must agree on.
//!
//! Every type here is `#[repr(C)]` with its padding spelled out, because the kernel copies map
//! keys and values byte for byte: an implicit hole would carry stack garbage into a hash key
//! and make two equal keys differ. Addresses are stored in network byte order, exactly as they
//! appear in the packet, so the datapath never swaps bytes.
//!
//! - [`names`]: [`Action`] and [`Reason`];
//! - [`config`]: [`DatapathConfig`], the runtime configuration;
//! - [`peer`]: [`Peer`], everything known about one source (verdict, cached decision, first
//!   contact, token bucket), the [`PeerVerdict`] and [`Seen`] views of it, and the count of
//!   [`NewSources`] that bounds a hold;
//! - [`lists`]: the prefix lists ([`Table`], [`ListKey`], [`ListValue`], [`ListIndex`]) and the
//!   [`ListEntry`] view;
//! - [`counters`]: the outcome [`Counter`]s;
//! - [`event`]: the [`NewPeerEvent`] of the ring buffer;
//! - [`cache`]: the direct-mapped decision cache in front of the per-source entries
//!   ([`CacheSlot`], [`CacheCtl`]);
//! - [`expiry`]: what an expiry means, [`NEVER`] included ([`live`], [`earliest`]).
#![no_std]

pub mod cache;
pub mod config;
pub mod counters;
pub mod event;
pub mod expiry;
pub mod lists;
pub mod names;
pub mod peer;

pub use self::{
    cache::{
        CacheCtl, CacheSlot, SealKey, SlotState, cache_index, cache_key_as_v4, cache_key_as_v6,
        cache_key_v4, cache_key_v6, cache_meta, cacheable_v6, has_bucket, is_verdict, seal,
    },
    config::{DatapathConfig, FLAG_EXPLAIN, FLAG_HOLD, FLAG_OBSERVE, PORT_WORDS},
    counters::Counter,
    event::{EventWhy, NewPeerEvent},
    expiry::{NEVER, earliest, live},
    lists::{
        FILTER_BLOCK_V4, FILTER_BLOCK_V6, LIST_FILTER_BITS, LIST_FILTER_WORDS, Lengths, ListEntry,
        ListIndex, ListKey, ListValue, Table, V4_LENGTHS, V6_LENGTHS, filter_bit_v4, filter_bit_v6,
        top_bits,
    },
    names::{Action, Reason},
    peer::{
        Decision, NewSources, PEER_EXPLAIN, PEER_VERDICT, Peer, PeerVerdict, Seen, VERDICT_EXPLAIN,
        seconds_up,
    },
};

/// The most destination ports the datapath screens (the `ports` array in [`DatapathConfig`]).
pub const MAX_PORTS: usize = 64;

/// Address family tags used in [`NewPeerEvent::family`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Names of the maps in the eBPF object. The eBPF statics carry exactly these names (a unit
/// test in filter-user checks the object against this list); userspace looks maps up, pins
/// them and sizes them by these names only.
pub mod map_names {
    pub const CACHE: &str = "CACHE";
    pub const CACHE_CTL: &str = "CACHE_CTL";
    pub const CONFIG: &str = "CONFIG";
    pub const COUNTERS: &str = "COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
    pub const HITS: &str = "HITS";
    pub const LIST_FILTER: &str = "LIST_FILTER";
    pub const LIST_INDEX: &str = "LIST_INDEX";
    pub const LISTS_V4: &str = "LISTS_V4";
    pub const LISTS_V6: &str = "LISTS_V6";
    pub const PEERS_V4: &str = "PEERS_V4";
    pub const PEERS_V6: &str = "PEERS_V6";
    pub const SEEN_V4: &str = "SEEN_V4";
    pub const SEEN_V6: &str = "SEEN_V6";
    pub const SEEN_RATE: &str = "SEEN_RATE";

    /// Every map, in a stable order (pinning, status and the name check walk this).
    pub const ALL: [&str; 16] = [
        CACHE,
        CACHE_CTL,
        CONFIG,
        COUNTERS,
        EVENTS,
        EVENT_BUDGET,
        HITS,
        LIST_FILTER,
        LIST_INDEX,
        LISTS_V4,
        LISTS_V6,
        PEERS_V4,
        PEERS_V6,
        SEEN_V4,
        SEEN_V6,
        SEEN_RATE,
    ];
}

/// Names of the entry points in the eBPF object.
pub mod program_names {
    pub const XDP: &str = "mxscreen_xdp";
    pub const TC: &str = "mxscreen_tc";
    /// Never attached: userspace runs it (BPF_PROG_TEST_RUN) to read jiffies and the coarse
    /// clock together, the calibration of the datapath's clock.
    pub const CLOCK: &str = "mxscreen_clock";
}

/// Compile-time default map sizes. Userspace overrides them at load time from its config;
/// these are what the object declares and what the tests load with.
pub mod default_sizes {
    /// Sources with a verdict from userspace, per family.
    pub const PEERS: u32 = 256 * 1024;
    /// Sources the datapath keeps state for without a verdict (unknown, held, decided by a
    /// list), per family. Half the verdicts' room (each is ~17 MiB of preallocated kernel
    /// memory a family): it holds everything first contact needs of a busy MX, and bounds
    /// the hold up to ~21,800 new sources a second at the default `hold_max` of 3 s.
    pub const SEEN: u32 = 128 * 1024;
    /// Prefix-list entries per family (all tables; allocated on use).
    pub const LISTS: u32 = 1024 * 1024 + 64 * 1024;
    /// Per-CPU hit counters of list entries (each feed uses one for all its entries).
    pub const HITS: u32 = 8192;
    /// Ring buffer for new-peer events, bytes (a power of two, a multiple of the page size).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], contain only integers and byte arrays, and spell
    // out their padding, so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for super::Peer {}
    unsafe impl aya::Pod for super::NewSources {}
    unsafe impl aya::Pod for super::CacheSlot {}
    unsafe impl aya::Pod for super::CacheCtl {}
    unsafe impl aya::Pod for super::ListKey<[u8; 4]> {}
    unsafe impl aya::Pod for super::ListKey<[u8; 16]> {}
    unsafe impl aya::Pod for super::ListValue {}
    unsafe impl aya::Pod for super::ListIndex {}
    unsafe impl aya::Pod for super::DatapathConfig {}
    unsafe impl aya::Pod for super::NewPeerEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The datapath makes a new source's entry by zeroing its words (no memset call):
    /// that must be the empty entry.
    #[test]
    fn the_empty_entry_is_all_zero() {
        let e = Peer::empty();
        // SAFETY: `Peer` is plain integers with no implicit padding (the test below).
        let bytes: [u8; size_of::<Peer>()] = unsafe { core::mem::transmute(e) };
        assert!(bytes.iter().all(|b| *b == 0));
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        use core::mem::size_of;
        assert_eq!(size_of::<PeerVerdict>(), 1 + 1 + 6 + 8 + 8 + 8);
        assert_eq!(size_of::<ListEntry>(), 1 + 7 + 8 + 8);
        assert_eq!(size_of::<Seen>(), 16);
        // With a 16-byte key, the kernel's 48-byte element header and this, two cache lines.
        assert_eq!(size_of::<Peer>(), 64);
        assert_eq!(size_of::<ListKey<[u8; 4]>>(), 4 + 4);
        assert_eq!(size_of::<ListKey<[u8; 16]>>(), 4 + 16);
        assert_eq!(size_of::<ListValue>(), 8 + 4 + 4);
        assert_eq!(
            size_of::<ListIndex>(),
            Table::COUNT * (1 + V4_LENGTHS + 1 + V6_LENGTHS)
        );
        assert_eq!(
            size_of::<DatapathConfig>(),
            2 * MAX_PORTS + 4 + 4 + 7 * 8 + 4 + 4 + 4 * 8 + 8 * PORT_WORDS + 8
        );
        assert_eq!(size_of::<NewSources>(), 3 * 8);
        assert_eq!(size_of::<NewPeerEvent>(), 16 + 1 + 1 + 2 + 4 + 8);
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
            assert_eq!(Action::from_u8(a as u8), Some(a));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.name()), Some(r));
            assert_eq!(Reason::from_u8(r as u8), r);
        }
        // An unknown action byte passes, as the datapath treats it.
        assert_eq!(
            PeerVerdict::new(Action::Drop, Reason::Manual, 0).action(),
            Action::Drop
        );
        let mut v = PeerVerdict::new(Action::Drop, Reason::Manual, 0);
        v.action = 77;
        assert_eq!(v.action(), Action::Pass);
    }

    #[test]
    fn limit_is_gcra_of_rate_and_burst() {
        let mut c = DatapathConfig::empty();
        c.set_limit(6, 3);
        assert_eq!(c.limit_interval_ns, 10_000_000_000);
        assert_eq!(c.limit_tolerance_ns, 20_000_000_000);
        c.set_limit(0, 0);
        assert_eq!(c.limit_tolerance_ns, 0);
    }

    #[test]
    fn deadlines_convert_to_jiffies_rounding_down() {
        let mut c = DatapathConfig::empty();
        assert_eq!(c.jiffies_at(5), None);
        c.tick_ns = 4_000_000;
        c.clock_jiffies = 1000;
        c.clock_ns = 10_000_000_000;
        assert_eq!(c.jiffies_at(10_000_000_000), Some(1000));
        assert_eq!(c.jiffies_at(10_007_999_999), Some(1001));
        assert_eq!(c.jiffies_at(10_008_000_000), Some(1002));
        assert_eq!(c.jiffies_at(9_999_999_999), Some(999));
        assert_eq!(c.jiffies_at(9_996_000_000), Some(999));
        assert_eq!(c.jiffies_at(0), Some(0));
    }

    #[test]
    fn ports_are_bounded() {
        let mut c = DatapathConfig::empty();
        assert!(c.set_ports(&[25, 587]));
        assert_eq!((c.port_count, c.ports[0], c.ports[1]), (2, 25, 587));
        assert!(c.screens(25) && c.screens(587) && !c.screens(24) && !c.screens(0));
        assert!(!c.set_ports(&[1; MAX_PORTS + 1]));
        assert_eq!(c.port_count, 2);
        assert!(c.set_ports(&[65535, 64]));
        assert!(c.screens(65535) && c.screens(64) && !c.screens(25));
    }

    #[test]
    fn a_peer_keeps_its_state_across_verdict_changes() {
        let mut p = Peer::empty();
        assert_eq!((p.verdict(), p.seen()), (None, None));
        p.first_seen_ns = 5;
        p.list_gen = 9;
        p.decision = Decision::Unknown as u8;
        let mut v = PeerVerdict::new(Action::Drop, Reason::Reputation, 77);
        v.explain_at_ns = 3_000_000_001;
        p.set_verdict(&v);
        // The explanation's time in whole seconds, rounded up.
        v.explain_at_ns = 4_000_000_000;
        assert_eq!(p.verdict(), Some(v));
        assert_eq!((p.list_gen, p.decision), (0, Decision::None as u8));
        p.clear_verdict();
        assert_eq!(p.verdict(), None);
        assert_eq!(p.seen().map(|s| s.first_seen_ns), Some(5));
    }
}
