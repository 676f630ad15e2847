//! Every cryptographic primitive WireGuard uses, and nothing else.
//!
//! This is the whole crypto surface of the data plane: an auditor reads this
//! file to know which primitive runs where. The rest of the crate only calls
//! the functions below; swapping in another AEAD backend means changing this
//! file alone.
//!
//! - `hash`: BLAKE2s-256
//! - `mac`: keyed BLAKE2s with a 128-bit output (MAC1, MAC2, cookies)
//! - `hmac`/`kdf*`: HMAC-BLAKE2s and the HKDF-style chain of the whitepaper
//! - `AeadKey`: ChaCha20-Poly1305 with a 64-bit little-endian counter nonce
//! - `xaead_*`: XChaCha20-Poly1305 (cookie replies only)
//! - `dh`: X25519, rejecting the all-zero shared secret of low-order points
//!
//! Backend choice, by measurement (benches crate, this 2-core x86-64):
//! RustCrypto's ChaCha20 picks AVX2 at run time, which pays off; its
//! runtime-detected AVX2 Poly1305 does not (1.7 µs for a 64-byte seal), so
//! the workspace builds Poly1305's portable backend (`.cargo/config.toml`,
//! `--cfg poly1305_force_soft`): 0.44 µs at 64 B, 2.1 µs at 1420 B, and the
//! binary still runs on any x86-64. `ring` stays a bench-only comparison.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag, XChaCha20Poly1305, XNonce};
use hmac::SimpleHmac;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// Bytes of every symmetric key, hash and DH value.
pub(crate) const KEY_LEN: usize = 32;
/// Bytes of a Poly1305 tag.
pub(crate) const TAG_LEN: usize = 16;
/// Bytes of a MAC1/MAC2/cookie value.
pub(crate) const MAC_LEN: usize = 16;

/// A 32-byte secret that is wiped when dropped.
pub(crate) type Secret = Zeroizing<[u8; KEY_LEN]>;

/// BLAKE2s-256 over the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

/// Keyed BLAKE2s with a 16-byte output, as WireGuard's `MAC(key, input)`.
pub(crate) fn mac(key: &[u8], input: &[u8]) -> [u8; MAC_LEN] {
    // Keys are 16 or 32 bytes here, always valid for BLAKE2s.
    let mut m = <Blake2sMac<U16> as blake2::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("BLAKE2s accepts keys up to 32 bytes"));
    Update::update(&mut m, input);
    m.finalize_fixed().into()
}

/// HMAC-BLAKE2s over the concatenation of `parts`.
fn hmac(key: &[u8], parts: &[&[u8]]) -> Secret {
    let mut m = <SimpleHmac<Blake2s256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    for p in parts {
        Mac::update(&mut m, p);
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// `KDF1(key, input)`: one 32-byte output.
pub(crate) fn kdf1(key: &[u8; KEY_LEN], input: &[u8]) -> Secret {
    let prk = hmac(key, &[input]);
    hmac(&*prk, &[&[1]])
}

/// `KDF2(key, input)`: two 32-byte outputs.
pub(crate) fn kdf2(key: &[u8; KEY_LEN], input: &[u8]) -> (Secret, Secret) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&*prk, &[&[1]]);
    let t2 = hmac(&*prk, &[&*t1, &[2]]);
    (t1, t2)
}

/// `KDF3(key, input)`: three 32-byte outputs.
pub(crate) fn kdf3(key: &[u8; KEY_LEN], input: &[u8]) -> (Secret, Secret, Secret) {
    let prk = hmac(key, &[input]);
    let t1 = hmac(&*prk, &[&[1]]);
    let t2 = hmac(&*prk, &[&*t1, &[2]]);
    let t3 = hmac(&*prk, &[&*t2, &[3]]);
    (t1, t2, t3)
}

/// X25519. Returns `None` for the all-zero result (a low-order public key),
/// which the whitepaper requires us to reject.
pub(crate) fn dh(secret: &x25519_dalek::StaticSecret, public: &[u8; KEY_LEN]) -> Option<Secret> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    let out = Zeroizing::new(*shared.as_bytes());
    if bool::from(out.ct_eq(&[0u8; KEY_LEN])) {
        return None;
    }
    Some(out)
}

/// Constant-time equality for MACs and keys.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The authentication failed: wrong key, tampered bytes, or truncated input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OpenError;

/// A ChaCha20-Poly1305 key, wiped on drop, used with WireGuard's nonce
/// layout (32 zero bits then the 64-bit counter, little-endian).
pub(crate) struct AeadKey {
    cipher: ChaCha20Poly1305,
    raw: Secret,
}

impl AeadKey {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(key.into()),
            raw: Zeroizing::new(*key),
        }
    }

    fn nonce(counter: u64) -> chacha20poly1305::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        n.into()
    }

    /// Encrypts `buf[..len]` in place and writes the tag to
    /// `buf[len..len + TAG_LEN]`. Returns the sealed length.
    /// The caller guarantees `buf.len() >= len + TAG_LEN`.
    pub(crate) fn seal(&self, counter: u64, aad: &[u8], buf: &mut [u8], len: usize) -> usize {
        let (msg, rest) = buf.split_at_mut(len);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&Self::nonce(counter), aad, msg)
            .unwrap_or_else(|_| unreachable!("ChaCha20-Poly1305 seals any length below 256 GiB"));
        rest[..TAG_LEN].copy_from_slice(&tag);
        len + TAG_LEN
    }

    /// Authenticates and decrypts `buf` (ciphertext then tag) in place.
    /// Returns the plaintext length; on failure `buf` is left as garbage.
    pub(crate) fn open(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, OpenError> {
        let Some(len) = buf.len().checked_sub(TAG_LEN) else {
            return Err(OpenError);
        };
        let (msg, tag) = buf.split_at_mut(len);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&Self::nonce(counter), aad, msg, &tag)
            .map_err(|_| OpenError)?;
        Ok(len)
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        // `raw` wipes itself; the cipher's expanded copy is overwritten with
        // a cipher built from zeros so no key schedule outlives the session.
        self.raw.zeroize();
        self.cipher = ChaCha20Poly1305::new(&[0u8; KEY_LEN].into());
    }
}

/// One-shot AEAD used by the handshake: `AEAD(key, counter, plaintext, aad)`
/// written into `out` (plaintext length + 16 bytes).
pub(crate) fn aead_seal(
    key: &[u8; KEY_LEN],
    counter: u64,
    plaintext: &[u8],
    aad: &[u8],
    out: &mut [u8],
) {
    out[..plaintext.len()].copy_from_slice(plaintext);
    AeadKey::new(key).seal(counter, aad, out, plaintext.len());
}

/// One-shot AEAD open used by the handshake; `out` receives the plaintext.
pub(crate) fn aead_open(
    key: &[u8; KEY_LEN],
    counter: u64,
    sealed: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), OpenError> {
    let mut buf = Zeroizing::new([0u8; 64]);
    let buf = buf.get_mut(..sealed.len()).ok_or(OpenError)?;
    buf.copy_from_slice(sealed);
    let len = AeadKey::new(key).open(counter, aad, buf)?;
    out.get_mut(..len)
        .ok_or(OpenError)?
        .copy_from_slice(&buf[..len]);
    Ok(())
}

/// XChaCha20-Poly1305 seal of a 16-byte cookie (cookie replies).
pub(crate) fn xaead_seal_cookie(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 24],
    cookie: &[u8; MAC_LEN],
    aad: &[u8],
) -> [u8; MAC_LEN + TAG_LEN] {
    let mut out = [0u8; MAC_LEN + TAG_LEN];
    out[..MAC_LEN].copy_from_slice(cookie);
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut out[..MAC_LEN])
        .unwrap_or_else(|_| unreachable!("16 bytes always seal"));
    out[MAC_LEN..].copy_from_slice(&tag);
    out
}

/// XChaCha20-Poly1305 open of a sealed cookie.
pub(crate) fn xaead_open_cookie(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 24],
    sealed: &[u8; MAC_LEN + TAG_LEN],
    aad: &[u8],
) -> Result<[u8; MAC_LEN], OpenError> {
    let mut cookie = [0u8; MAC_LEN];
    cookie.copy_from_slice(&sealed[..MAC_LEN]);
    let tag = Tag::clone_from_slice(&sealed[MAC_LEN..]);
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(XNonce::from_slice(nonce), aad, &mut cookie, &tag)
        .map_err(|_| OpenError)?;
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake2s_matches_rfc7693_abc() {
        // RFC 7693 Appendix B: BLAKE2s-256("abc").
        let expected = "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982";
        assert_eq!(hex::encode(hash(&[b"abc"])), expected);
        assert_eq!(hash(&[b"a", b"bc"]), hash(&[b"abc"]));
    }

    #[test]
    fn aead_round_trip_rejects_wrong_counter_tamper_and_truncation() {
        let key = [0x80u8; 32];
        let k = AeadKey::new(&key);
        let mut buf = [0u8; 64];
        buf[..5].copy_from_slice(b"hello");
        let n = k.seal(7, b"aad", &mut buf, 5);
        assert_eq!(n, 21);
        let mut sealed = buf[..n].to_vec();
        assert_eq!(k.open(7, b"aad", &mut sealed.clone()), Ok(5));
        assert_eq!(k.open(8, b"aad", &mut sealed.clone()), Err(OpenError));
        sealed[0] ^= 1;
        assert_eq!(k.open(7, b"aad", &mut sealed), Err(OpenError));
        assert_eq!(k.open(7, b"aad", &mut [0u8; 15]), Err(OpenError));
    }

    #[test]
    fn dh_rejects_low_order_points() {
        let s = x25519_dalek::StaticSecret::from([7u8; 32]);
        assert!(dh(&s, &[0u8; 32]).is_none());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh(&s, &one).is_none());
    }

    #[test]
    fn kdf_chain_is_prefix_consistent() {
        let ck = [3u8; 32];
        let k1 = kdf1(&ck, b"in");
        let (a, b) = kdf2(&ck, b"in");
        let (x, y, z) = kdf3(&ck, b"in");
        assert_eq!(*k1, *a);
        assert_eq!(*a, *x);
        assert_eq!(*b, *y);
        assert_ne!(*y, *z);
    }
}
