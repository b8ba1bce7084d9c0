//! The decision cache (`CACHE`, value [`CacheSlot`]; `CACHE_CTL`, value [`CacheCtl`]): a
//! direct-mapped array in front of the per-source hash, one cache line per slot, so that a
//! source whose decision is cached costs one load of one line instead of a hash lookup
//! (bucket, element, then the value in the element's second line: three dependent cache
//! misses under a flood from many sources).
//!
//! A slot is indexed by a hash of the source address ([`cache_index`]) and holds a copy of
//! the decision its [`crate::Peer`] entry caches: the address, the decision, its deadline,
//! the cache generation it was copied under, and a seal over all of that. The datapath uses a
//! slot only when address, generation, deadline and seal all agree; otherwise it falls back
//! to the per-source entry, which stays the truth, and copies its decision into the slot.
//!
//! - Generation: userspace bumps `CacheCtl::generation` after every write that could change a
//!   cached decision (a verdict written or removed, a list or config change), so a slot never
//!   outlives its cause. The datapath reads the generation before the per-source entry, so a
//!   copy made from an entry that userspace replaced meanwhile carries the old generation.
//! - Seal: slots are shared by all CPUs and a copy is several stores, so a reader can meet a
//!   slot half written by another CPU (two sources colliding in one slot). The seal mixes
//!   every field a decision depends on; a torn slot fails it and is not used.
//! - Hits and token bucket: a verdict's hit counter and a limit's TAT advance in the slot
//!   while it is used (`hits`, `tat_ns`) and go back into the per-source entry when the slot
//!   is taken over; userspace adds a slot's pending hits when it reads a verdict
//!   ([`CacheSlot::pending_hits_of`]).

use crate::Decision;

/// The multiplier of the index hash (2^64 / φ, odd).
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
/// Mixed into every seal, so an all-zero slot is never sealed.
const SEAL: u64 = 0x6d78_7363_7265_656e;

/// The cache's control word: userspace writes it, the datapath reads it on every subject SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCtl {
    /// Slots are valid only under this generation (never 0 once enabled).
    pub generation: u32,
    /// `64 - log2(slots)`: the index is the hash's top bits. 0 = the cache is off (every SYN
    /// takes the per-source entry).
    pub shift: u32,
}

impl CacheCtl {
    /// The control word for `slots` slots (a power of two ≥ 2) under generation `gen`.
    pub const fn new(slots: u32, generation: u32) -> Self {
        Self {
            generation,
            shift: 64 - slots.trailing_zeros(),
        }
    }
}

/// One slot: exactly one cache line (the array is mmapable, so slots are line-aligned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSlot {
    /// The source ([`cache_key_v4`], [`cache_key_v6`]).
    pub key: [u64; 2],
    /// Generation (bits 0–31), [`Decision`] (32–39), `HITS` slot of the deciding list entry
    /// (40–63).
    pub meta: u64,
    /// The decision holds while jiffies are below this (as `Peer::until_jiffies`).
    pub until_jiffies: u64,
    /// [`seal`] of the fields above.
    pub seal: u64,
    /// Hits of a verdict decision since the slot was filled, not yet in the entry.
    pub hits: u64,
    /// A limit decision's token bucket (TAT, ns) while the slot is used.
    pub tat_ns: u64,
    pub _spare: u64,
}

/// The most `HITS` slots a cache slot can name (24 bits; map sizes stop at 16M).
pub const CACHE_MAX_HIT_SLOT: u32 = (1 << 24) - 1;

/// The seal of a slot's fields: a torn mix of two slots' fields fails it.
#[inline(always)]
pub const fn seal(key: [u64; 2], meta: u64, until_jiffies: u64) -> u64 {
    key[0] ^ key[1].rotate_left(16) ^ meta.rotate_left(32) ^ until_jiffies.rotate_left(48) ^ SEAL
}

/// An IPv4 source as a cache key: the IPv4-mapped IPv6 address (::ffff:a.b.c.d), so the two
/// families never share a key and the family can be told from it.
#[inline(always)]
pub const fn cache_key_v4(addr: [u8; 4]) -> [u64; 2] {
    [0, 0xffff_0000 | (u32::from_le_bytes(addr) as u64) << 32]
}

/// An IPv6 source as a cache key: its 16 bytes as two little-endian words. An IPv4-mapped
/// source (::ffff:a.b.c.d, which RFC 4291 keeps off the wire, but a frame can carry anything)
/// would get its IPv4 twin's key: [`cacheable_v6`] keeps it out of the cache on both sides.
#[inline(always)]
pub const fn cache_key_v6(addr: [u8; 16]) -> [u64; 2] {
    let [
        a0,
        a1,
        a2,
        a3,
        a4,
        a5,
        a6,
        a7,
        b0,
        b1,
        b2,
        b3,
        b4,
        b5,
        b6,
        b7,
    ] = addr;
    [
        u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
    ]
}

/// The IPv4 address of a key made by [`cache_key_v4`], if it is one.
#[inline(always)]
pub const fn cache_key_as_v4(key: [u64; 2]) -> Option<[u8; 4]> {
    if key[0] == 0 && key[1] as u32 == 0xffff_0000 {
        Some(((key[1] >> 32) as u32).to_le_bytes())
    } else {
        None
    }
}

/// Whether an IPv6 source may use the cache: every one but the IPv4-mapped.
#[inline(always)]
pub const fn cacheable_v6(key: [u64; 2]) -> bool {
    cache_key_as_v4(key).is_none()
}

/// The IPv6 address of a key made by [`cache_key_v6`].
#[inline(always)]
pub const fn cache_key_as_v6(key: [u64; 2]) -> [u8; 16] {
    let (a, b) = (key[0].to_le_bytes(), key[1].to_le_bytes());
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

/// The slot of `key` for a cache with control word `shift` (not 0): two multiplicative
/// rounds, so that addresses differing only in a few low bits (a /64's hosts, a block of
/// IPv4 bots) spread over the whole array.
#[inline(always)]
pub const fn cache_index(key: [u64; 2], shift: u32) -> u32 {
    let x = (key[0] ^ key[1]).wrapping_mul(PHI);
    ((x ^ (x >> 32)).wrapping_mul(PHI) >> shift) as u32
}

impl CacheSlot {
    /// A sealed slot holding `decision` for `key`.
    #[inline(always)]
    pub const fn new(
        key: [u64; 2],
        generation: u32,
        decision: u8,
        hit_slot: u32,
        until_jiffies: u64,
        tat_ns: u64,
    ) -> Self {
        let meta = generation as u64
            | (decision as u64) << 32
            | ((hit_slot & CACHE_MAX_HIT_SLOT) as u64) << 40;
        Self {
            key,
            meta,
            until_jiffies,
            seal: seal(key, meta, until_jiffies),
            hits: 0,
            tat_ns,
            _spare: 0,
        }
    }

    /// Whether the fields agree with the seal (the slot was not read half written).
    #[inline(always)]
    pub const fn sealed(&self) -> bool {
        self.seal == seal(self.key, self.meta, self.until_jiffies)
    }

    #[inline(always)]
    pub const fn generation(&self) -> u32 {
        self.meta as u32
    }

    /// The [`Decision`] as u8.
    #[inline(always)]
    pub const fn decision(&self) -> u8 {
        (self.meta >> 32) as u8
    }

    /// The `HITS` slot of the deciding list entry.
    #[inline(always)]
    pub const fn hit_slot(&self) -> u32 {
        (self.meta >> 40) as u32
    }

    /// Whether the slot holds a decision whose state (a verdict's hits, a limit's token
    /// bucket) must go back into the per-source entry when the slot is taken over.
    #[inline(always)]
    pub const fn owes_state(&self) -> bool {
        let d = self.decision();
        self.hits != 0 || d == Decision::VerdictLimit as u8 || d == Decision::ListLimit as u8
    }

    /// The hits this slot holds for the verdict of the source `key`, not yet in its entry.
    #[inline(always)]
    pub const fn pending_hits_of(&self, key: [u64; 2]) -> u64 {
        let d = self.decision();
        let verdict = d == Decision::VerdictPass as u8
            || d == Decision::VerdictDrop as u8
            || d == Decision::VerdictLimit as u8;
        if verdict && self.key[0] == key[0] && self.key[1] == key[1] && self.sealed() {
            self.hits
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 4] = [198, 51, 100, 7];
    const V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(size_of::<CacheSlot>(), 64);
        assert_eq!(size_of::<CacheCtl>(), 8);
    }

    #[test]
    fn keys_round_trip_and_the_families_never_share_one_but_through_the_mapped_form() {
        assert_eq!(cache_key_as_v4(cache_key_v4(V4)), Some(V4));
        assert_eq!(cache_key_as_v4(cache_key_v6(V6)), None);
        assert_eq!(cache_key_as_v6(cache_key_v6(V6)), V6);
        assert!(cacheable_v6(cache_key_v6(V6)));
        // ::ffff:198.51.100.7 is the one IPv6 source with an IPv4 key: kept out.
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&V4);
        assert_eq!(cache_key_v6(mapped), cache_key_v4(V4));
        assert!(!cacheable_v6(cache_key_v6(mapped)));
    }

    #[test]
    fn the_seal_fails_when_any_sealed_field_changes() {
        let s = CacheSlot::new(cache_key_v6(V6), 7, Decision::VerdictDrop as u8, 3, 1000, 5);
        assert!(s.sealed());
        assert_eq!(
            (s.generation(), s.decision(), s.hit_slot()),
            (7, Decision::VerdictDrop as u8, 3)
        );
        let edits: [fn(&mut CacheSlot); 5] = [
            |s| s.key[0] ^= 1,
            |s| s.key[1] ^= 1 << 63,
            |s| s.meta ^= 1 << 32,
            |s| s.until_jiffies += 1,
            |s| s.seal ^= 1,
        ];
        for edit in edits {
            let mut t = s;
            edit(&mut t);
            assert!(!t.sealed());
        }
        // Hits and the token bucket move while the slot is in use: not sealed.
        let mut t = s;
        t.hits += 1;
        t.tat_ns += 1;
        assert!(t.sealed());
        assert!(
            !CacheSlot::default().sealed(),
            "an empty slot is never used"
        );
    }

    #[test]
    fn pending_hits_belong_to_a_verdict_of_the_same_source() {
        let key = cache_key_v4(V4);
        let mut s = CacheSlot::new(key, 1, Decision::VerdictPass as u8, 0, u64::MAX, 0);
        s.hits = 4;
        assert_eq!(s.pending_hits_of(key), 4);
        assert_eq!(s.pending_hits_of(cache_key_v6(V6)), 0);
        let mut deny = CacheSlot::new(key, 1, Decision::Deny as u8, 9, u64::MAX, 0);
        deny.hits = 4;
        assert_eq!(deny.pending_hits_of(key), 0, "list hits live in HITS");
        let limit = CacheSlot::new(key, 1, Decision::ListLimit as u8, 9, u64::MAX, 0);
        assert!(
            limit.owes_state(),
            "a token bucket goes back even without hits"
        );
    }

    #[test]
    fn indexes_stay_in_range_and_spread_a_block_of_neighbours() {
        let ctl = CacheCtl::new(4096, 1);
        assert_eq!(ctl.shift, 64 - 12);
        let mut used = [false; 4096];
        for h in 0..1024u16 {
            let mut a = V6;
            a[14..].copy_from_slice(&h.to_be_bytes());
            let i = cache_index(cache_key_v6(a), ctl.shift) as usize;
            used[i] = true;
        }
        // 1,024 hosts of one /64 in 4,096 slots: a random spread fills ~903 distinct slots.
        assert!(used.iter().filter(|u| **u).count() > 850);
    }
}
