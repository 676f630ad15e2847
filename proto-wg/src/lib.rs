//! WireGuard as a sans-IO state machine.
//!
//! No sockets, no threads, no clock, no OS randomness: time comes in as
//! `Instant` arguments, randomness from a seed, and the caller moves bytes.
//! [`Device`] is the entry point; [`wire`] parses messages on its own (and
//! is what the fuzzers hit first). All cryptography is in one module,
//! `crypto`, so it can be audited, and swapped, in one place.
#![forbid(unsafe_code)]

mod allowed_ips;
mod cookie;
mod crypto;
mod device;
mod errors;
mod keys;
mod noise;
mod peer;
pub mod ratelimit;
mod replay;
mod session;
mod tai64n;
pub mod timers;
pub mod wire;

#[cfg(test)]
mod device_tests;
#[cfg(any(test, feature = "harness"))]
pub mod harness;

pub use allowed_ips::AllowedIps;
pub use cookie::COOKIE_REFRESH_TIME;
pub use cvlan_core::{IpPrefix, PrefixError};
pub use device::{
    ConsumedInitiation, Device, Encapsulated, Event, Incoming, InitiationJob, OpenJob, PeerInfo,
    Prepared, Received, SealJob, Transmit, TransmitKind,
};
pub use errors::{RecvError, SendError, Stats};
pub use keys::{PresharedKey, PrivateKey, PublicKey};
pub use peer::{PeerId, MAX_STAGED_PACKETS};
pub use replay::REPLAY_WINDOW;
pub use session::{padded_len, sealed_len};
pub use tai64n::Tai64N;
pub use wire::{DATA_HEADER_LEN, DATA_OVERHEAD};

/// Raw primitives, exported only for benches that compare a sealed packet
/// with the bare AEAD it costs.
#[doc(hidden)]
pub mod bench_support {
    /// ChaCha20-Poly1305 seal of `buf[..len]` in place, as the data path does it.
    pub fn raw_seal(key: &[u8; 32], counter: u64, buf: &mut [u8], len: usize) -> usize {
        crate::crypto::AeadKey::new(key).seal(counter, &[], buf, len)
    }
}
