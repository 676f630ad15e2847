//! TAI64N timestamps: the initiation's replay protection.

use core::time::Duration;

/// 12 bytes: seconds since 1970 + 2^62 (big-endian), then nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Tai64N(pub [u8; 12]);

/// TAI64 label of the Unix epoch.
const TAI64_EPOCH: u64 = 0x4000_0000_0000_000a;

/// Nanoseconds are rounded down to ~16 ms so the timestamp does not leak a
/// precise clock reading (wireguard-go whitens the same way).
const WHITENER_MASK: u32 = 0x00ff_ffff;

impl Tai64N {
    /// The timestamp for a wall-clock time given as time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Self {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&(TAI64_EPOCH + since_epoch.as_secs()).to_be_bytes());
        out[8..].copy_from_slice(&(since_epoch.subsec_nanos() & !WHITENER_MASK).to_be_bytes());
        Self(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_order_matches_time_order() {
        let a = Tai64N::from_unix(Duration::new(1_700_000_000, 0));
        let b = Tai64N::from_unix(Duration::new(1_700_000_000, 900_000_000));
        let c = Tai64N::from_unix(Duration::new(1_700_000_001, 0));
        assert!(a < b && b < c);
        assert_eq!(&a.0[..8], &(TAI64_EPOCH + 1_700_000_000).to_be_bytes());
        // Whitening: two instants within the same ~16 ms slot look equal.
        let d = Tai64N::from_unix(Duration::new(5, 1));
        let e = Tai64N::from_unix(Duration::new(5, 2));
        assert_eq!(d, e);
    }
}
