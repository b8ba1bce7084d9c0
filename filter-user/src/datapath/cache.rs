//! Userspace's side of the datapath's decision cache (`CACHE`, `CACHE_CTL`; see
//! docs/decision-cache.md): it turns the cache on at load under a fresh seal key, ends every
//! slot (a new generation) after each write that could change a cached decision, empties a
//! source's slot when its verdict is rewritten, and adds the hits a slot holds to the verdict
//! a reader sees.
//!
//! The slots are read and written through a shared mapping of the array (the map is created
//! mmapable): emptying a slot takes the slot's lock exactly as the datapath does, with the
//! same compare-and-swap on its state word, so it can never tear a fill in progress.

use std::{
    collections::HashMap,
    io,
    mem::offset_of,
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering, fence},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Array, IterableMap as _, MapData};
use filter_common::{
    CacheCtl, CacheSlot, SealKey, SlotState, cache_index, cache_key_v4, cache_key_v6, cacheable_v6,
    has_bucket, is_verdict,
};

/// What emptying a source's slot hands back to its entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Handed {
    /// The token bucket (TAT, ns) the slot kept, or 0.
    pub tat_ns: u64,
    /// The verdict hits the slot counted since its fill (not yet in the entry).
    pub hits: u64,
}

/// The cache key of a source; `None` for an IPv4-mapped IPv6 source, which the datapath
/// keeps out of the cache (it would share its IPv4 twin's key).
pub(super) fn key(ip: IpAddr) -> Option<[u64; 2]> {
    match ip {
        IpAddr::V4(a) => Some(cache_key_v4(a.octets())),
        IpAddr::V6(a) => Some(cache_key_v6(a.octets())).filter(|k| cacheable_v6(*k)),
    }
}

/// How long emptying a slot waits for the datapath's lock on it (held for a few instructions;
/// longer only if the holder's program was preempted).
const LOCK_WAIT: Duration = Duration::from_secs(1);

/// The slot array mapped into this process, shared with the kernel.
struct Mapping {
    words: NonNull<AtomicU64>,
    bytes: usize,
    slots: u32,
}

// SAFETY: the mapping is plain shared memory, only ever accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

/// Index of a slot field among the slot's 64-bit words.
const fn word(offset: usize) -> usize {
    offset / size_of::<u64>()
}
const KEY: usize = word(offset_of!(CacheSlot, key));
const META: usize = word(offset_of!(CacheSlot, meta));
const UNTIL: usize = word(offset_of!(CacheSlot, until_jiffies));
const SEAL: usize = word(offset_of!(CacheSlot, seal));
const STATE: usize = word(offset_of!(CacheSlot, state));
const TAT: usize = word(offset_of!(CacheSlot, tat_ns));
const WORDS: usize = size_of::<CacheSlot>() / size_of::<u64>();

impl Mapping {
    fn new(map: &MapData, slots: u32) -> Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (slots as usize * size_of::<CacheSlot>()).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map's whole value area; nothing else is
        // mapped at the address the kernel picks.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mapping the decision cache");
        }
        let words = NonNull::new(ptr.cast()).context("mmap returned null")?;
        Ok(Self {
            words,
            bytes,
            slots,
        })
    }

    /// Word `w` of slot `i`.
    fn word(&self, i: u32, w: usize) -> &AtomicU64 {
        assert!(i < self.slots && w < WORDS);
        // SAFETY: inside the mapping (checked above), 8-byte aligned (the mapping is page
        // aligned and slots are 64 bytes), and only ever accessed atomically.
        unsafe { &*self.words.as_ptr().add(i as usize * WORDS + w) }
    }

    /// Slot `i` as it is at one moment: its state word read before and after its fields and
    /// unchanged (else `None`: the datapath was changing it).
    fn read(&self, i: u32) -> Option<CacheSlot> {
        let state = self.word(i, STATE).load(Ordering::Acquire);
        let mut s = CacheSlot {
            state,
            ..CacheSlot::default()
        };
        s.key = [
            self.word(i, KEY).load(Ordering::Relaxed),
            self.word(i, KEY + 1).load(Ordering::Relaxed),
        ];
        s.meta = self.word(i, META).load(Ordering::Relaxed);
        s.until_jiffies = self.word(i, UNTIL).load(Ordering::Relaxed);
        s.seal = self.word(i, SEAL).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (self.word(i, STATE).load(Ordering::Relaxed) == state).then_some(s)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.words.as_ptr().cast(), self.bytes) };
    }
}

/// The slot array, for reading (the owner and [`super::MapsReader`] alike) and emptying.
///
/// Clones share one mapping: the kernel maps an array's every page at `mmap` time, so each
/// mapping of its own would add the whole array (16 MiB by default) to the daemon's RSS
/// again, though the memory is the kernel's one copy.
#[derive(Clone)]
pub(super) struct Slots {
    mapping: Arc<Mapping>,
    shift: u32,
    seal_key: SealKey,
}

impl Slots {
    /// Maps `slots`; the mapping holds the map in the kernel, so the handle may go.
    fn new(slots: &Array<MapData, CacheSlot>, seal_key: SealKey) -> Result<Self> {
        let shift = CacheCtl::new(slots.len(), 0, seal_key).shift;
        let mapping = Arc::new(Mapping::new(slots.map(), slots.len())?);
        Ok(Self {
            mapping,
            shift,
            seal_key,
        })
    }

    /// Hits of `ip`'s verdict held in its slot, not yet in its entry.
    pub(super) fn pending_hits(&self, ip: IpAddr) -> Result<u64> {
        let Some(k) = key(ip) else { return Ok(0) };
        let i = cache_index(k, self.shift);
        Ok(self
            .mapping
            .read(i)
            .map_or(0, |s| s.pending_hits_of(k, &self.seal_key)))
    }

    /// Every source with verdict hits pending in a slot (what a reader of all verdicts adds).
    pub(super) fn all_pending_hits(&self) -> Result<HashMap<[u64; 2], u64>> {
        let mut out = HashMap::new();
        for i in 0..self.mapping.slots {
            let Some(s) = self.mapping.read(i) else {
                continue;
            };
            let n = s.pending_hits_of(s.key, &self.seal_key);
            if n != 0 {
                out.insert(s.key, n);
            }
        }
        Ok(out)
    }

    /// Empties slot `i` if it holds the source `k`: under the slot's lock, taken and released
    /// as the datapath does, so the hits it counted are taken exactly once. Returns what the
    /// slot held for the source's entry: its token bucket and its pending verdict hits.
    fn empty(&self, i: u32, k: [u64; 2]) -> Result<Handed> {
        let m = &self.mapping;
        let named = |m: &Mapping| {
            m.word(i, KEY).load(Ordering::Relaxed) == k[0]
                && m.word(i, KEY + 1).load(Ordering::Relaxed) == k[1]
        };
        if !named(m) {
            return Ok(Handed::default());
        }
        let state = m.word(i, STATE);
        let deadline = Instant::now() + LOCK_WAIT;
        let from = loop {
            let w = SlotState(state.load(Ordering::Acquire));
            if !w.locked()
                && state
                    .compare_exchange(w.0, w.lock().0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                break w;
            }
            if Instant::now() > deadline {
                bail!("slot {i} of the decision cache stays locked");
            }
            std::thread::yield_now();
        };
        if !named(m) {
            // Another source's by now: left as it was.
            state.store(from.0, Ordering::Release);
            return Ok(Handed::default());
        }
        let meta = m.word(i, META).load(Ordering::Relaxed);
        let tat = m.word(i, TAT).load(Ordering::Relaxed);
        for w in [KEY, KEY + 1, META, UNTIL, SEAL] {
            m.word(i, w).store(0, Ordering::Relaxed);
        }
        state.store(from.refilled(0).0, Ordering::Release);
        let decision = (meta >> 32) as u8;
        Ok(Handed {
            tat_ns: if has_bucket(decision) { tat } else { 0 },
            hits: if is_verdict(decision) { from.hits() } else { 0 },
        })
    }
}

/// The owner's handle: slots and control word.
pub(super) struct Cache {
    pub(super) slots: Slots,
    ctl: Array<MapData, CacheCtl>,
    current: CacheCtl,
}

impl Cache {
    /// Turns the cache on, under a generation no slot carries and a seal key drawn now (the
    /// maps are fresh at load).
    pub(super) fn new(
        slots: Array<MapData, CacheSlot>,
        ctl: Array<MapData, CacheCtl>,
    ) -> Result<Self> {
        let seal_key = fresh_seal_key()?;
        let current = CacheCtl::new(slots.len(), 1, seal_key);
        let mut cache = Self {
            slots: Slots::new(&slots, seal_key)?,
            ctl,
            current,
        };
        cache.write()?;
        Ok(cache)
    }

    fn write(&mut self) -> Result<()> {
        self.ctl
            .set(0, self.current, 0)
            .context("writing the decision cache's generation")
    }

    /// Ends every slot: the next SYN of each source reads its entry again. Called after the
    /// write that changed what a decision depends on, never before.
    pub(super) fn invalidate(&mut self) -> Result<()> {
        self.current.generation = self.current.generation.wrapping_add(1).max(1);
        self.write()
    }

    /// Empties `ip`'s slot if it holds `ip`. Returns what the slot kept for `ip` — its token
    /// bucket and the verdict hits it counted — which the caller carries into the entry it
    /// is about to write.
    pub(super) fn evict(&mut self, ip: IpAddr) -> Result<Handed> {
        let Some(k) = key(ip) else {
            return Ok(Handed::default());
        };
        self.slots.empty(cache_index(k, self.slots.shift), k)
    }
}

/// 256 bits from the kernel's random source: what makes the seal unpredictable to senders.
fn fresh_seal_key() -> Result<SealKey> {
    let mut key: SealKey = [0; 8];
    let bytes = size_of::<SealKey>();
    // SAFETY: `key` is `bytes` writable bytes.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), bytes, 0) };
    if usize::try_from(n).ok() != Some(bytes) {
        return Err(io::Error::last_os_error()).context("drawing the decision cache's seal key");
    }
    Ok(key)
}
