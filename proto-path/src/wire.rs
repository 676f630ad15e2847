//! Path probes on the wire: small datagrams nodes send each other over
//! the WireGuard socket to learn which direct path works.
//!
//! ```text
//! magic "\xffCVP" (4) | sender node key (32) | nonce (12) | AEAD( kind (1) | tx id (8) ) + tag (16)
//! ```
//!
//! The first byte, 0xff, is no WireGuard message type (those are 1 to
//! 4), so a device can tell probes from WireGuard by [`is_probe`] alone.
//! Sealing and opening are in [`crate::crypto`].

/// A node key (X25519 public key).
pub type Key = [u8; 32];

/// How every probe begins.
pub const MAGIC: &[u8; 4] = b"\xffCVP";
/// magic, sender, nonce: authenticated, not encrypted.
pub const HEADER: usize = 4 + 32 + 12;
/// kind and transaction id: encrypted.
pub const BODY: usize = 1 + 8;
pub const TAG: usize = 16;
pub const PROBE_LEN: usize = HEADER + BODY + TAG;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
}

/// Whether a datagram on the WireGuard socket is ours rather than
/// WireGuard's (it may still be forged: only opening it tells).
pub fn is_probe(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC)
}

/// The sender's key, if `datagram` has the shape of a probe.
pub fn sender(datagram: &[u8]) -> Option<Key> {
    if datagram.len() != PROBE_LEN || !is_probe(datagram) {
        return None;
    }
    datagram[4..36].try_into().ok()
}

/// The nonce of a probe-shaped datagram.
pub(crate) fn nonce(datagram: &[u8]) -> Option<[u8; 12]> {
    sender(datagram)?;
    datagram[36..HEADER].try_into().ok()
}

pub(crate) fn encode_body(kind: Kind, tx: u64) -> [u8; BODY] {
    let mut body = [0u8; BODY];
    body[0] = kind as u8;
    body[1..].copy_from_slice(&tx.to_be_bytes());
    body
}

pub(crate) fn decode_body(body: &[u8; BODY]) -> Option<(Kind, u64)> {
    let kind = match body[0] {
        1 => Kind::Ping,
        2 => Kind::Pong,
        _ => return None,
    };
    let tx: [u8; 8] = body[1..].try_into().ok()?;
    Some((kind, u64::from_be_bytes(tx)))
}

/// magic | sender | nonce.
pub(crate) fn header(sender: &Key, nonce: &[u8; 12]) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4..36].copy_from_slice(sender);
    h[36..].copy_from_slice(nonce);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_recognised_and_bodies_round_trip() {
        let mut d = header(&[7; 32], &[1; 12]).to_vec();
        d.extend_from_slice(&[0; BODY + TAG]);
        assert!(is_probe(&d));
        assert_eq!(sender(&d), Some([7; 32]));
        assert_eq!(nonce(&d), Some([1; 12]));
        assert_eq!(sender(&d[..PROBE_LEN - 1]), None, "wrong length");
        assert!(!is_probe(&[1, 0, 0, 0]), "a WireGuard initiation");
        for (kind, tx) in [(Kind::Ping, 0), (Kind::Pong, u64::MAX)] {
            assert_eq!(decode_body(&encode_body(kind, tx)), Some((kind, tx)));
        }
        assert_eq!(decode_body(&[3; BODY]), None);
    }
}
