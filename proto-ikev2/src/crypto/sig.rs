//! Signatures for IKE authentication: ECDSA over P-256/P-384 and RSA
//! (PKCS#1 v1.5 and RSASSA-PSS) with SHA-2, the AlgorithmIdentifier that
//! RFC 7427 puts in front of each signature, and the raw r||s ECDSA of
//! RFC 4754 (auth methods 9 and 10) for peers that do not speak RFC 7427.
//!
//! ECDSA signing is deterministic (RFC 6979); RSA signing is blinded with
//! the caller's RNG.

use rand_core::{CryptoRng, RngCore};
use rsa::{Pkcs1v15Sign, Pss};
use sha2::{Digest, Sha256, Sha384, Sha512};
use thiserror::Error;
use x509_cert::der::asn1::Null;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Any, Decode, Encode};
use x509_cert::spki::AlgorithmIdentifierOwned;

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const RSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const RSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const RSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const RSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const SHA256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Hash algorithms, with their SIGNATURE_HASH_ALGORITHMS numbers (RFC 7427).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn ike_id(self) -> u16 {
        match self {
            Self::Sha256 => 2,
            Self::Sha384 => 3,
            Self::Sha512 => 4,
        }
    }

    pub fn from_ike_id(id: u16) -> Option<Self> {
        match id {
            2 => Some(Self::Sha256),
            3 => Some(Self::Sha384),
            4 => Some(Self::Sha512),
            _ => None,
        }
    }

    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(msg).to_vec(),
            Self::Sha384 => Sha384::digest(msg).to_vec(),
            Self::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::Sha256 => SHA256_OID,
            Self::Sha384 => SHA384_OID,
            Self::Sha512 => SHA512_OID,
        }
    }

    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        [Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|h| h.oid() == *oid)
    }

    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }
}

/// Every hash we sign and verify with, as SIGNATURE_HASH_ALGORITHMS data.
pub fn supported_hashes() -> Vec<u8> {
    [Hash::Sha256, Hash::Sha384, Hash::Sha512]
        .iter()
        .flat_map(|h| h.ike_id().to_be_bytes())
        .collect()
}

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    Ecdsa(Hash),
    RsaPkcs1(Hash),
    /// RSASSA-PSS with MGF1 over the same hash and a salt as long as it.
    RsaPss(Hash),
}

impl SigAlg {
    /// From a DER AlgorithmIdentifier (an X.509 signatureAlgorithm or
    /// the one in an RFC 7427 AUTH payload).
    pub fn from_algorithm_identifier(der: &[u8]) -> Option<Self> {
        let a = AlgorithmIdentifierOwned::from_der(der).ok()?;
        Some(match a.oid {
            o if o == ECDSA_SHA256 => Self::Ecdsa(Hash::Sha256),
            o if o == ECDSA_SHA384 => Self::Ecdsa(Hash::Sha384),
            o if o == ECDSA_SHA512 => Self::Ecdsa(Hash::Sha512),
            o if o == RSA_SHA256 => Self::RsaPkcs1(Hash::Sha256),
            o if o == RSA_SHA384 => Self::RsaPkcs1(Hash::Sha384),
            o if o == RSA_SHA512 => Self::RsaPkcs1(Hash::Sha512),
            o if o == RSA_PSS => {
                let any = a.parameters?;
                let params = any.decode_as::<rsa::pkcs1::RsaPssParams<'_>>().ok()?;
                let hash = Hash::from_oid(&params.hash.oid)?;
                let mgf_hash = params.mask_gen.parameters.map(|p| p.oid);
                if mgf_hash != Some(hash.oid()) || usize::from(params.salt_len) != hash.len() {
                    return None;
                }
                Self::RsaPss(hash)
            }
            _ => return None,
        })
    }

    /// The DER AlgorithmIdentifier.
    pub fn algorithm_identifier(self) -> Vec<u8> {
        let (oid, parameters) = match self {
            Self::Ecdsa(Hash::Sha256) => (ECDSA_SHA256, None),
            Self::Ecdsa(Hash::Sha384) => (ECDSA_SHA384, None),
            Self::Ecdsa(Hash::Sha512) => (ECDSA_SHA512, None),
            Self::RsaPkcs1(h) => (
                match h {
                    Hash::Sha256 => RSA_SHA256,
                    Hash::Sha384 => RSA_SHA384,
                    Hash::Sha512 => RSA_SHA512,
                },
                Any::encode_from(&Null).ok(),
            ),
            Self::RsaPss(h) => (RSA_PSS, pss_params(h)),
        };
        AlgorithmIdentifierOwned { oid, parameters }
            .to_der()
            .unwrap_or_default()
    }

    fn hash(self) -> Hash {
        match self {
            Self::Ecdsa(h) | Self::RsaPkcs1(h) | Self::RsaPss(h) => h,
        }
    }
}

fn pss_params(h: Hash) -> Option<Any> {
    let params = match h {
        Hash::Sha256 => rsa::pkcs1::RsaPssParams::new::<Sha256>(32),
        Hash::Sha384 => rsa::pkcs1::RsaPssParams::new::<Sha384>(48),
        Hash::Sha512 => rsa::pkcs1::RsaPssParams::new::<Sha512>(64),
    };
    Any::encode_from(&params).ok()
}

/// A public key from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(Box<p384::ecdsa::VerifyingKey>),
    Rsa(Box<rsa::RsaPublicKey>),
}

fn rsa_scheme_verify(k: &rsa::RsaPublicKey, alg: SigAlg, digest: &[u8], sig: &[u8]) -> bool {
    let r = match alg {
        SigAlg::RsaPkcs1(Hash::Sha256) => k.verify(Pkcs1v15Sign::new::<Sha256>(), digest, sig),
        SigAlg::RsaPkcs1(Hash::Sha384) => k.verify(Pkcs1v15Sign::new::<Sha384>(), digest, sig),
        SigAlg::RsaPkcs1(Hash::Sha512) => k.verify(Pkcs1v15Sign::new::<Sha512>(), digest, sig),
        SigAlg::RsaPss(Hash::Sha256) => k.verify(Pss::new::<Sha256>(), digest, sig),
        SigAlg::RsaPss(Hash::Sha384) => k.verify(Pss::new::<Sha384>(), digest, sig),
        SigAlg::RsaPss(Hash::Sha512) => k.verify(Pss::new::<Sha512>(), digest, sig),
        SigAlg::Ecdsa(_) => return false,
    };
    r.is_ok()
}

/// Whether `sig` (DER for ECDSA) is `key`'s signature of `msg` under `alg`.
pub fn verify(key: &PublicKey, alg: SigAlg, msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let digest = alg.hash().digest(msg);
    match (key, alg) {
        (PublicKey::P256(k), SigAlg::Ecdsa(_)) => p256::ecdsa::DerSignature::from_bytes(sig)
            .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
        (PublicKey::P384(k), SigAlg::Ecdsa(_)) => p384::ecdsa::DerSignature::from_bytes(sig)
            .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
        (PublicKey::Rsa(k), _) => rsa_scheme_verify(k, alg, &digest, sig),
        _ => false,
    }
}

/// RFC 4754 (auth methods 9 and 10): r||s, SHA-256 with P-256 and
/// SHA-384 with P-384.
pub fn verify_raw_ecdsa(key: &PublicKey, method: u8, msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier;
    match (key, method) {
        (PublicKey::P256(k), 9) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
        }
        (PublicKey::P384(k), 10) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
        }
        _ => false,
    }
}

/// A DER ECDSA signature as RFC 4754's fixed-size r||s.
pub fn der_to_raw_ecdsa(key: &PrivateKey, der: &[u8]) -> Option<Vec<u8>> {
    match key {
        PrivateKey::P256(_) => p256::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        PrivateKey::P384(_) => p384::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        PrivateKey::Rsa(_) => None,
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("not a PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA)")]
    Unreadable,
    #[error("unsupported private key (ECDSA P-256/P-384 and RSA are)")]
    Unsupported,
}

/// Our private key.
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    P384(Box<p384::ecdsa::SigningKey>),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::P256(_) => "PrivateKey::P256(..)",
            Self::P384(_) => "PrivateKey::P384(..)",
            Self::Rsa(_) => "PrivateKey::Rsa(..)",
        })
    }
}

impl PrivateKey {
    /// Reads a PEM private key: PKCS#8, SEC1 ("EC PRIVATE KEY") or PKCS#1
    /// ("RSA PRIVATE KEY").
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePrivateKey;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        if pem.contains("BEGIN EC PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
                return Ok(Self::P256(k.into()));
            }
            if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
                return Ok(Self::P384(Box::new(k.into())));
            }
            return Err(KeyError::Unsupported);
        }
        if pem.contains("BEGIN RSA PRIVATE KEY") {
            return rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map(|k| Self::Rsa(Box::new(k)))
                .map_err(|_| KeyError::Unreadable);
        }
        if pem.contains("BEGIN PRIVATE KEY") {
            if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
                return Ok(Self::P256(k.into()));
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_pem(pem) {
                return Ok(Self::P384(Box::new(k.into())));
            }
            if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
                return Ok(Self::Rsa(Box::new(k)));
            }
            return Err(KeyError::Unsupported);
        }
        Err(KeyError::Unreadable)
    }

    pub fn public_key(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::P384(k) => PublicKey::P384(Box::new(*k.verifying_key())),
            Self::Rsa(k) => PublicKey::Rsa(Box::new(k.to_public_key())),
        }
    }

    /// The algorithm we sign with, given the hashes the peer announced
    /// (SIGNATURE_HASH_ALGORITHMS): the hash that matches the key's
    /// strength if the peer takes it, else any the peer takes.
    pub fn algorithm(&self, peer_hashes: &[Hash], rsa_pss: bool) -> SigAlg {
        let preferred = match self {
            Self::P384(_) => Hash::Sha384,
            _ => Hash::Sha256,
        };
        let hash = if peer_hashes.is_empty() || peer_hashes.contains(&preferred) {
            preferred
        } else {
            peer_hashes[0]
        };
        match self {
            Self::P256(_) | Self::P384(_) => SigAlg::Ecdsa(hash),
            Self::Rsa(_) if rsa_pss => SigAlg::RsaPss(hash),
            Self::Rsa(_) => SigAlg::RsaPkcs1(hash),
        }
    }

    /// Signs `msg` (DER signature for ECDSA).
    pub fn sign(
        &self,
        alg: SigAlg,
        msg: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Option<Vec<u8>> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let digest = alg.hash().digest(msg);
        match (self, alg) {
            (Self::P256(k), SigAlg::Ecdsa(_)) => {
                let s: p256::ecdsa::DerSignature = k.sign_prehash(&digest).ok()?;
                Some(s.as_bytes().to_vec())
            }
            (Self::P384(k), SigAlg::Ecdsa(_)) => {
                let s: p384::ecdsa::DerSignature = k.sign_prehash(&digest).ok()?;
                Some(s.as_bytes().to_vec())
            }
            (Self::Rsa(k), SigAlg::RsaPkcs1(h)) => {
                let scheme = match h {
                    Hash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
                    Hash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
                    Hash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
                };
                k.sign_with_rng(rng, scheme, &digest).ok()
            }
            (Self::Rsa(k), SigAlg::RsaPss(h)) => match h {
                Hash::Sha256 => k.sign_with_rng(rng, Pss::new::<Sha256>(), &digest).ok(),
                Hash::Sha384 => k.sign_with_rng(rng, Pss::new::<Sha384>(), &digest).ok(),
                Hash::Sha512 => k.sign_with_rng(rng, Pss::new::<Sha512>(), &digest).ok(),
            },
            _ => None,
        }
    }
}

/// RFC 7427 §3: AUTH data = length of the AlgorithmIdentifier (one
/// octet) | AlgorithmIdentifier | signature.
pub fn auth_data(alg: SigAlg, signature: &[u8]) -> Vec<u8> {
    let id = alg.algorithm_identifier();
    let mut out = Vec::with_capacity(1 + id.len() + signature.len());
    out.push(id.len() as u8);
    out.extend_from_slice(&id);
    out.extend_from_slice(signature);
    out
}

/// Splits RFC 7427 AUTH data into the algorithm and the signature.
pub fn parse_auth_data(data: &[u8]) -> Option<(SigAlg, &[u8])> {
    let (&len, rest) = data.split_first()?;
    let id = rest.get(..usize::from(len))?;
    let sig = rest.get(usize::from(len)..)?;
    Some((SigAlg::from_algorithm_identifier(id)?, sig))
}
