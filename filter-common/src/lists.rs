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
/// hash is a cache miss or two, so a source that no list covers (a flood of new sources)
/// costs a few bit tests, not a probe per length in use. A set bit for a missing key only
/// costs that probe.
///
/// The filter is *blocked*: a key's word is chosen by its network cut at
/// [`FILTER_BLOCK_V4`] / [`FILTER_BLOCK_V6`] bits, its bit in the word by the whole key. So
/// every key of at least that length a source's walk can meet — its /32 or /128, its /24,
/// its /64 and /56, in any table — lies in one word: a new source's walk reads one line of
/// the filter (a cache miss for a random source) where it read one per length in use, and
/// only lengths shorter than the block cost a word (a line) of their own.
pub const LIST_FILTER_BITS: u32 = 1 << 22;
/// Words of the list filter.
pub const LIST_FILTER_WORDS: u32 = LIST_FILTER_BITS / 64;
/// IPv4 keys of this length or longer share their /24's filter word: the usual unit of
/// allocation and of listing (a feed's /32s and /24s).
pub const FILTER_BLOCK_V4: u8 = 24;
/// IPv6 keys of this length or longer share their /56's filter word: a site's usual
/// assignment (RFC 6177), so a host's /128, its /64 and its site's /56 meet in one word,
/// while a feed of consecutive /64s fills the words of a few /56s, not a word per /64.
pub const FILTER_BLOCK_V6: u8 = 56;

/// SplitMix64's finalizer: every input bit reaches every output bit.
#[inline(always)]
const fn fmix(mut z: u64) -> u64 {
    z = (z ^ z >> 30).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ z >> 27).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ z >> 31
}

/// A hash of (tag, hi, lo), its top `bits` bits. The tag goes in first and is mixed as
/// fully as the network: the word and the bit of a key as long as its block hash the same
/// network under two tags, and must not come out related (with the tag mixed in last, a /56
/// key's bit followed its word, and a random source's /56 test hit a set bit nine times in
/// ten).
#[inline(always)]
const fn filter_hash(tag: u64, hi: u64, lo: u64, bits: u32) -> u64 {
    let h = fmix(tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ hi);
    fmix(h ^ lo) >> (64 - bits)
}

/// The filter bit of a key: its word by the block (`block_tag`: the family and the block's
/// length; `block_net`: the network cut there, at most 64 bits), its bit in the word by the
/// key (`tag`: family, table, length; `hi`, `lo`: the network). Networks are read as
/// big-endian words, so the datapath (key bytes) and userspace (host integers) feed it the
/// same numbers.
#[inline(always)]
const fn filter_bit(block_tag: u64, block_net: u64, tag: u64, hi: u64, lo: u64) -> u32 {
    let word = filter_hash(block_tag, block_net, 0, LIST_FILTER_WORDS.trailing_zeros());
    let bit = filter_hash(tag, hi, lo, 6);
    (word << 6 | bit) as u32
}

/// The top `len` bits of a 64-bit word set (`len` 0..=64): a network mask, for the filter
/// here and the datapath's masking of a source to a length.
#[inline(always)]
pub const fn top_bits(len: u8) -> u64 {
    if len == 0 {
        0
    } else if len >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - len)
    }
}

/// The filter bit of the IPv4 key (`table`, `len`, `net`), `net` a host integer.
#[inline(always)]
pub const fn filter_bit_v4(table: u8, len: u8, net: u32) -> u32 {
    let block = if len < FILTER_BLOCK_V4 {
        len
    } else {
        FILTER_BLOCK_V4
    };
    filter_bit(
        4 << 16 | block as u64,
        net as u64 & top_bits(block) >> 32,
        4 << 16 | (table as u64) << 8 | len as u64,
        0,
        net as u64,
    )
}

/// The filter bit of the IPv6 key (`table`, `len`, `hi:lo`), the network's two halves as
/// host integers.
#[inline(always)]
pub const fn filter_bit_v6(table: u8, len: u8, hi: u64, lo: u64) -> u32 {
    // The block is at most 64 bits long: only `hi` is cut.
    let block = if len < FILTER_BLOCK_V6 {
        len
    } else {
        FILTER_BLOCK_V6
    };
    filter_bit(
        6 << 16 | block as u64,
        hi & top_bits(block),
        6 << 16 | (table as u64) << 8 | len as u64,
        hi,
        lo,
    )
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

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn v6(table: Table, len: u8, addr: u128) -> u32 {
        let net = addr & !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        ListKey::new(table, len, net.to_be_bytes()).filter_bit()
    }

    /// Every key a source's walk can meet at the block's length or longer, in any table,
    /// lies in one word (one line read); a shorter one in the word of its own network.
    #[test]
    fn a_sources_keys_past_the_block_share_a_word() {
        let src = 0x2001_0db8_1234_5678_9abc_def0_1122_3344u128;
        let word = v6(Table::Deny, 128, src) / 64;
        for len in [56, 64, 96, 128] {
            for table in Table::ALL {
                assert_eq!(v6(table, len, src) / 64, word, "{table:?} /{len}");
            }
        }
        let other = 0x2001_0db8_1234_5600_0000_0000_0000_0000u128 ^ 1 << 72;
        assert_ne!(v6(Table::Deny, 128, other) / 64, word);
        let v4 = |len: u8, a: u32| {
            ListKey::new(
                Table::Deny,
                len,
                (a & !(u32::MAX.checked_shr(u32::from(len)).unwrap_or(0))).to_be_bytes(),
            )
            .filter_bit()
        };
        assert_eq!(v4(32, 0xc000_0201) / 64, v4(24, 0xc000_0277) / 64);
    }

    /// A key's bit in its word is not a function of the word: a feed of /56s (as long as
    /// their block) sets bits all over their words, so another /56's test meets a set bit
    /// about as often as the filter's load says. (With the tag mixed in last, a /56 key's
    /// bit followed its word, and such a test met a set bit nine times in ten.)
    #[test]
    fn a_keys_bit_does_not_follow_its_word() {
        let feed: std::collections::HashSet<u32> = (0u128..100_000)
            .map(|i| v6(Table::Deny, 56, 0x2001_0db8_8000u128 << 80 | i << 72))
            .collect();
        let load = feed.len() as f64 / f64::from(LIST_FILTER_BITS);
        let tests = 20_000u128;
        let hits = (0..tests)
            .filter(|i| feed.contains(&v6(Table::Deny, 56, 0x2001_0db8_4000u128 << 80 | i << 72)))
            .count();
        let rate = hits as f64 / tests as f64;
        assert!(rate < 2.0 * load + 0.01, "{rate} of tests hit, load {load}");
    }
}
