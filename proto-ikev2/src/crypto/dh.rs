//! Diffie-Hellman groups: 19 (ECP-256) and 20 (ECP-384) per RFC 5903,
//! 31 (Curve25519) per RFC 8031, 14 (MODP-2048) per RFC 3526. A peer's
//! public value is validated before use; a secret never leaves this file
//! except as the shared value g^ir.

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Encoding, U2048, U256};
use rand_core::{CryptoRng, RngCore};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhGroup {
    Modp2048,
    Ecp256,
    Ecp384,
    Curve25519,
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DhError {
    #[error("key exchange data of {got} bytes where group {group} needs {want}")]
    Length { group: u16, got: usize, want: usize },
    #[error("peer's public value is not valid in group {0}")]
    InvalidPublic(u16),
}

/// RFC 3526 §3: the 2048-bit MODP prime; the generator is 2.
const MODP_2048_P: U2048 = U2048::from_be_hex(concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
));
/// RFC 3526 asks for at least twice the group's strength (112 bits).
const MODP_EXPONENT_BITS: usize = 256;

impl DhGroup {
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            14 => Some(Self::Modp2048),
            19 => Some(Self::Ecp256),
            20 => Some(Self::Ecp384),
            31 => Some(Self::Curve25519),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Self::Modp2048 => 14,
            Self::Ecp256 => 19,
            Self::Ecp384 => 20,
            Self::Curve25519 => 31,
        }
    }

    /// The length of a public value in a KE payload.
    pub fn public_len(self) -> usize {
        match self {
            Self::Modp2048 => 256,
            Self::Ecp256 => 64,
            Self::Ecp384 => 96,
            Self::Curve25519 => 32,
        }
    }
}

enum Secret {
    Modp(Zeroizing<[u8; 32]>),
    Ecp256(p256::SecretKey),
    Ecp384(p384::SecretKey),
    X25519(x25519_dalek::StaticSecret),
}

/// Our half of one exchange: the secret and the public value to send.
pub struct KeyShare {
    group: DhGroup,
    secret: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

fn modp(x: &U2048) -> DynResidue<{ U2048::LIMBS }> {
    DynResidue::new(x, DynResidueParams::new(&MODP_2048_P))
}

impl KeyShare {
    pub fn generate(group: DhGroup, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let share = match group {
            DhGroup::Modp2048 | DhGroup::Curve25519 => {
                let mut x = Zeroizing::new([0u8; 32]);
                rng.fill_bytes(&mut x[..]);
                Self::from_secret(group, &x[..])
            }
            DhGroup::Ecp256 => Self::ecp256(p256::SecretKey::random(rng)),
            DhGroup::Ecp384 => Self::ecp384(p384::SecretKey::random(rng)),
        };
        share.unwrap_or_else(|| unreachable!("a fresh secret of the right length is valid"))
    }

    /// A share from a known secret (test vectors; deterministic runs).
    /// `None` if the bytes are not a valid secret for the group.
    pub fn from_secret(group: DhGroup, secret: &[u8]) -> Option<Self> {
        match group {
            DhGroup::Modp2048 => {
                let mut x = Zeroizing::new([0u8; 32]);
                if secret.len() != 32 {
                    return None;
                }
                x.copy_from_slice(secret);
                let e = U256::from_be_slice(&x[..]);
                let y = modp(&U2048::from(2u8)).pow_bounded_exp(&e, MODP_EXPONENT_BITS);
                Some(Self {
                    group,
                    public: y.retrieve().to_be_bytes().to_vec(),
                    secret: Secret::Modp(x),
                })
            }
            DhGroup::Ecp256 => Self::ecp256(p256::SecretKey::from_slice(secret).ok()?),
            DhGroup::Ecp384 => Self::ecp384(p384::SecretKey::from_slice(secret).ok()?),
            DhGroup::Curve25519 => {
                let mut b = Zeroizing::new([0u8; 32]);
                if secret.len() != 32 {
                    return None;
                }
                b.copy_from_slice(secret);
                let sk = x25519_dalek::StaticSecret::from(*b);
                let public = x25519_dalek::PublicKey::from(&sk).as_bytes().to_vec();
                Some(Self {
                    group,
                    secret: Secret::X25519(sk),
                    public,
                })
            }
        }
    }

    fn ecp256(sk: p256::SecretKey) -> Option<Self> {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = sk.public_key().to_encoded_point(false);
        Some(Self {
            group: DhGroup::Ecp256,
            public: point.as_bytes().get(1..)?.to_vec(),
            secret: Secret::Ecp256(sk),
        })
    }

    fn ecp384(sk: p384::SecretKey) -> Option<Self> {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        let point = sk.public_key().to_encoded_point(false);
        Some(Self {
            group: DhGroup::Ecp384,
            public: point.as_bytes().get(1..)?.to_vec(),
            secret: Secret::Ecp384(sk),
        })
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// What goes into our KE payload.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's KE data, after validating it.
    pub fn shared(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        let id = self.group.id();
        if peer.len() != self.group.public_len() {
            return Err(DhError::Length {
                group: id,
                got: peer.len(),
                want: self.group.public_len(),
            });
        }
        let invalid = DhError::InvalidPublic(id);
        match &self.secret {
            Secret::Modp(x) => {
                let y = U2048::from_be_slice(peer);
                // 1 < y < p-1 (RFC 7296 §5 / SP 800-56A public key checks).
                let p_minus_1 = MODP_2048_P.wrapping_sub(&U2048::ONE);
                if y <= U2048::ONE || y >= p_minus_1 {
                    return Err(invalid);
                }
                let e = U256::from_be_slice(&x[..]);
                let mut z = modp(&y).pow_bounded_exp(&e, MODP_EXPONENT_BITS).retrieve();
                let out = Zeroizing::new(z.to_be_bytes().to_vec());
                z.zeroize();
                Ok(out)
            }
            Secret::Ecp256(sk) => {
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let pk = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| invalid)?;
                let z = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
            }
            Secret::Ecp384(sk) => {
                let mut sec1 = Vec::with_capacity(97);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let pk = p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| invalid)?;
                let z = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
            }
            Secret::X25519(sk) => {
                let mut b = [0u8; 32];
                b.copy_from_slice(peer);
                let z = sk.diffie_hellman(&x25519_dalek::PublicKey::from(b));
                // RFC 8031 §2: an all-zero result means a low-order point.
                if !z.was_contributory() {
                    return Err(invalid);
                }
                Ok(Zeroizing::new(z.as_bytes().to_vec()))
            }
        }
    }
}
