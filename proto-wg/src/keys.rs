//! Key types. Private and preshared keys are wiped on drop and never appear
//! in `Debug` output.

use core::fmt;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::{ct_eq, KEY_LEN};

/// A Curve25519 private key (clamped on use by X25519).
#[derive(Clone)]
pub struct PrivateKey(x25519_dalek::StaticSecret);

impl PrivateKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(x25519_dalek::StaticSecret::from(bytes))
    }

    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    /// The raw bytes, in a buffer that wipes itself.
    pub fn to_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    pub(crate) fn secret(&self) -> &x25519_dalek::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public={:?})", self.public_key())
    }
}

/// A Curve25519 public key; identifies a peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A short prefix is enough to tell peers apart in logs.
        write!(f, "PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// An optional symmetric key mixed into the handshake (post-quantum hedge).
/// The all-zero key means "none", exactly as in the protocol.
#[derive(Clone, Default)]
pub struct PresharedKey(Zeroizing<[u8; KEY_LEN]>);

impl PresharedKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        ct_eq(&*self.0, &[0u8; KEY_LEN])
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&*self.0, &*other.0)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_zero() {
            "PresharedKey(none)"
        } else {
            "PresharedKey(<redacted>)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_secret_bytes() {
        let sk = PrivateKey::from_bytes([0xab; 32]);
        let psk = PresharedKey::from_bytes([0xcd; 32]);
        let text = format!("{sk:?} {psk:?}");
        assert!(!text.contains("abab"), "{text}");
        assert!(!text.contains("cdcd"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn public_key_matches_rfc7748_vector() {
        // RFC 7748 §6.1, Alice.
        let sk: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .expect("hex")
                .try_into()
                .expect("32");
        let pk = PrivateKey::from_bytes(sk).public_key();
        assert_eq!(
            hex::encode(pk.0),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
