//! What a datagram on the WireGuard socket is. One UDP port carries
//! WireGuard, STUN answers to our reflexive queries, path probes and
//! port-mapping answers; each goes to exactly one machine, told apart by
//! its first bytes (and, for port mapping, by the port it came from: the
//! port-mapping client itself accepts only its gateway, and counts the
//! rest). The order matters only for bytes no honest sender produces.

use std::net::SocketAddr;

/// The port NAT-PMP and PCP servers answer from (RFC 6886, RFC 6887).
pub const PORT_MAPPING_PORT: u16 = 5351;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDatagram {
    /// WireGuard's framing: the device's.
    WireGuard,
    /// A STUN message (the magic cookie and a consistent length).
    Stun,
    /// A path probe (`\xffCVP`).
    PathProbe,
    /// From a port-mapping port (5351); the client checks the sender.
    PortMapping,
    /// Nothing of ours: dropped.
    Other,
}

/// Classifies `datagram` from `from`. A probe (its first byte 0xff is
/// no NAT-PMP or PCP version) stays a probe whatever port a peer uses.
pub fn classify(from: SocketAddr, datagram: &[u8]) -> SocketDatagram {
    if proto_wg::wire::is_wireguard(datagram) {
        SocketDatagram::WireGuard
    } else if stun::wire::is_stun(datagram) {
        SocketDatagram::Stun
    } else if proto_path::wire::is_probe(datagram) {
        SocketDatagram::PathProbe
    } else if from.port() == PORT_MAPPING_PORT {
        SocketDatagram::PortMapping
    } else {
        SocketDatagram::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "198.51.100.7:41641";

    fn of(from: &str, bytes: &[u8]) -> SocketDatagram {
        classify(from.parse().unwrap(), bytes)
    }

    #[test]
    fn each_kind_goes_to_its_own_machine() {
        // A WireGuard initiation header, a STUN Binding success with no
        // attributes, a NAT-PMP answer, a probe.
        let mut wg = vec![1, 0, 0, 0];
        wg.resize(148, 7);
        assert_eq!(of(PEER, &wg), SocketDatagram::WireGuard);
        let mut stun = vec![0x01, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[9; 12]);
        assert_eq!(of("203.0.113.10:3478", &stun), SocketDatagram::Stun);
        let natpmp = [0, 128, 0, 0, 0, 0, 0, 1, 198, 51, 100, 11];
        assert_eq!(of("192.168.1.1:5351", &natpmp), SocketDatagram::PortMapping);
        // From another port it is nothing of ours (from another host on
        // 5351 the client counts and drops it).
        assert_eq!(of("192.168.1.1:5352", &natpmp), SocketDatagram::Other);
        let mut probe = b"\xffCVP".to_vec();
        probe.resize(80, 0);
        assert_eq!(of(PEER, &probe), SocketDatagram::PathProbe);
        // A peer whose WireGuard port is 5351 still gets its probes.
        assert_eq!(of("198.51.100.7:5351", &probe), SocketDatagram::PathProbe);
        assert_eq!(of(PEER, b""), SocketDatagram::Other);
        assert_eq!(of(PEER, b"hello, world"), SocketDatagram::Other);
    }
}
