//! Expiries: CLOCK_MONOTONIC_COARSE nanoseconds after which something (a verdict, a list
//! entry, a feed's entry, a decision's window) no longer counts, with one value, [`NEVER`],
//! for "does not expire". Every expiry in the maps is written this way; the datapath and
//! userspace both read them through these functions.

/// The expiry of what never expires.
pub const NEVER: u64 = 0;

/// Whether something expiring at `expires_ns` still counts at `now`.
#[inline(always)]
pub const fn live(expires_ns: u64, now: u64) -> bool {
    expires_ns == NEVER || expires_ns > now
}

/// The earlier of two expiries ([`NEVER`] is later than any time).
#[inline(always)]
pub const fn earliest(a: u64, b: u64) -> u64 {
    if a == NEVER || (b != NEVER && b < a) {
        b
    } else {
        a
    }
}

/// An expiry as a sort key: the later the larger, [`NEVER`] after every time.
#[inline(always)]
pub const fn sort_key(expires_ns: u64) -> u64 {
    if expires_ns == NEVER {
        u64::MAX
    } else {
        expires_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_outlives_every_time() {
        assert!(live(NEVER, u64::MAX));
        assert!(live(10, 9) && !live(10, 10));
        assert_eq!(earliest(NEVER, 5), 5);
        assert_eq!(earliest(5, NEVER), 5);
        assert_eq!(earliest(NEVER, NEVER), NEVER);
        assert_eq!(earliest(7, 5), 5);
        assert!(sort_key(NEVER) > sort_key(u64::MAX - 1) && sort_key(5) < sort_key(7));
    }
}
