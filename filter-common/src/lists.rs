//! The prefix lists: one hash per address family (`LISTS_V4`, `LISTS_V6`) keyed by table,
//! prefix length and network address, plus the index of prefix lengths in use
//! (`LIST_INDEX`). A source is matched by probing each length in use, longest first: one hash
//! lookup per length, whatever the number of entries (a kernel LPM trie walks one node per
//! bit and slows down with its size), and the hashes load a million entries in batches.
//!
//! Lookups only happen when a source has no decision cached for the current generation (see
//! [`crate::Peer`]); every change to a list bumps `DatapathConfig::list_gen`.

use crate::Reason;

/// Which list a prefix is in, in order of precedence: the first table with a live entry
/// covering the source decides (allow > deny > limit), and a prefix verdict applies when
/// the source has no verdict of its own.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Always pass (config, manual, the host's own addresses, allow feeds).
    Allow = 0,
    /// Always drop (config, manual, drop feeds).
    Deny = 1,
    /// Rate-limited like a `limit` verdict (limit feeds).
    Limit = 2,
    /// A reputation verdict for a whole network (IPv6 addresses that rotate inside it).
    PrefixVerdict = 3,
}

impl Table {
    /// Number of tables.
    pub const COUNT: usize = 4;
    /// Every table, in order of precedence.
    pub const ALL: [Table; Self::COUNT] = [
        Table::Allow,
        Table::Deny,
        Table::Limit,
        Table::PrefixVerdict,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Limit => "limit",
            Self::PrefixVerdict => "prefix verdict",
        }
    }
}

/// Key of the list hashes: the network address with host bits cleared, network byte order.
/// `A` is `[u8; 4]` or `[u8; 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListKey<A> {
    /// A [`Table`] as u8.
    pub table: u8,
    /// Prefix length, 0..=32 or 0..=128.
    pub len: u8,
    pub _pad: [u8; 2],
    pub addr: A,
}

impl<A> ListKey<A> {
    pub const fn new(table: Table, len: u8, addr: A) -> Self {
        Self {
            table: table as u8,
            len,
            _pad: [0; 2],
            addr,
        }
    }
}

/// Value of the list hashes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListValue {
    /// CLOCK_MONOTONIC_COARSE ns after which the entry is ignored; [`crate::NEVER`]: never.
    /// The datapath honours it itself, so a timed block ends on time even if the daemon is
    /// busy.
    pub expires_ns: u64,
    /// Index of the entry's hit counter in the per-CPU `HITS` array (a feed's entries share
    /// one; 0 is the uncounted overflow slot).
    pub slot: u32,
    /// A [`Reason`] as u8.
    pub reason: u8,
    /// For [`Table::PrefixVerdict`]: the verdict's action (only `drop` is written).
    pub action: u8,
    pub _pad: [u8; 2],
}

impl ListValue {
    pub const fn new(reason: Reason, expires_ns: u64, slot: u32) -> Self {
        Self {
            expires_ns,
            slot,
            reason: reason as u8,
            action: 0,
            _pad: [0; 2],
        }
    }
}

/// Prefix lengths possible per family.
pub const V4_LENGTHS: usize = 33;
pub const V6_LENGTHS: usize = 129;

/// The prefix lengths one table uses in one family, longest first: the lengths the datapath
/// probes. `N` is [`V4_LENGTHS`] or [`V6_LENGTHS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lengths<const N: usize> {
    /// How many of `lens` are used.
    pub count: u8,
    pub lens: [u8; N],
}

impl<const N: usize> Lengths<N> {
    pub const fn empty() -> Self {
        Self {
            count: 0,
            lens: [0; N],
        }
    }
}

/// The single element of `LIST_INDEX`: the lengths in use, per family and [`Table`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListIndex {
    pub v4: [Lengths<V4_LENGTHS>; Table::COUNT],
    pub v6: [Lengths<V6_LENGTHS>; Table::COUNT],
}

impl ListIndex {
    pub const fn empty() -> Self {
        Self {
            v4: [Lengths::empty(); Table::COUNT],
            v6: [Lengths::empty(); Table::COUNT],
        }
    }
}

/// A list entry as userspace reads and writes it through `DatapathMaps` (`list_insert`,
/// `list_match`, `list_entries`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// A [`Reason`] as u8.
    pub reason: u8,
    pub _pad: [u8; 7],
    /// CLOCK_MONOTONIC_COARSE nanoseconds after which the entry is ignored;
    /// [`crate::NEVER`]: never.
    pub expires_ns: u64,
    /// SYNs this entry decided (for a feed's entry: the whole feed's).
    pub hits: u64,
}

impl ListEntry {
    /// A fresh entry (no hits yet) expiring at `expires_ns` ([`crate::NEVER`]: never).
    pub const fn new(reason: Reason, expires_ns: u64) -> Self {
        Self {
            reason: reason as u8,
            _pad: [0; 7],
            expires_ns,
            hits: 0,
        }
    }

    /// The stored reason.
    pub const fn reason(&self) -> Reason {
        Reason::from_u8(self.reason)
    }
}
