//! All of the probes' cryptography. Probes are sealed so that nobody but
//! a peer from the map can make a node move its traffic.
//!
//! The AEAD is ChaCha20-Poly1305 under BLAKE2s("cvlan probe v1" ||
//! X25519(our node key, their node key)): both ends derive the same key,
//! and only the two holders of those node keys can. The header (magic,
//! sender, nonce) is the associated data. Nonces are random (96 bits,
//! from the caller's CSPRNG): a repeated nonce under one key would let
//! anyone forge probes.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key as AeadKey, Nonce};
use zeroize::Zeroizing;

use crate::wire::{self, Key, Message, HEADER, TAG};

const LABEL: &[u8] = b"cvlan probe v1";

/// The key two nodes share for probes; `None` for a low-order key (no
/// secret at all).
pub fn shared_key(ours: &Zeroizing<[u8; 32]>, theirs: &Key) -> Option<Zeroizing<[u8; 32]>> {
    let secret = x25519_dalek::StaticSecret::from(**ours);
    let dh = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*theirs));
    if !dh.was_contributory() {
        return None;
    }
    let mut h = Blake2s256::new();
    h.update(LABEL);
    h.update(dh.as_bytes());
    Some(Zeroizing::new(h.finalize().into()))
}

/// A probe from `sender` under `key`.
pub fn seal(
    key: &Zeroizing<[u8; 32]>,
    sender: &Key,
    nonce: [u8; 12],
    message: &Message,
) -> Vec<u8> {
    let header = wire::header(sender, &nonce);
    let mut body = wire::encode_body(message);
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key[..]));
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &header, &mut body)
        .unwrap_or_else(|_| unreachable!("a body of at most MAX_BODY bytes always seals"));
    let mut out = Vec::with_capacity(HEADER + body.len() + TAG);
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    out
}

/// Opens a probe from the holder of `key`'s other half.
pub fn open(key: &Zeroizing<[u8; 32]>, datagram: &[u8]) -> Option<Message> {
    let nonce = wire::nonce(datagram)?;
    let (header, rest) = datagram.split_at(HEADER);
    let (body, tag) = rest.split_at(rest.len() - TAG);
    let mut body = body.to_vec();
    let cipher = ChaCha20Poly1305::new(AeadKey::from_slice(&key[..]));
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&nonce), header, &mut body, tag.into())
        .ok()?;
    wire::decode_body(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::sender;

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
        let p = seal(&ab, &public(&a), [9; 12], &Message::Ping { tx: 77 });
        assert_eq!(p.len(), crate::wire::PROBE_LEN);
        assert_eq!(sender(&p), Some(public(&a)));
        assert_eq!(open(&ba, &p), Some(Message::Ping { tx: 77 }));
        let cb = shared_key(&c, &public(&b)).unwrap();
        assert_eq!(open(&cb, &p), None, "a third node cannot read it");
        let mut tampered = p.clone();
        tampered[40] ^= 1;
        assert_eq!(open(&ba, &tampered), None);
        assert_eq!(open(&ba, &p[..p.len() - 1]), None);
        assert!(shared_key(&a, &[0; 32]).is_none(), "low-order keys refused");
    }
}
