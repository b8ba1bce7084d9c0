//! The lookup budget: a bounded queue that coalesces duplicate addresses, a token bucket for
//! evaluations per second, and (in the engine) a semaphore for evaluations in flight.
//!
//! The queue has two classes ([`Class`]) so that a flood of spoofed one-SYN sources cannot
//! spend the budget a real sender needs: proven-real sources (a retransmitted SYN, a source
//! that came back, one the MTA asked about) are evaluated first; first SYNs after them,
//! newest first, and only while their sender has not yet retransmitted. A source turned away
//! is remembered nowhere: its next SYN's event makes it eligible again.
//!
//! Memory is bounded whatever the peer rate: at most `queue_len` proven-real and
//! `max_lookups_per_sec` first-SYN addresses queued, at most `max_inflight` running
//! evaluations, and the set used for coalescing holds exactly those.
use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// What [`Engine::submit`](super::Engine::submit) did with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submit {
    /// Queued; its verdict will arrive on the verdict channel.
    Queued,
    /// Already queued or being evaluated; its one verdict will arrive on the channel.
    Coalesced,
    /// Over budget: the proven-real queue is full. The peer stays unknown; the datapath
    /// reports it again at its next SYN, and the daemon releases it if it was held.
    Rejected,
}

/// Token bucket: `rate` tokens per second, holding at most `rate` (one second of burst).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(per_sec: u32) -> Self {
        let rate = f64::from(per_sec.max(1));
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    pub fn set_rate(&mut self, per_sec: u32) {
        self.refill(Instant::now());
        self.rate = f64::from(per_sec.max(1));
        self.tokens = self.tokens.min(self.rate);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
    }

    /// Returns a token taken for nothing (the queue held only expired entries).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.rate);
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Waits for a token from a shared bucket.
pub async fn take_token(bucket: &Mutex<TokenBucket>) {
    loop {
        let wait = match bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_take(Instant::now())
        {
            Ok(()) => return,
            Err(wait) => wait,
        };
        tokio::time::sleep(wait).await;
    }
}

/// Which class a queued address waits in: the budget is spent on proven-real senders first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Proven to have a real TCP stack: it retransmitted its SYN while held, came back after
    /// its verdict or dedup window, or the MTA asked about it. A spoofed flood's sources do
    /// none of these. Evaluated first, oldest first.
    Real,
    /// A source's first SYN: a real sender or a spoofed one, nothing tells them apart yet.
    /// Evaluated when no real one waits, newest first, and only while younger than
    /// [`FIRST_MAX_AGE`]: an older one's sender (if real) has retransmitted by then and
    /// comes back as [`Class::Real`].
    First,
}

/// How long a first-SYN event stays worth evaluating: TCP retransmits an unanswered SYN
/// after 1 s, and that retransmit is a proven-real event of its own.
pub const FIRST_MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// Proven-real addresses, oldest at the front.
    real: VecDeque<IpAddr>,
    /// First-SYN addresses with when their SYN was seen, newest at the back.
    first: VecDeque<(IpAddr, Instant)>,
    /// Queued (either class) or being evaluated: a second submit of one of these is
    /// coalesced (or promotes it to [`Class::Real`]).
    pending: HashSet<IpAddr>,
    /// Most proven-real addresses queued; beyond, they are rejected.
    capacity: usize,
    /// Most first-SYN addresses queued; beyond, the oldest makes room for the newest.
    first_capacity: usize,
    /// First-SYN addresses dropped unevaluated: too old, or made room for newer ones.
    expired: u64,
}

impl State {
    fn forget_first(&mut self, ip: IpAddr) {
        self.pending.remove(&ip);
        self.expired += 1;
    }
}

/// The bounded, coalescing two-class queue of addresses waiting for an evaluation.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    ready: Notify,
}

impl Queue {
    /// `capacity` proven-real addresses and `first_capacity` first-SYN ones.
    pub fn new(capacity: usize, first_capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                capacity,
                first_capacity,
                ..State::default()
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_capacity(&self, capacity: usize, first_capacity: usize) {
        let mut s = self.state();
        s.capacity = capacity;
        s.first_capacity = first_capacity;
    }

    /// Queues `ip` in `class`; `seen` is when its SYN was seen (the age bound of
    /// [`Class::First`]). A proven-real submit of an address waiting as a first SYN moves it
    /// to the real class.
    pub fn submit(&self, ip: IpAddr, class: Class, seen: Instant) -> Submit {
        let mut s = self.state();
        if s.pending.contains(&ip) {
            let waiting_first = s.first.iter().position(|(a, _)| *a == ip);
            match (class, waiting_first) {
                (Class::Real, Some(i)) if s.real.len() < s.capacity => {
                    s.first.remove(i);
                    s.real.push_back(ip);
                    return Submit::Queued;
                }
                _ => return Submit::Coalesced,
            }
        }
        match class {
            Class::Real => {
                if s.real.len() >= s.capacity {
                    return Submit::Rejected;
                }
                s.real.push_back(ip);
            }
            Class::First => {
                if s.first_capacity == 0 {
                    return Submit::Rejected;
                }
                while s.first.len() >= s.first_capacity {
                    let Some((old, _)) = s.first.pop_front() else {
                        break;
                    };
                    s.forget_first(old);
                }
                s.first.push_back((ip, seen));
            }
        }
        s.pending.insert(ip);
        drop(s);
        self.ready.notify_one();
        Submit::Queued
    }

    /// Waits until an address is queued (only the dispatcher pops, so it stays queued).
    pub async fn wait_nonempty(&self) {
        loop {
            {
                let s = self.state();
                if !s.real.is_empty() || !s.first.is_empty() {
                    return;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Takes the next address to evaluate: the oldest proven-real one, else the newest first
    /// SYN still younger than [`FIRST_MAX_AGE`] at `now` (older ones are dropped: the newest
    /// is too old, so are all). It stays pending until [`Queue::done`].
    pub fn pop(&self, now: Instant) -> Option<IpAddr> {
        let mut s = self.state();
        if let Some(ip) = s.real.pop_front() {
            return Some(ip);
        }
        let (ip, seen) = s.first.pop_back()?;
        if now.saturating_duration_since(seen) <= FIRST_MAX_AGE {
            return Some(ip);
        }
        s.forget_first(ip);
        while let Some((old, _)) = s.first.pop_front() {
            s.forget_first(old);
        }
        None
    }

    /// The evaluation of `ip` is finished and delivered.
    pub fn done(&self, ip: IpAddr) {
        self.state().pending.remove(&ip);
    }

    /// (queued, pending = queued + being evaluated)
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state();
        (s.real.len() + s.first.len(), s.pending.len())
    }

    /// First-SYN addresses dropped unevaluated so far (too old, or displaced by newer ones).
    pub fn expired(&self) -> u64 {
        self.state().expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn queue_coalesces_and_is_bounded() {
        let now = Instant::now();
        let q = Queue::new(2, 4);
        assert_eq!(q.submit(ip(1), Class::Real, now), Submit::Queued);
        assert_eq!(q.submit(ip(1), Class::Real, now), Submit::Coalesced);
        assert_eq!(q.submit(ip(2), Class::Real, now), Submit::Queued);
        assert_eq!(q.submit(ip(3), Class::Real, now), Submit::Rejected);
        assert_eq!(q.pop(now), Some(ip(1)));
        // Being evaluated: still coalesced, but it no longer takes a queue slot.
        assert_eq!(q.submit(ip(1), Class::Real, now), Submit::Coalesced);
        assert_eq!(q.submit(ip(3), Class::Real, now), Submit::Queued);
        assert_eq!(q.depth(), (2, 3));
        q.done(ip(1));
        assert_eq!(q.submit(ip(1), Class::Real, now), Submit::Rejected);
        assert_eq!(q.depth(), (2, 2));
    }

    #[test]
    fn real_sources_first_then_the_newest_first_syn() {
        let t0 = Instant::now();
        let q = Queue::new(8, 8);
        for n in 10..14 {
            let seen = t0 + Duration::from_millis(u64::from(n));
            assert_eq!(q.submit(ip(n), Class::First, seen), Submit::Queued);
        }
        assert_eq!(q.submit(ip(1), Class::Real, t0), Submit::Queued);
        assert_eq!(q.submit(ip(2), Class::Real, t0), Submit::Queued);
        let now = t0 + Duration::from_millis(100);
        assert_eq!(q.pop(now), Some(ip(1)));
        assert_eq!(q.pop(now), Some(ip(2)));
        assert_eq!(q.pop(now), Some(ip(13)));
        // A retransmit of a waiting first SYN moves it ahead of the other first SYNs.
        assert_eq!(q.submit(ip(10), Class::Real, now), Submit::Queued);
        assert_eq!(q.pop(now), Some(ip(10)));
        assert_eq!(q.pop(now), Some(ip(12)));
        assert_eq!(q.pop(now), Some(ip(11)));
        assert_eq!(q.pop(now), None);
        assert_eq!(q.expired(), 0);
    }

    #[test]
    fn first_syns_age_out_and_make_room_for_newer_ones() {
        let t0 = Instant::now();
        let q = Queue::new(8, 2);
        for n in 1..=3 {
            q.submit(
                ip(n),
                Class::First,
                t0 + Duration::from_millis(u64::from(n)),
            );
        }
        // The oldest made room: gone, and free to be queued again later.
        assert_eq!(q.expired(), 1);
        assert_eq!(q.depth(), (2, 2));
        // Past the age bound nothing of the class is evaluated; every entry is dropped.
        assert_eq!(q.pop(t0 + FIRST_MAX_AGE + Duration::from_millis(10)), None);
        assert_eq!((q.depth(), q.expired()), ((0, 0), 3));
        // Turned away is not remembered: the next event is queued afresh.
        assert_eq!(q.submit(ip(1), Class::Real, t0), Submit::Queued);
        assert_eq!(q.submit(ip(2), Class::First, t0), Submit::Queued);
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_one_second_of_burst_then_the_rate() {
        let mut b = TokenBucket::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.try_take(start), Ok(()));
        }
        let wait = b.try_take(start).unwrap_err();
        assert!(
            wait > Duration::from_millis(99) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(b.try_take(start + Duration::from_millis(100)), Ok(()));
        assert!(b.try_take(start + Duration::from_millis(100)).is_err());
        // A long idle period refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(b.try_take(later), Ok(()));
        }
        assert!(b.try_take(later).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn take_token_paces_callers() {
        let bucket = Mutex::new(TokenBucket::new(5));
        let start = Instant::now();
        for _ in 0..15 {
            take_token(&bucket).await;
        }
        // 5 from the burst, then 10 at 5/s.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1990) && elapsed < Duration::from_millis(2100),
            "{elapsed:?}"
        );
    }
}
