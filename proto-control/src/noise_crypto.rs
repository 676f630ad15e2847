//! Every primitive the control channel's Noise handshake and transport
//! use, handed to snow through its resolver interface so that snow holds
//! no key material of its own making:
//!
//! - X25519 (x25519-dalek): the static and ephemeral private keys live in
//!   `StaticSecret`s, wiped when dropped; a low-order peer key (an
//!   all-zero shared secret) fails the handshake.
//! - ChaCha20-Poly1305 (RustCrypto): the cipher key is wiped when dropped.
//! - BLAKE2s, with HMAC and HKDF done here so their pads and temporary
//!   keys are wiped too.
//! - Randomness: a ChaCha20 stream from the caller's seed (sans-IO).
//!
//! What stays outside: snow's `SymmetricState` keeps the chaining key and
//! handshake hash in plain arrays that snow does not wipe; they live only
//! until the handshake turns into transport mode.

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::ChaCha20Poly1305;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const BLAKE2S_BLOCK: usize = 64;
const BLAKE2S_LEN: usize = 32;

/// The X25519 public key of a 32-byte private key.
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// Resolves exactly the primitives of `Noise_IK_25519_ChaChaPoly_BLAKE2s`.
pub(crate) struct Resolver {
    seed: Zeroizing<[u8; 32]>,
}

impl Resolver {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Self {
            seed: Zeroizing::new(seed),
        }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        matches!(choice, DHChoice::Curve25519).then(|| Box::new(X25519::default()) as Box<dyn Dh>)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        matches!(choice, HashChoice::Blake2s)
            .then(|| Box::new(Blake2s(Blake2s256::new())) as Box<dyn Hash>)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        matches!(choice, CipherChoice::ChaChaPoly)
            .then(|| Box::new(ChaChaPoly::default()) as Box<dyn Cipher>)
    }
}

/// A ChaCha20 stream from the caller's seed, so the handshake's ephemeral
/// keys come from the caller and nothing here reads OS randomness.
struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// An X25519 key pair whose private half is wiped on drop.
#[derive(Default)]
struct X25519 {
    secret: Option<StaticSecret>,
    public: [u8; 32],
    /// snow asks for the private key as bytes; kept wiped like the secret.
    private: Zeroizing<[u8; 32]>,
}

impl X25519 {
    fn set_bytes(&mut self, bytes: &[u8; 32]) {
        let secret = StaticSecret::from(*bytes);
        self.public = PublicKey::from(&secret).to_bytes();
        self.secret = Some(secret);
        self.private.copy_from_slice(bytes);
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut bytes = Zeroizing::new([0u8; 32]);
        let n = privkey.len().min(32);
        bytes[..n].copy_from_slice(&privkey[..n]);
        self.set_bytes(&bytes);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut bytes[..])?;
        self.set_bytes(&bytes);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private[..]
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let secret = self.secret.as_ref().ok_or(snow::Error::Dh)?;
        let shared = secret.diffie_hellman(&PublicKey::from(peer));
        // A low-order point gives a shared secret anyone can compute.
        if !shared.was_contributory() {
            return Err(snow::Error::Dh);
        }
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

/// ChaCha20-Poly1305 with Noise's nonce layout (32 zero bits, then the
/// 64-bit counter little-endian); the key is wiped on drop.
#[derive(Default)]
struct ChaChaPoly {
    key: Zeroizing<[u8; KEY_LEN]>,
}

fn nonce(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_le_bytes());
    out
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }
    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key.copy_from_slice(key);
    }
    fn encrypt(&self, nonce_n: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        // snow sizes `out` for the plaintext and the tag.
        let len = plaintext.len();
        out[..len].copy_from_slice(plaintext);
        let tag = ChaCha20Poly1305::new((&*self.key).into())
            .encrypt_in_place_detached(&nonce(nonce_n).into(), authtext, &mut out[..len])
            .unwrap_or_else(|_| unreachable!("Noise messages are far below the AEAD's limit"));
        out[len..len + TAG_LEN].copy_from_slice(&tag);
        len + TAG_LEN
    }
    fn decrypt(
        &self,
        nonce_n: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let body = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        body.copy_from_slice(&ciphertext[..len]);
        ChaCha20Poly1305::new((&*self.key).into())
            .decrypt_in_place_detached(
                &nonce(nonce_n).into(),
                authtext,
                body,
                ciphertext[len..].into(),
            )
            .map_err(|_| {
                body.zeroize();
                snow::Error::Decrypt
            })?;
        Ok(len)
    }
}

/// BLAKE2s; HMAC and HKDF (Noise §4.3) are written out here rather than
/// taken from snow's defaults, which leave pads and keys on the stack.
struct Blake2s(Blake2s256);

impl Hash for Blake2s {
    fn name(&self) -> &'static str {
        "BLAKE2s"
    }
    fn block_len(&self) -> usize {
        BLAKE2S_BLOCK
    }
    fn hash_len(&self) -> usize {
        BLAKE2S_LEN
    }
    fn reset(&mut self) {
        self.0 = Blake2s256::new();
    }
    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn result(&mut self, out: &mut [u8]) {
        out[..BLAKE2S_LEN].copy_from_slice(&self.0.finalize_reset());
    }
    fn hmac(&mut self, key: &[u8], data: &[u8], out: &mut [u8]) {
        let mut ipad = Zeroizing::new([0x36u8; BLAKE2S_BLOCK]);
        let mut opad = Zeroizing::new([0x5cu8; BLAKE2S_BLOCK]);
        // Noise keys are never longer than the hash output.
        for (i, k) in key.iter().take(BLAKE2S_BLOCK).enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = Zeroizing::new([0u8; BLAKE2S_LEN]);
        self.reset();
        self.input(&ipad[..]);
        self.input(data);
        self.result(&mut inner[..]);
        self.input(&opad[..]);
        self.input(&inner[..]);
        self.result(out);
    }
    fn hkdf(
        &mut self,
        chaining_key: &[u8],
        input_key_material: &[u8],
        outputs: usize,
        out1: &mut [u8],
        out2: &mut [u8],
        out3: &mut [u8],
    ) {
        let mut temp_key = Zeroizing::new([0u8; BLAKE2S_LEN]);
        self.hmac(chaining_key, input_key_material, &mut temp_key[..]);
        self.hmac(&temp_key[..], &[1], out1);
        if outputs == 1 {
            return;
        }
        let mut input = Zeroizing::new([0u8; BLAKE2S_LEN + 1]);
        input[..BLAKE2S_LEN].copy_from_slice(&out1[..BLAKE2S_LEN]);
        input[BLAKE2S_LEN] = 2;
        self.hmac(&temp_key[..], &input[..], out2);
        if outputs == 2 {
            return;
        }
        input[..BLAKE2S_LEN].copy_from_slice(&out2[..BLAKE2S_LEN]);
        input[BLAKE2S_LEN] = 3;
        self.hmac(&temp_key[..], &input[..], out3);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7693 Appendix B's BLAKE2s("abc") digest, and HMAC checked
    /// against RustCrypto's own HMAC over BLAKE2s.
    #[test]
    fn blake2s_and_its_hmac_match_the_references() {
        let mut h = Blake2s(Blake2s256::new());
        h.input(b"abc");
        let mut out = [0u8; 32];
        h.result(&mut out);
        assert_eq!(
            hex(&out),
            "508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982"
        );
        for key_len in [0usize, 1, 32, 64] {
            let key = vec![0x0b; key_len];
            let mut ours = [0u8; 32];
            h.hmac(&key, b"message", &mut ours);
            let mut reference =
                <hmac::SimpleHmac<Blake2s256> as hmac::Mac>::new_from_slice(&key).unwrap();
            hmac::Mac::update(&mut reference, b"message");
            let reference = hmac::Mac::finalize(reference).into_bytes();
            assert_eq!(ours[..], reference[..], "{key_len}");
        }
    }

    #[test]
    fn low_order_peer_keys_fail() {
        let mut dh = X25519::default();
        dh.set(&[7; 32]);
        let mut out = [0u8; 32];
        assert!(dh.dh(&[0; 32], &mut out).is_err());
        assert!(dh.dh(&public_key(&[9; 32]), &mut out).is_ok());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
