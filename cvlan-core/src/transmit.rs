//! The one shape in which every sans-IO protocol machine hands its caller
//! a datagram to send (`poll_transmit`).

use std::net::SocketAddr;

/// A datagram (or, with `segment_size`, a GSO batch of them) to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Our address to send from, when the machine knows which one it
    /// must be (a gateway on several ports); `None`: the caller's socket.
    pub source: Option<SocketAddr>,
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
