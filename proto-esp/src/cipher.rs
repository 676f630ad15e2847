//! The ESP transforms: what protects the payload and how the ICV is made.
//! Every primitive this crate uses is called from this file.
//!
//! - AES-GCM with a 16-byte ICV (RFC 4106) and ChaCha20-Poly1305 (RFC 7634):
//!   key material is key || 4-byte salt; nonce = salt || 8-byte IV; the IV
//!   is the 64-bit sequence number (unique per SA, as both RFCs require).
//! - AES-CBC (RFC 3602) with HMAC-SHA2 (RFC 4868): the IV must be
//!   unpredictable; it is AES_K(sequence number), the construction NIST
//!   SP 800-38A appendix C gives (a unique nonce under the same key).

use aes::cipher::BlockEncrypt;
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("wrong key material length {0} for this transform")]
    Length(usize),
}

/// Integrity algorithm for AES-CBC SAs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integ {
    /// HMAC-SHA-256-128: 32-byte key, 16-byte ICV.
    HmacSha256,
    /// HMAC-SHA-384-192: 48-byte key, 24-byte ICV.
    HmacSha384,
    /// HMAC-SHA-512-256: 64-byte key, 32-byte ICV.
    HmacSha512,
}

impl Integ {
    pub fn key_len(self) -> usize {
        match self {
            Self::HmacSha256 => 32,
            Self::HmacSha384 => 48,
            Self::HmacSha512 => 64,
        }
    }

    pub fn icv_len(self) -> usize {
        self.key_len() / 2
    }
}

enum Aead {
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

enum Kind {
    Aead {
        aead: Aead,
        salt: [u8; 4],
    },
    Cbc {
        key: Zeroizing<Vec<u8>>,
        integ: Integ,
        integ_key: Zeroizing<Vec<u8>>,
    },
}

/// The keys of one SA direction, ready to use.
pub struct Cipher {
    kind: Kind,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match &self.kind {
            Kind::Aead {
                aead: Aead::Gcm128(_),
                ..
            } => "AES-128-GCM-16",
            Kind::Aead {
                aead: Aead::Gcm256(_),
                ..
            } => "AES-256-GCM-16",
            Kind::Aead {
                aead: Aead::ChaCha(_),
                ..
            } => "ChaCha20-Poly1305",
            Kind::Cbc { .. } => "AES-CBC + HMAC-SHA2",
        };
        f.write_str(name) // never the keys
    }
}

/// Why opening failed; deliberately one variant (no oracle).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("integrity check failed")]
pub struct OpenError;

/// RFC 4106 §4 / RFC 7634 §2: salt || the packet's 8-byte IV.
fn nonce(salt: &[u8; 4], iv: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(iv);
    n
}

fn salt(b: &[u8]) -> [u8; 4] {
    let mut s = [0u8; 4];
    s.copy_from_slice(b);
    s
}

impl Cipher {
    /// AES-GCM-16 from IKE key material: 16- or 32-byte key, then salt.
    pub fn aes_gcm(keymat: &[u8]) -> Result<Self, KeyError> {
        let aead = match keymat.len() {
            20 => Aead::Gcm128(Box::new(
                Aes128Gcm::new_from_slice(&keymat[..16]).map_err(|_| KeyError::Length(20))?,
            )),
            36 => Aead::Gcm256(Box::new(
                Aes256Gcm::new_from_slice(&keymat[..32]).map_err(|_| KeyError::Length(36))?,
            )),
            n => return Err(KeyError::Length(n)),
        };
        Ok(Self {
            kind: Kind::Aead {
                aead,
                salt: salt(&keymat[keymat.len() - 4..]),
            },
        })
    }

    /// ChaCha20-Poly1305 from IKE key material: 32-byte key, then salt.
    pub fn chacha20_poly1305(keymat: &[u8]) -> Result<Self, KeyError> {
        if keymat.len() != 36 {
            return Err(KeyError::Length(keymat.len()));
        }
        let aead =
            ChaCha20Poly1305::new_from_slice(&keymat[..32]).map_err(|_| KeyError::Length(36))?;
        Ok(Self {
            kind: Kind::Aead {
                aead: Aead::ChaCha(Box::new(aead)),
                salt: salt(&keymat[32..]),
            },
        })
    }

    /// AES-CBC (16- or 32-byte key) with an HMAC-SHA2 integrity key.
    pub fn aes_cbc(key: &[u8], integ: Integ, integ_key: &[u8]) -> Result<Self, KeyError> {
        if !matches!(key.len(), 16 | 32) {
            return Err(KeyError::Length(key.len()));
        }
        if integ_key.len() != integ.key_len() {
            return Err(KeyError::Length(integ_key.len()));
        }
        Ok(Self {
            kind: Kind::Cbc {
                key: Zeroizing::new(key.to_vec()),
                integ,
                integ_key: Zeroizing::new(integ_key.to_vec()),
            },
        })
    }

    pub fn iv_len(&self) -> usize {
        match self.kind {
            Kind::Aead { .. } => 8,
            Kind::Cbc { .. } => 16,
        }
    }

    pub fn icv_len(&self) -> usize {
        match &self.kind {
            Kind::Aead { .. } => 16,
            Kind::Cbc { integ, .. } => integ.icv_len(),
        }
    }

    /// What payload + padding + 2 trailer bytes must be a multiple of.
    pub fn align(&self) -> usize {
        match self.kind {
            Kind::Aead { .. } => 4,
            Kind::Cbc { .. } => 16,
        }
    }

    pub fn is_aead(&self) -> bool {
        matches!(self.kind, Kind::Aead { .. })
    }

    /// The IV for sequence number `seq` (written into `iv`).
    pub fn make_iv(&self, seq: u64, iv: &mut [u8]) {
        match &self.kind {
            Kind::Aead { .. } => iv.copy_from_slice(&seq.to_be_bytes()),
            Kind::Cbc { key, .. } => {
                let mut block = aes::Block::default();
                block[8..].copy_from_slice(&seq.to_be_bytes());
                if key.len() == 16 {
                    aes::Aes128::new_from_slice(key)
                        .map(|c| c.encrypt_block(&mut block))
                        .ok();
                } else {
                    aes::Aes256::new_from_slice(key)
                        .map(|c| c.encrypt_block(&mut block))
                        .ok();
                }
                iv.copy_from_slice(&block);
            }
        }
    }

    /// AEAD: encrypts `data` in place and writes the tag into `icv`.
    /// CBC: encrypts in place; the ICV comes from [`Cipher::mac`].
    pub fn seal(&self, aad: &[u8], iv: &[u8], data: &mut [u8], icv: &mut [u8]) {
        match &self.kind {
            Kind::Aead { aead, salt } => {
                let nonce = nonce(salt, iv);
                let nonce = aes_gcm::Nonce::from_slice(&nonce);
                let tag = match aead {
                    Aead::Gcm128(c) => c.encrypt_in_place_detached(nonce, aad, data),
                    Aead::Gcm256(c) => c.encrypt_in_place_detached(nonce, aad, data),
                    Aead::ChaCha(c) => c.encrypt_in_place_detached(nonce, aad, data),
                };
                if let Ok(tag) = tag {
                    icv.copy_from_slice(&tag);
                }
            }
            Kind::Cbc { key, .. } => {
                let n = data.len();
                if key.len() == 16 {
                    if let Ok(e) = cbc::Encryptor::<aes::Aes128>::new_from_slices(key, iv) {
                        let _ = e.encrypt_padded_mut::<NoPadding>(data, n);
                    }
                } else if let Ok(e) = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, iv) {
                    let _ = e.encrypt_padded_mut::<NoPadding>(data, n);
                }
            }
        }
    }

    /// CBC SAs: the HMAC ICV over `parts` (header, IV, ciphertext and, with
    /// ESN, the high sequence bits), truncated.
    pub fn mac(&self, parts: &[&[u8]], icv: &mut [u8]) {
        let Kind::Cbc {
            integ, integ_key, ..
        } = &self.kind
        else {
            return;
        };
        macro_rules! run {
            ($h:ty) => {{
                let Ok(mut m) = <Hmac<$h> as Mac>::new_from_slice(integ_key) else {
                    return;
                };
                for p in parts {
                    m.update(p);
                }
                let full = m.finalize().into_bytes();
                icv.copy_from_slice(&full[..icv.len()]);
            }};
        }
        match integ {
            Integ::HmacSha256 => run!(sha2::Sha256),
            Integ::HmacSha384 => run!(sha2::Sha384),
            Integ::HmacSha512 => run!(sha2::Sha512),
        }
    }

    /// AEAD: checks the tag and decrypts in place. CBC: decrypts in place
    /// (the caller has checked the ICV with [`Cipher::verify_mac`] first).
    pub fn open(
        &self,
        aad: &[u8],
        iv: &[u8],
        data: &mut [u8],
        icv: &[u8],
    ) -> Result<(), OpenError> {
        match &self.kind {
            Kind::Aead { aead, salt } => {
                let nonce = nonce(salt, iv);
                let nonce = aes_gcm::Nonce::from_slice(&nonce);
                let tag = aes_gcm::Tag::from_slice(icv);
                match aead {
                    Aead::Gcm128(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
                    Aead::Gcm256(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
                    Aead::ChaCha(c) => c.decrypt_in_place_detached(nonce, aad, data, tag),
                }
                .map_err(|_| OpenError)
            }
            Kind::Cbc { key, .. } => {
                if data.len() % 16 != 0 {
                    return Err(OpenError);
                }
                let r = if key.len() == 16 {
                    cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                        .map_err(|_| OpenError)?
                        .decrypt_padded_mut::<NoPadding>(data)
                        .map(|_| ())
                } else {
                    cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                        .map_err(|_| OpenError)?
                        .decrypt_padded_mut::<NoPadding>(data)
                        .map(|_| ())
                };
                r.map_err(|_| OpenError)
            }
        }
    }

    /// CBC SAs: whether `icv` is right for `parts`, in constant time.
    pub fn verify_mac(&self, parts: &[&[u8]], icv: &[u8]) -> bool {
        let mut want = [0u8; 32];
        let want = &mut want[..self.icv_len()];
        self.mac(parts, want);
        icv.len() == want.len() && bool::from(want.ct_eq(icv))
    }
}
