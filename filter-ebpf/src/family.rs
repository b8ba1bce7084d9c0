//! What differs between IPv4 and IPv6 sources — the maps, the key width, how to clear host
//! bits — behind one trait, so the decision is written once for both.

use aya_ebpf::maps::{HashMap, LruHashMap};
use filter_common::{
    FAMILY_V4, FAMILY_V6, ListIndex, ListKey, ListValue, Peer, cache_key_v4, cache_key_v6,
    filter_bit_v4, filter_bit_v6, top_bits,
};

use crate::maps;

pub trait Family {
    type Addr: Copy + 'static;
    /// `FAMILY_V4` or `FAMILY_V6`, as events carry it.
    const FAMILY: u8;
    /// Sources with a verdict (created by userspace only).
    fn peers() -> &'static LruHashMap<Self::Addr, Peer>;
    /// Sources without one the datapath keeps state for (created by the datapath only).
    fn seen() -> &'static LruHashMap<Self::Addr, Peer>;
    fn lists() -> &'static HashMap<ListKey<Self::Addr>, ListValue>;
    /// The lengths table `table` uses: how many, and the array (longest first).
    fn lengths(index: &ListIndex, table: usize) -> (usize, &[u8]);
    /// `addr` with every bit past `len` cleared, and the list filter's bit of the key
    /// (`table`, `len`, that network).
    fn masked(addr: Self::Addr, len: u8, table: u8) -> (Self::Addr, u32);
    /// The address in an event's 16-byte form.
    fn wide(addr: Self::Addr) -> [u8; 16];
    /// The address as a decision-cache key.
    fn cache_key(addr: Self::Addr) -> [u64; 2];
}

pub struct V4;
pub struct V6;

impl Family for V4 {
    type Addr = [u8; 4];
    const FAMILY: u8 = FAMILY_V4;

    #[inline(always)]
    fn peers() -> &'static LruHashMap<[u8; 4], Peer> {
        &maps::PEERS_V4
    }

    #[inline(always)]
    fn seen() -> &'static LruHashMap<[u8; 4], Peer> {
        &maps::SEEN_V4
    }

    #[inline(always)]
    fn lists() -> &'static HashMap<ListKey<[u8; 4]>, ListValue> {
        &maps::LISTS_V4
    }

    #[inline(always)]
    fn lengths(index: &ListIndex, table: usize) -> (usize, &[u8]) {
        match index.v4.get(table) {
            Some(l) => (l.count as usize, &l.lens),
            None => (0, &[]),
        }
    }

    #[inline(always)]
    fn masked(addr: [u8; 4], len: u8, table: u8) -> ([u8; 4], u32) {
        // The top 32 bits of the 64-bit mask are the 32-bit one.
        let mask = (top_bits(len.min(32)) >> 32) as u32;
        let net = u32::from_be_bytes(addr) & mask;
        (net.to_be_bytes(), filter_bit_v4(table, len, net))
    }

    #[inline(always)]
    fn wide(addr: [u8; 4]) -> [u8; 16] {
        // The address in the first four bytes, the rest zero: built as one integer, where a
        // zeroed array would cost a call to a byte-by-byte memset (see `crate::zeroed`).
        (u128::from(u32::from_be_bytes(addr)) << 96).to_be_bytes()
    }

    #[inline(always)]
    fn cache_key(addr: [u8; 4]) -> [u64; 2] {
        cache_key_v4(addr)
    }
}

impl Family for V6 {
    type Addr = [u8; 16];
    const FAMILY: u8 = FAMILY_V6;

    #[inline(always)]
    fn peers() -> &'static LruHashMap<[u8; 16], Peer> {
        &maps::PEERS_V6
    }

    #[inline(always)]
    fn seen() -> &'static LruHashMap<[u8; 16], Peer> {
        &maps::SEEN_V6
    }

    #[inline(always)]
    fn lists() -> &'static HashMap<ListKey<[u8; 16]>, ListValue> {
        &maps::LISTS_V6
    }

    #[inline(always)]
    fn lengths(index: &ListIndex, table: usize) -> (usize, &[u8]) {
        match index.v6.get(table) {
            Some(l) => (l.count as usize, &l.lens),
            None => (0, &[]),
        }
    }

    #[inline(always)]
    fn masked(addr: [u8; 16], len: u8, table: u8) -> ([u8; 16], u32) {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&addr[..8]);
        lo.copy_from_slice(&addr[8..]);
        let hi = u64::from_be_bytes(hi) & top_bits(len);
        let lo = u64::from_be_bytes(lo) & top_bits(len.saturating_sub(64));
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&hi.to_be_bytes());
        out[8..].copy_from_slice(&lo.to_be_bytes());
        (out, filter_bit_v6(table, len, hi, lo))
    }

    #[inline(always)]
    fn wide(addr: [u8; 16]) -> [u8; 16] {
        addr
    }

    #[inline(always)]
    fn cache_key(addr: [u8; 16]) -> [u64; 2] {
        cache_key_v6(addr)
    }
}
