//! Handshake messages per source address, under load: a token bucket per
//! IP of [`PACKETS_PER_SECOND`] with a burst of [`BURST`], as wireguard-go
//! does. It runs only after MAC2 proved the sender can receive at its
//! address, so an entry costs a real, reachable host; the table is
//! bounded anyway, and idle entries are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages one address may send per second under load.
pub const PACKETS_PER_SECOND: u64 = 20;
/// And at once.
pub const BURST: u64 = 5;
/// Addresses tracked at most.
const MAX_ENTRIES: usize = 1 << 16;
/// An address idle this long starts again with a full bucket.
const IDLE: Duration = Duration::from_secs(1);
/// One token, in nanoseconds of refill.
const TOKEN_NANOS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const BUCKET_NANOS: u64 = TOKEN_NANOS * BURST;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in nanoseconds of refill (exact integer arithmetic).
    nanos: u64,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// Whether a handshake message from `ip` may be processed now.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.buckets.len() >= MAX_ENTRIES && !self.buckets.contains_key(&ip) {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < IDLE);
            if self.buckets.len() >= MAX_ENTRIES {
                // Full of busy senders: newcomers wait until some go quiet.
                return false;
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            nanos: BUCKET_NANOS,
            last: now,
        });
        let elapsed =
            u64::try_from(now.saturating_duration_since(b.last).as_nanos()).unwrap_or(u64::MAX);
        b.nanos = b.nanos.saturating_add(elapsed).min(BUCKET_NANOS);
        b.last = now;
        if b.nanos >= TOKEN_NANOS {
            b.nanos -= TOKEN_NANOS;
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_twenty_a_second_and_others_their_own() {
        let mut l = RateLimiter::default();
        #[allow(clippy::disallowed_methods)] // a test clock origin
        let start = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let burst = (0..100).filter(|_| l.allow(start, a)).count();
        assert_eq!(burst, 5);
        assert!(l.allow(start, b), "another address is not affected");
        // Ten seconds of a flood every millisecond: 20 a second get through.
        let mut passed = 0;
        for ms in 1..=10_000u64 {
            if l.allow(start + Duration::from_millis(ms), a) {
                passed += 1;
            }
        }
        assert!((199..=201).contains(&passed), "{passed}");
    }
}
