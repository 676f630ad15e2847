//! Path probes: small datagrams nodes send each other over the WireGuard
//! socket to learn which direct path works. Sealed, so that nobody but a
//! peer from the map can make a node move its traffic:
//!
//! ```text
//! magic "\xffCVP" (4) | sender node key (32) | nonce (12) | AEAD( kind (1) | tx id (8) ) + tag (16)
//! ```
//!
//! The AEAD is ChaCha20-Poly1305 under BLAKE2s("cvlan probe v1" ||
//! X25519(our node key, their node key)): both ends derive the same key,
//! and only the two holders of those node keys can. Nonces are random
//! (96 bits, from the caller's RNG).

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};
use zeroize::Zeroizing;

use crate::wg_device::PROBE_MAGIC;

pub type Key = [u8; 32];

const LABEL: &[u8] = b"cvlan probe v1";
const HEADER: usize = 4 + 32 + 12;
const BODY: usize = 1 + 8;
pub const PROBE_LEN: usize = HEADER + BODY + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
}

/// The key two nodes share for probes.
pub fn shared_key(ours: &Zeroizing<[u8; 32]>, theirs: &Key) -> Option<Zeroizing<[u8; 32]>> {
    let secret = x25519_dalek::StaticSecret::from(**ours);
    let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*theirs));
    if !dh.was_contributory() {
        return None; // a low-order key: no secret at all
    }
    let mut h = Blake2s256::new();
    h.update(LABEL);
    h.update(dh.as_bytes());
    Some(Zeroizing::new(h.finalize().into()))
}

pub fn seal(
    key: &Zeroizing<[u8; 32]>,
    sender: &Key,
    nonce: [u8; 12],
    kind: Kind,
    tx: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROBE_LEN);
    out.extend_from_slice(PROBE_MAGIC);
    out.extend_from_slice(sender);
    out.extend_from_slice(&nonce);
    let mut body = [0u8; BODY];
    body[0] = kind as u8;
    body[1..].copy_from_slice(&tx.to_be_bytes());
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key[..]));
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &out[..HEADER], &mut body)
        .unwrap_or_else(|_| unreachable!("9 bytes always seal"));
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    out
}

/// The sender's key, if `datagram` has the shape of a probe.
pub fn sender(datagram: &[u8]) -> Option<Key> {
    if datagram.len() != PROBE_LEN || !datagram.starts_with(PROBE_MAGIC) {
        return None;
    }
    datagram[4..36].try_into().ok()
}

/// Opens a probe from the holder of `key`'s other half.
pub fn open(key: &Zeroizing<[u8; 32]>, datagram: &[u8]) -> Option<(Kind, u64)> {
    sender(datagram)?;
    let (header, rest) = datagram.split_at(HEADER);
    let (body, tag) = rest.split_at(BODY);
    let mut body: [u8; BODY] = body.try_into().ok()?;
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key[..]));
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(&header[36..48]),
            header,
            &mut body,
            tag.into(),
        )
        .ok()?;
    let kind = match body[0] {
        1 => Kind::Ping,
        2 => Kind::Pong,
        _ => return None,
    };
    Some((kind, u64::from_be_bytes(body[1..].try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(k: &[u8; 32]) -> Key {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*k)).to_bytes()
    }

    #[test]
    fn only_the_two_key_holders_can_make_or_read_probes() {
        let (a, b, c) = (
            Zeroizing::new([1u8; 32]),
            Zeroizing::new([2u8; 32]),
            Zeroizing::new([3u8; 32]),
        );
        let ab = shared_key(&a, &public(&b)).unwrap();
        let ba = shared_key(&b, &public(&a)).unwrap();
        assert_eq!(*ab, *ba);
        let p = seal(&ab, &public(&a), [9; 12], Kind::Ping, 77);
        assert_eq!(p.len(), PROBE_LEN);
        assert_eq!(sender(&p), Some(public(&a)));
        assert_eq!(open(&ba, &p), Some((Kind::Ping, 77)));
        let cb = shared_key(&c, &public(&b)).unwrap();
        assert_eq!(open(&cb, &p), None, "a third node cannot read it");
        let mut tampered = p.clone();
        tampered[40] ^= 1;
        assert_eq!(open(&ba, &tampered), None);
        assert_eq!(open(&ba, &p[..p.len() - 1]), None);
        assert!(shared_key(&a, &[0; 32]).is_none(), "low-order keys refused");
    }
}
