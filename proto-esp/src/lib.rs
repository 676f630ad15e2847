//! ESP (RFC 4303) in tunnel mode, sans-IO: SAs seal and open packets in
//! place on caller buffers, with extended sequence numbers and a
//! configurable anti-replay window, and tell IKE from ESP on port 4500
//! (RFC 3948). All cryptography is in `cipher.rs`. `spd.rs` picks the SA
//! for an outbound packet and checks inbound packets against theirs.
#![forbid(unsafe_code)]

pub mod cipher;
pub mod replay;
pub mod sa;
pub mod spd;
pub mod udp_encap;

pub use cipher::{Cipher, Integ};
pub use sa::{EspError, InboundSa, Opened, OutboundSa};

#[cfg(test)]
mod sa_tests;
