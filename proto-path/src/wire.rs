//! Path probes on the wire: small datagrams nodes send each other over
//! the WireGuard socket (directly, or through the relay) to learn which
//! direct path works.
//!
//! ```text
//! magic "\xffCVP" (4) | sender node key (32) | nonce (12) | AEAD(body) + tag (16)
//! body: kind (1) | tx id (8) | for a call: count (1) | count × (4|6 (1) | ip (4|16) | port (2))
//! ```
//!
//! The first byte, 0xff, is no WireGuard message type (those are 1 to
//! 4), so a device can tell probes from WireGuard by [`is_probe`] alone.
//! A ping and a pong are always [`PROBE_LEN`] bytes; a call ("probe me
//! now", sent through the relay) names at most [`MAX_CALL_CANDIDATES`]
//! endpoints, so no probe is longer than [`MAX_PROBE_LEN`]. Sealing and
//! opening are in [`crate::crypto`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A node key (X25519 public key).
pub type Key = [u8; 32];

/// How every probe begins.
pub const MAGIC: &[u8; 4] = b"\xffCVP";
/// magic, sender, nonce: authenticated, not encrypted.
pub const HEADER: usize = 4 + 32 + 12;
/// kind and transaction id: encrypted.
pub const BODY: usize = 1 + 8;
pub const TAG: usize = 16;
/// A ping or a pong.
pub const PROBE_LEN: usize = HEADER + BODY + TAG;
/// Endpoints one call may name (as many as the map carries per node).
pub const MAX_CALL_CANDIDATES: usize = 16;
/// One endpoint in a call: family, the widest address, port.
const CANDIDATE_MAX: usize = 1 + 16 + 2;
/// The longest body: a call naming IPv6 endpoints only.
pub const MAX_BODY: usize = BODY + 1 + MAX_CALL_CANDIDATES * CANDIDATE_MAX;
pub const MAX_PROBE_LEN: usize = HEADER + MAX_BODY + TAG;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
    /// "Probe me now, at these endpoints": starts a burst on both sides.
    Call = 3,
}

/// What a probe says, once opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ping {
        tx: u64,
    },
    Pong {
        tx: u64,
    },
    Call {
        tx: u64,
        candidates: Vec<SocketAddr>,
    },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Ping { .. } => Kind::Ping,
            Self::Pong { .. } => Kind::Pong,
            Self::Call { .. } => Kind::Call,
        }
    }
}

/// Whether a datagram on the WireGuard socket is ours rather than
/// WireGuard's (it may still be forged: only opening it tells).
pub fn is_probe(datagram: &[u8]) -> bool {
    datagram.starts_with(MAGIC)
}

/// The sender's key, if `datagram` has the shape of a probe.
pub fn sender(datagram: &[u8]) -> Option<Key> {
    if !(PROBE_LEN..=MAX_PROBE_LEN).contains(&datagram.len()) || !is_probe(datagram) {
        return None;
    }
    datagram[4..36].try_into().ok()
}

/// The nonce of a probe-shaped datagram.
pub(crate) fn nonce(datagram: &[u8]) -> Option<[u8; 12]> {
    sender(datagram)?;
    datagram[36..HEADER].try_into().ok()
}

pub(crate) fn encode_body(message: &Message) -> Vec<u8> {
    let (kind, tx) = match message {
        Message::Ping { tx } => (Kind::Ping, *tx),
        Message::Pong { tx } => (Kind::Pong, *tx),
        Message::Call { tx, .. } => (Kind::Call, *tx),
    };
    let mut body = Vec::with_capacity(MAX_BODY);
    body.push(kind as u8);
    body.extend_from_slice(&tx.to_be_bytes());
    if let Message::Call { candidates, .. } = message {
        let named = &candidates[..candidates.len().min(MAX_CALL_CANDIDATES)];
        body.push(named.len() as u8);
        for c in named {
            match c.ip() {
                IpAddr::V4(ip) => {
                    body.push(4);
                    body.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    body.push(6);
                    body.extend_from_slice(&ip.octets());
                }
            }
            body.extend_from_slice(&c.port().to_be_bytes());
        }
    }
    body
}

pub(crate) fn decode_body(body: &[u8]) -> Option<Message> {
    let (&kind, rest) = body.split_first()?;
    let tx = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let rest = &rest[8..];
    match kind {
        1 | 2 if !rest.is_empty() => None,
        1 => Some(Message::Ping { tx }),
        2 => Some(Message::Pong { tx }),
        3 => {
            let (&count, mut rest) = rest.split_first()?;
            if usize::from(count) > MAX_CALL_CANDIDATES {
                return None;
            }
            let mut candidates = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let (&family, tail) = rest.split_first()?;
                let (ip, tail) = match family {
                    4 => {
                        let o: [u8; 4] = tail.get(..4)?.try_into().ok()?;
                        (IpAddr::V4(Ipv4Addr::from(o)), &tail[4..])
                    }
                    6 => {
                        let o: [u8; 16] = tail.get(..16)?.try_into().ok()?;
                        (IpAddr::V6(Ipv6Addr::from(o)), &tail[16..])
                    }
                    _ => return None,
                };
                let port = u16::from_be_bytes(tail.get(..2)?.try_into().ok()?);
                candidates.push(SocketAddr::new(ip, port));
                rest = &tail[2..];
            }
            rest.is_empty().then_some(Message::Call { tx, candidates })
        }
        _ => None,
    }
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
        assert_eq!(sender(&d[..PROBE_LEN - 1]), None, "too short");
        d.resize(MAX_PROBE_LEN + 1, 0);
        assert_eq!(sender(&d), None, "too long");
        assert!(!is_probe(&[1, 0, 0, 0]), "a WireGuard initiation");
        let call = Message::Call {
            tx: 5,
            candidates: vec![
                "198.51.100.11:41641".parse().unwrap(),
                "[2001:db8::1]:7".parse().unwrap(),
            ],
        };
        for m in [
            Message::Ping { tx: 0 },
            Message::Pong { tx: u64::MAX },
            call,
        ] {
            assert_eq!(decode_body(&encode_body(&m)), Some(m));
        }
        assert_eq!(decode_body(&[3; BODY]), None, "a call without its count");
        assert_eq!(decode_body(&[4; BODY]), None, "no such kind");
        let mut ping = encode_body(&Message::Ping { tx: 1 });
        ping.push(0);
        assert_eq!(decode_body(&ping), None, "trailing bytes");
    }

    #[test]
    fn a_call_names_at_most_its_limit_and_never_outgrows_a_probe() {
        let many: Vec<SocketAddr> = (0..40)
            .map(|i| SocketAddr::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i).into(), 1))
            .collect();
        let body = encode_body(&Message::Call {
            tx: 1,
            candidates: many,
        });
        assert_eq!(body.len(), MAX_BODY);
        let Some(Message::Call { candidates, .. }) = decode_body(&body) else {
            panic!("not a call");
        };
        assert_eq!(candidates.len(), MAX_CALL_CANDIDATES);
        let mut too_many = body.clone();
        too_many[BODY] = (MAX_CALL_CANDIDATES + 1) as u8;
        assert_eq!(decode_body(&too_many), None);
    }
}
