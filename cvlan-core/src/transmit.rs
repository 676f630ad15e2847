//! The one shape in which every sans-IO protocol machine hands its caller
//! a datagram to send (`poll_transmit`).

use std::net::SocketAddr;

/// A datagram (or, with `segment_size`, a GSO batch of them) to send.
///
/// `S` is what the machine knows of the source: by default
/// `Option<SocketAddr>` (`None`: the caller's one socket), and
/// `SocketAddr` for a machine that always must choose, such as an IKE
/// gateway on ports 500 and 4500 (`Transmit<SocketAddr>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<S = Option<SocketAddr>> {
    pub source: S,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
    /// `Some(n)`: `contents` is datagrams of `n` bytes back to back (the
    /// last may be shorter), for UDP GSO; `None`: one datagram.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// One datagram from the caller's socket.
    pub fn to(destination: SocketAddr, contents: Vec<u8>) -> Self {
        Self {
            source: None,
            destination,
            contents,
            segment_size: None,
        }
    }
}

impl Transmit<SocketAddr> {
    /// One datagram from `source`.
    pub fn from_to(source: SocketAddr, destination: SocketAddr, contents: Vec<u8>) -> Self {
        Self {
            source,
            destination,
            contents,
            segment_size: None,
        }
    }
}
