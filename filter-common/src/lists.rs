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

/// Bits of the list filter (`LIST_FILTER`, an array of u64 words; one filter for both
/// families and every table): bit [`ListKey::filter_bit`] is set while a key hashing to it is
/// in the lists. The datapath probes a list hash only where the bit is set: a probe of the
/// hash is a cache miss or two, the filter's word a line it touched recently, so a source
/// that no list covers (a flood of new sources) costs a few bit tests, not a probe per
/// length in use. A set bit for a missing key only costs that probe.
pub const LIST_FILTER_BITS: u32 = 1 << 22;
/// Words of the list filter.
pub const LIST_FILTER_WORDS: u32 = LIST_FILTER_BITS / 64;

/// The filter bit of a key: a multiplicative hash of (family, table, length, network). The
/// network is read as big-endian words, so the datapath (key bytes) and userspace (host
/// integers) feed it the same numbers.
#[inline(always)]
const fn filter_hash(tag: u64, hi: u64, lo: u64) -> u32 {
    let mut h = hi.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ lo;
    h = h.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ tag;
    h = h.wrapping_mul(0x1656_67b1_9e37_79f9);
    (h >> (64 - LIST_FILTER_BITS.trailing_zeros())) as u32
}

/// The filter bit of the IPv4 key (`table`, `len`, `net`), `net` a host integer.
#[inline(always)]
pub const fn filter_bit_v4(table: u8, len: u8, net: u32) -> u32 {
    filter_hash(4 << 16 | (table as u64) << 8 | len as u64, 0, net as u64)
}

/// The filter bit of the IPv6 key (`table`, `len`, `hi:lo`), the network's two halves as
/// host integers.
#[inline(always)]
pub const fn filter_bit_v6(table: u8, len: u8, hi: u64, lo: u64) -> u32 {
    filter_hash(6 << 16 | (table as u64) << 8 | len as u64, hi, lo)
}

impl ListKey<[u8; 4]> {
    /// This key's bit in the list filter.
    #[inline]
    pub const fn filter_bit(&self) -> u32 {
        filter_bit_v4(self.table, self.len, u32::from_be_bytes(self.addr))
    }
}

impl ListKey<[u8; 16]> {
    /// This key's bit in the list filter.
    #[inline]
    pub const fn filter_bit(&self) -> u32 {
        let a = &self.addr;
        let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
        let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
        filter_bit_v6(self.table, self.len, hi, lo)
    }
}
