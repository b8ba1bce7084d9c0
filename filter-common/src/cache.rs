//! The decision cache (`CACHE`, value [`CacheSlot`]; `CACHE_CTL`, value [`CacheCtl`]): a
//! direct-mapped array in front of the per-source entries, one cache line per slot, so that a
//! source whose decision is cached costs one line instead of a hash lookup. A slot holds a
//! copy of one source's decision, sealed with a per-load secret key, plus a state word (lock,
//! fill tag, pending hits) that every change of the slot goes through. docs/decision-cache.md
//! explains the slot, the seal, the generations, how hits and buckets go back to their
//! source, and the rules that keep two CPUs from applying each other's decision.

use crate::Decision;

/// The multiplier of the index hash (2^64 / φ, odd).
const PHI: u64 = 0x9E37_79B9_7F4A_7C15;
/// Added to every seal, so that a slot of zeros is not sealed under a key of zeros.
const SEAL: u64 = 0x6d78_7363_7265_656e;

/// The secret the seal is keyed with: 256 random bits userspace draws at each load and writes
/// into [`CacheCtl`] (the datapath never learns a new one while it runs).
pub type SealKey = [u32; 8];

/// The cache's control word: userspace writes it, the datapath reads it on every subject SYN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCtl {
    /// Slots are valid only under this generation (never 0 once enabled).
    pub generation: u32,
    /// `64 - log2(slots)`: the index is the hash's top bits. 0 = the cache is off (every SYN
    /// takes the per-source entry).
    pub shift: u32,
    /// The seal's key.
    pub seal_key: SealKey,
}

impl CacheCtl {
    /// The control word for `slots` slots (a power of two ≥ 2) under generation `gen`.
    pub const fn new(slots: u32, generation: u32, seal_key: SealKey) -> Self {
        Self {
            generation,
            shift: 64 - slots.trailing_zeros(),
            seal_key,
        }
    }
}

/// One slot: exactly one cache line (the array is mmapable, so slots are line-aligned).
///
/// `key`, `meta` and `until_jiffies` are the decision; `seal` binds them to each other and to
/// the fill tag in `state`; `state` and `tat_ns` are what using the decision changes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheSlot {
    /// The source ([`cache_key_v4`], [`cache_key_v6`]).
    pub key: [u64; 2],
    /// Generation (bits 0–31), [`Decision`] (32–39), `HITS` slot of the deciding list entry
    /// (40–63): [`cache_meta`].
    pub meta: u64,
    /// The decision holds while jiffies are below this (as `Peer::until_jiffies`).
    pub until_jiffies: u64,
    /// [`seal`] of the fields above and of the fill tag of `state`.
    pub seal: u64,
    /// A [`SlotState`]: lock bit, fill tag, the verdict hits counted here since the fill.
    pub state: u64,
    /// A limit decision's token bucket (GCRA TAT, ns); changed only under the lock.
    pub tat_ns: u64,
    pub _spare: u64,
}

/// The most `HITS` slots a cache slot can name (24 bits; map sizes stop at 16M).
pub const CACHE_MAX_HIT_SLOT: u32 = (1 << 24) - 1;

/// A slot's `meta` word.
#[inline(always)]
pub const fn cache_meta(generation: u32, decision: u8, hit_slot: u32) -> u64 {
    generation as u64 | (decision as u64) << 32 | ((hit_slot & CACHE_MAX_HIT_SLOT) as u64) << 40
}

/// One word of the NH hash: its halves, each plus a key half (mod 2^32), multiplied.
#[inline(always)]
const fn nh(word: u64, a: u32, b: u32) -> u64 {
    ((word as u32).wrapping_add(a) as u64)
        .wrapping_mul(((word >> 32) as u32).wrapping_add(b) as u64)
}

/// An odd 64-bit multiplier made of two key words.
#[inline(always)]
const fn odd(lo: u32, hi: u32) -> u64 {
    (hi as u64) << 32 | lo as u64 | 1
}

/// The seal of a slot's decision fields under fill tag `tag` and key `k`.
///
/// The source's address (what a sender picks) goes through NH, the hash of UMAC: for two
/// different addresses, the chance over the key that their NH sums differ by any given amount
/// is at most 2^-32, and senders never see the key. `meta` and `until_jiffies` (what the
/// datapath picks) are each multiplied by an odd key word: a change in either alone always
/// changes the seal. So a slot mixed from two fills — one source's address with another's
/// decision, or a decision with another fill's deadline — passes only by chance.
#[inline(always)]
pub const fn seal(key: [u64; 2], meta: u64, until_jiffies: u64, tag: u32, k: &SealKey) -> u64 {
    nh(key[0], k[0], k[1])
        .wrapping_add(nh(key[1], k[2], k[3]))
        .wrapping_add(meta.wrapping_mul(odd(k[4], k[5])))
        .wrapping_add(until_jiffies.wrapping_mul(odd(k[6], k[7])))
        .wrapping_add(tag as u64)
        .wrapping_add(SEAL)
}

/// A slot's state word: `LOCKED` (bit 63), the fill tag (bits 40–62) and the verdict hits
/// counted in the slot since that fill (bits 0–39).
///
/// Whoever changes the slot's decision or its bucket holds the lock (set with a
/// compare-and-swap from an unlocked word); a new decision is released under the next tag.
/// A verdict hit is counted with a compare-and-swap from the unlocked word the counting CPU
/// read with the decision, so it lands in the fill it was decided by or nowhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotState(pub u64);

impl SlotState {
    pub const LOCKED: u64 = 1 << 63;
    const TAG_SHIFT: u32 = 40;
    const TAG_MASK: u64 = (1 << 23) - 1;
    /// The most hits a fill counts; past it the next hit goes to the source's entry.
    pub const MAX_HITS: u64 = (1 << Self::TAG_SHIFT) - 1;

    /// An unlocked state: fill `tag`, `hits` counted.
    #[inline(always)]
    pub const fn new(tag: u32, hits: u64) -> Self {
        Self(((tag as u64) & Self::TAG_MASK) << Self::TAG_SHIFT | (hits & Self::MAX_HITS))
    }

    #[inline(always)]
    pub const fn locked(self) -> bool {
        self.0 & Self::LOCKED != 0
    }

    /// This state with the lock taken.
    #[inline(always)]
    pub const fn lock(self) -> Self {
        Self(self.0 | Self::LOCKED)
    }

    #[inline(always)]
    pub const fn tag(self) -> u32 {
        ((self.0 >> Self::TAG_SHIFT) & Self::TAG_MASK) as u32
    }

    #[inline(always)]
    pub const fn hits(self) -> u64 {
        self.0 & Self::MAX_HITS
    }

    /// The unlocked state after a new fill that counted `hits` of its own.
    #[inline(always)]
    pub const fn refilled(self, hits: u64) -> Self {
        Self::new(self.tag().wrapping_add(1), hits)
    }

    /// The unlocked state of the same fill with `more` hits counted.
    #[inline(always)]
    pub const fn counted(self, more: u64) -> Self {
        Self::new(self.tag(), self.hits().wrapping_add(more))
    }
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
    /// A sealed, unlocked slot holding `decision` for `key`, as fill `tag` with no hits.
    #[inline(always)]
    pub const fn new(
        key: [u64; 2],
        meta: u64,
        until_jiffies: u64,
        tag: u32,
        tat_ns: u64,
        seal_key: &SealKey,
    ) -> Self {
        Self {
            key,
            meta,
            until_jiffies,
            seal: seal(key, meta, until_jiffies, tag, seal_key),
            state: SlotState::new(tag, 0).0,
            tat_ns,
            _spare: 0,
        }
    }

    #[inline(always)]
    pub const fn state(&self) -> SlotState {
        SlotState(self.state)
    }

    /// Whether the decision fields agree with the seal under the state's fill tag (the slot
    /// was not read half written, nor mixed from two fills).
    #[inline(always)]
    pub const fn sealed(&self, k: &SealKey) -> bool {
        self.seal
            == seal(
                self.key,
                self.meta,
                self.until_jiffies,
                self.state().tag(),
                k,
            )
    }

    /// Whether the slot holds a whole, unlocked fill for the source `key` (of any generation).
    #[inline(always)]
    pub const fn holds(&self, key: [u64; 2], k: &SealKey) -> bool {
        self.key[0] == key[0] && self.key[1] == key[1] && !self.state().locked() && self.sealed(k)
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

    /// The hits this slot holds for the verdict of the source `key`, not yet in its entry.
    #[inline(always)]
    pub const fn pending_hits_of(&self, key: [u64; 2], k: &SealKey) -> u64 {
        if is_verdict(self.decision()) && self.holds(key, k) {
            self.state().hits()
        } else {
            0
        }
    }
}

/// Whether a decision counts its hits in the source's verdict (in a slot's state word while
/// it is cached there).
#[inline(always)]
pub const fn is_verdict(decision: u8) -> bool {
    decision == Decision::VerdictPass as u8
        || decision == Decision::VerdictDrop as u8
        || decision == Decision::VerdictLimit as u8
}

/// Whether a decision keeps a token bucket.
#[inline(always)]
pub const fn has_bucket(decision: u8) -> bool {
    decision == Decision::VerdictLimit as u8 || decision == Decision::ListLimit as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 4] = [198, 51, 100, 7];
    const V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
    const K: SealKey = [
        0x9e37_79b9,
        0x7f4a_7c15,
        0xf39c_c060,
        0x5ced_c834,
        0x1082_276b,
        0xf3a2_7251,
        0xf86c_6a11,
        0xd0c1_8e95,
    ];

    #[test]
    fn a_slot_is_one_cache_line() {
        assert_eq!(size_of::<CacheSlot>(), 64);
        assert_eq!(size_of::<CacheCtl>(), 8 + 32);
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

    fn slot() -> CacheSlot {
        let m = cache_meta(7, Decision::VerdictDrop as u8, 3);
        CacheSlot::new(cache_key_v6(V6), m, 1000, 41, 5, &K)
    }

    #[test]
    fn the_seal_fails_when_any_sealed_field_or_the_fill_tag_changes() {
        let s = slot();
        assert!(s.sealed(&K) && s.holds(cache_key_v6(V6), &K));
        assert_eq!(
            (s.generation(), s.decision(), s.hit_slot(), s.state().tag()),
            (7, Decision::VerdictDrop as u8, 3, 41)
        );
        let edits: [fn(&mut CacheSlot); 7] = [
            |s| s.key[0] ^= 1,
            |s| s.key[1] ^= 1 << 63,
            |s| s.meta ^= 1 << 32,
            |s| s.until_jiffies += 1,
            |s| s.seal ^= 1,
            |s| s.state = SlotState::new(42, 0).0,
            |s| s.state = s.state().refilled(0).0,
        ];
        for edit in edits {
            let mut t = s;
            edit(&mut t);
            assert!(!t.sealed(&K));
        }
        // Hits and the token bucket move while the slot is in use: not sealed.
        let mut t = s;
        t.state = t.state().counted(3).0;
        t.tat_ns += 1;
        assert!(t.sealed(&K));
        // Locked, it is whole but nobody's to use.
        t.state = t.state().lock().0;
        assert!(t.sealed(&K) && !t.holds(cache_key_v6(V6), &K));
        // Another key, another seal.
        let mut other = K;
        other[5] ^= 1;
        assert!(!s.sealed(&other));
        assert!(
            !CacheSlot::default().sealed(&[0; 8]),
            "a slot of zeros is never sealed"
        );
    }

    /// The pair of issue 18: two addresses of one /48 in one slot of the default cache whose
    /// keys the old, linear seal (`k0 ^ rotl16(k1) ^ …`) could not tell apart, so that a slot
    /// holding one's address and the other's decision passed it. Keyed, they differ.
    #[test]
    fn a_pair_crafted_against_a_linear_seal_gets_two_seals() {
        let a = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 1, 0, 0, 0, 0, 0, 3, 0x2e, 0x15,
        ];
        let b = [
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0x24, 0, 0, 0, 0, 0, 0x26, 0x2e, 0x15,
        ];
        let (ka, kb) = (cache_key_v6(a), cache_key_v6(b));
        assert_eq!(ka[0] ^ ka[1].rotate_left(16), kb[0] ^ kb[1].rotate_left(16));
        assert_eq!(cache_index(ka, 64 - 18), cache_index(kb, 64 - 18));
        let m = cache_meta(9, Decision::VerdictDrop as u8, 0);
        for i in 0..64u32 {
            let mut k = K;
            k[(i % 8) as usize] = k[(i % 8) as usize].rotate_left(i);
            assert_ne!(seal(ka, m, 77, 5, &k), seal(kb, m, 77, 5, &k));
        }
    }

    #[test]
    fn the_state_word_keeps_lock_tag_and_hits_apart() {
        let s = SlotState::new(SlotState::TAG_MASK as u32, SlotState::MAX_HITS);
        assert!(!s.locked());
        assert_eq!(
            (s.tag() as u64, s.hits()),
            (SlotState::TAG_MASK, SlotState::MAX_HITS)
        );
        assert!(s.lock().locked() && s.lock().tag() == s.tag());
        // The tag wraps within its bits, and a refill starts its own count.
        let r = s.lock().refilled(1);
        assert_eq!((r.locked(), r.tag(), r.hits()), (false, 0, 1));
        assert_eq!(r.counted(2).hits(), 3);
    }

    #[test]
    fn pending_hits_belong_to_a_verdict_of_the_same_source() {
        let key = cache_key_v4(V4);
        let pass = cache_meta(1, Decision::VerdictPass as u8, 0);
        let mut s = CacheSlot::new(key, pass, u64::MAX, 1, 0, &K);
        s.state = s.state().counted(4).0;
        assert_eq!(s.pending_hits_of(key, &K), 4);
        assert_eq!(s.pending_hits_of(cache_key_v6(V6), &K), 0);
        let mut deny = CacheSlot::new(
            key,
            cache_meta(1, Decision::Deny as u8, 9),
            u64::MAX,
            1,
            0,
            &K,
        );
        deny.state = deny.state().counted(4).0;
        assert_eq!(deny.pending_hits_of(key, &K), 0, "list hits live in HITS");
        assert!(has_bucket(Decision::ListLimit as u8) && !has_bucket(Decision::Deny as u8));
    }

    #[test]
    fn indexes_stay_in_range_and_spread_a_block_of_neighbours() {
        let ctl = CacheCtl::new(4096, 1, K);
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
