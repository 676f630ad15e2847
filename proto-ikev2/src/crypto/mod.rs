//! All of IKE's cryptography, in one folder:
//!
//! - `prf.rs`: the PRF and prf+; `keys.rs`: the key schedule (SKEYSEED,
//!   SK_*, Child SA key material);
//! - `dh.rs`: Diffie-Hellman groups 14, 19, 20 and 31;
//! - `sk.rs`: the Encrypted (SK) payload, sealed with proto-esp's
//!   `Cipher`, shared with the data path (one file of symmetric crypto
//!   for IKE and ESP);
//! - `auth.rs`: PSK AUTH data and its constant-time check; `sig.rs`:
//!   signatures for certificate AUTH (ECDSA, RSA PKCS#1 v1.5 and PSS,
//!   RFC 7427 digital signatures);
//! - `cookie.rs`: the responder's stateless cookies;
//! - `nat.rs`: the NAT detection hashes.
//!
//! `cert.rs` (outside) is X.509 parsing and path checks; it calls `sig`.

pub mod auth;
pub mod cookie;
pub mod dh;
pub mod keys;
pub mod nat;
pub mod prf;
pub mod sig;
pub mod sk;

pub use dh::{DhError, DhGroup, KeyShare};
pub use keys::{ChildKeys, IkeKeys};
pub use prf::Prf;

use crate::wire::consts::transform as t;
use proto_esp::Integ;

/// An encryption transform (for the SK payload or for ESP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encr {
    /// AES-GCM with a 16-byte ICV, 128- or 256-bit key (RFC 5282 / 4106).
    AesGcm16 { bits: u16 },
    /// ChaCha20-Poly1305 (RFC 7634).
    ChaCha20Poly1305,
    /// AES-CBC, 128- or 256-bit key (RFC 3602); needs an integrity transform.
    AesCbc { bits: u16 },
}

impl Encr {
    pub fn from_transform(id: u16, key_len: Option<u16>) -> Option<Self> {
        match (id, key_len) {
            (t::ENCR_AES_GCM_16, Some(bits @ (128 | 256))) => Some(Self::AesGcm16 { bits }),
            (t::ENCR_CHACHA20_POLY1305, None) => Some(Self::ChaCha20Poly1305),
            (t::ENCR_AES_CBC, Some(bits @ (128 | 256))) => Some(Self::AesCbc { bits }),
            _ => None,
        }
    }

    pub fn transform_id(self) -> (u16, Option<u16>) {
        match self {
            Self::AesGcm16 { bits } => (t::ENCR_AES_GCM_16, Some(bits)),
            Self::ChaCha20Poly1305 => (t::ENCR_CHACHA20_POLY1305, None),
            Self::AesCbc { bits } => (t::ENCR_AES_CBC, Some(bits)),
        }
    }

    pub fn is_aead(self) -> bool {
        !matches!(self, Self::AesCbc { .. })
    }

    /// Key material taken from prf+: the key, plus a 4-byte salt for the
    /// AEADs (RFC 5282 §7.1, RFC 7634 §4).
    pub fn keymat_len(self) -> usize {
        match self {
            Self::AesGcm16 { bits } => bits as usize / 8 + 4,
            Self::ChaCha20Poly1305 => 36,
            Self::AesCbc { bits } => bits as usize / 8,
        }
    }

    /// The cipher for one direction, from its key material.
    pub fn cipher(
        self,
        keymat: &[u8],
        integ: Option<(Integ, &[u8])>,
    ) -> Result<proto_esp::Cipher, proto_esp::cipher::KeyError> {
        match (self, integ) {
            (Self::AesGcm16 { .. }, _) => proto_esp::Cipher::aes_gcm(keymat),
            (Self::ChaCha20Poly1305, _) => proto_esp::Cipher::chacha20_poly1305(keymat),
            (Self::AesCbc { .. }, Some((integ, key))) => {
                proto_esp::Cipher::aes_cbc(keymat, integ, key)
            }
            (Self::AesCbc { .. }, None) => Err(proto_esp::cipher::KeyError::Length(0)),
        }
    }
}

/// The integrity transform ids this crate supports.
pub fn integ_from_transform(id: u16) -> Option<Integ> {
    match id {
        t::AUTH_HMAC_SHA2_256_128 => Some(Integ::HmacSha256),
        t::AUTH_HMAC_SHA2_384_192 => Some(Integ::HmacSha384),
        t::AUTH_HMAC_SHA2_512_256 => Some(Integ::HmacSha512),
        _ => None,
    }
}

pub fn integ_transform_id(i: Integ) -> u16 {
    match i {
        Integ::HmacSha256 => t::AUTH_HMAC_SHA2_256_128,
        Integ::HmacSha384 => t::AUTH_HMAC_SHA2_384_192,
        Integ::HmacSha512 => t::AUTH_HMAC_SHA2_512_256,
    }
}
