//! Path discovery, sans-IO: which path each peer's traffic takes, through
//! the relay or direct to one of its endpoints, learned by sealed probes
//! sent over the WireGuard socket. NAT traversal grows here.
//!
//! - [`wire`]: the probe format and how a device tells probes from WireGuard;
//! - [`crypto`]: all of the probes' cryptography (key agreement, AEAD);
//! - [`paths`]: the per-peer path machine (candidates from the map, the
//!   peer's calls and its pings; bursts, backoff, relay fallback, timers) behind the driver surface every protocol crate has:
//!   `handle_input`, `handle_timeout`, `poll_transmit`, `poll_event`,
//!   `poll_timeout`;
//! - [`portmap`]: port mapping (PCP, NAT-PMP) asked of the local router;
//! - `harness` (feature `harness`, and in tests): two nodes in fake time.
#![forbid(unsafe_code)]

mod candidate;
pub mod crypto;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod paths;
pub mod portmap;
pub mod wire;

#[cfg(test)]
mod nat_tests;
#[cfg(test)]
mod paths_tests;
#[cfg(test)]
mod portmap_tests;

pub use paths::{Counters, Event, Path, PathManager, Source, Winner};
pub use wire::Key;
