//! Shared set-up for the benches: an established pair of devices whose
//! data path can be driven directly with caller buffers.

use std::net::SocketAddr;
use std::time::Instant;

use proto_wg::harness::Pair;
use proto_wg::{Device, Encapsulated, Received, DATA_HEADER_LEN};

/// Two devices with a confirmed session; `a` routes 10.0.0.2 to `b`.
#[derive(Debug)]
pub struct Established {
    pub a: Device,
    pub b: Device,
    pub a_addr: SocketAddr,
    pub now: Instant,
}

pub fn established() -> Established {
    let mut pair = Pair::new(99);
    let _ = pair.send(0, b"warm up");
    pair.pump();
    assert_eq!(
        pair.nodes[1].delivered.len(),
        1,
        "handshake did not complete"
    );
    let now = pair.now;
    let a_addr = pair.nodes[0].addr;
    let [a, b] = pair.nodes;
    Established {
        a: a.device,
        b: b.device,
        a_addr,
        now,
    }
}

/// An IPv4 packet of exactly `len` bytes from 10.0.0.1 to 10.0.0.2, placed
/// at `buf[DATA_HEADER_LEN..]` as the TUN reader places it.
pub fn packet_in_buffer(len: usize) -> Vec<u8> {
    let ip = proto_wg::harness::ipv4_packet(
        [10, 0, 0, 1].into(),
        [10, 0, 0, 2].into(),
        &vec![0xa5; len - 20],
    );
    let mut buf = vec![0u8; proto_wg::sealed_len(len, 1420) + 64];
    buf[DATA_HEADER_LEN..DATA_HEADER_LEN + len].copy_from_slice(&ip);
    buf
}

/// Seals a `len`-byte packet on `a`; returns the datagram length.
pub fn seal(a: &mut Device, now: Instant, buf: &mut [u8], len: usize) -> usize {
    match a.encapsulate(now, buf, len) {
        Ok(Encapsulated::Send { len, .. }) => len,
        other => panic!("encapsulate: {other:?}"),
    }
}

/// Opens a datagram from `from` on `b`; returns the plaintext length.
pub fn open(b: &mut Device, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> usize {
    match b.handle_datagram(now, from, datagram) {
        Ok(Received::Packet { range, .. }) => range.len(),
        other => panic!("decapsulate: {other:?}"),
    }
}
