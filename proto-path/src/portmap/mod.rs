//! Port mapping: asking the local router to forward a public port to the
//! WireGuard port, so that even a symmetric NAT has one address every peer
//! can reach. Two protocols a router may speak on UDP 5351: PCP (RFC
//! 6887), tried first, and NAT-PMP (RFC 6886), its predecessor, which
//! many routers (and miniupnpd) still answer. UPnP IGD (SSDP, HTTP and
//! SOAP) is not here yet.
//!
//! - [`natpmp`] and [`pcp`]: the messages, zero-copy parse and emit,
//!   never panicking on any input;
//! - [`client`]: [`PortMapper`], the sans-IO client with the driver
//!   surface of the other machines (PCP, then NAT-PMP; retransmission;
//!   refresh at half the lifetime; answers only from the gateway).

pub mod client;
pub mod natpmp;
pub mod pcp;
pub mod upnp;

pub use client::{Event, Mapping, PortMapper, Protocol};

/// The port routers answer port-mapping requests on (both protocols).
pub const SERVER_PORT: u16 = 5351;

/// Big-endian reads at `at`; callers check the length first.
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What is wrong with a datagram that should have been an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than its fixed part.
    Truncated,
    /// Another version than the one parsed for.
    Version(u8),
    /// A request, or an answer to another operation.
    NotAnAnswer(u8),
}
