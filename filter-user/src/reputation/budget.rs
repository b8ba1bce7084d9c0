//! The lookup budget: a bounded queue that coalesces duplicate addresses, a token bucket for
//! evaluations per second, and (in the engine) a semaphore for evaluations in flight.
//!
//! Memory is bounded whatever the peer rate: at most `queue_len` queued addresses, at most
//! `max_inflight` running evaluations, and the set used for coalescing holds exactly those.
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
    /// Over budget: the queue is full. The peer stays unknown (the datapath passes it) and
    /// will be reported again by the datapath after its dedup window.
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

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<IpAddr>,
    /// Queued or being evaluated: a second submit of one of these is coalesced.
    pending: HashSet<IpAddr>,
    capacity: usize,
}

/// The bounded, coalescing queue of addresses waiting for an evaluation.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    ready: Notify,
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                capacity,
                ..State::default()
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.state().capacity = capacity;
    }

    pub fn submit(&self, ip: IpAddr) -> Submit {
        let mut s = self.state();
        if s.pending.contains(&ip) {
            return Submit::Coalesced;
        }
        if s.queue.len() >= s.capacity {
            return Submit::Rejected;
        }
        s.pending.insert(ip);
        s.queue.push_back(ip);
        drop(s);
        self.ready.notify_one();
        Submit::Queued
    }

    /// Waits until an address is queued (only the dispatcher pops, so it stays queued).
    pub async fn wait_nonempty(&self) {
        loop {
            if !self.state().queue.is_empty() {
                return;
            }
            self.ready.notified().await;
        }
    }

    /// Takes the oldest address; it stays pending until [`Queue::done`].
    pub fn pop(&self) -> Option<IpAddr> {
        self.state().queue.pop_front()
    }

    /// The evaluation of `ip` is finished and delivered.
    pub fn done(&self, ip: IpAddr) {
        self.state().pending.remove(&ip);
    }

    /// (queued, pending = queued + being evaluated)
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state();
        (s.queue.len(), s.pending.len())
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
        let q = Queue::new(2);
        assert_eq!(q.submit(ip(1)), Submit::Queued);
        assert_eq!(q.submit(ip(1)), Submit::Coalesced);
        assert_eq!(q.submit(ip(2)), Submit::Queued);
        assert_eq!(q.submit(ip(3)), Submit::Rejected);
        assert_eq!(q.pop(), Some(ip(1)));
        // Being evaluated: still coalesced, but it no longer takes a queue slot.
        assert_eq!(q.submit(ip(1)), Submit::Coalesced);
        assert_eq!(q.submit(ip(3)), Submit::Queued);
        assert_eq!(q.depth(), (2, 3));
        q.done(ip(1));
        assert_eq!(q.submit(ip(1)), Submit::Rejected);
        assert_eq!(q.depth(), (2, 2));
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
