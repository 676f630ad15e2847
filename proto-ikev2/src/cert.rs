//! X.509 certificates for IKE authentication (RFC 7296 §3.6, RFC 5280):
//! parsing, the public key inside, a trust store of CA certificates that
//! checks issuer, signature and validity, and matching an IKE identity
//! against the certificate's subject or subjectAltName. Signatures
//! themselves are in `sig.rs`.
//!
//! Chains are one level deep: the peer's certificate must be issued
//! directly by a trusted CA (the common gateway deployment). RFC 5280's
//! checks that matter without a chain are made: a critical extension we
//! do not understand refuses the certificate (§4.2); a peer's keyUsage, if
//! present, must allow signing (digitalSignature or nonRepudiation, RFC
//! 4945 §5.1.3.2); an issuer must be a CA (basicConstraints cA, and
//! keyCertSign if it has a keyUsage). There is no revocation checking
//! (no CRL, no OCSP) yet.

use std::net::IpAddr;

use sha1::{Digest, Sha1};
use thiserror::Error;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectAltName};

use crate::crypto::sig::{self, PublicKey, SigAlg};
use crate::identity::Identity;

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
/// Extensions whose meaning we act on, or that never restrict a
/// certificate's use (key identifiers, extendedKeyUsage, which RFC 4945
/// §5.1.3.12 says IKE must not insist on, policies we do not limit).
const UNDERSTOOD: &[ObjectIdentifier] = &[
    SUBJECT_ALT_NAME,
    KEY_USAGE,
    BASIC_CONSTRAINTS,
    ObjectIdentifier::new_unwrap("2.5.29.14"), // subjectKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.35"), // authorityKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.37"), // extendedKeyUsage
    ObjectIdentifier::new_unwrap("2.5.29.32"), // certificatePolicies
];

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertError {
    #[error("not a well-formed X.509 certificate")]
    Malformed,
    #[error("unsupported public key (ECDSA P-256/P-384 and RSA are)")]
    UnsupportedKey,
    #[error("certificate of {subject} is not valid before {} (our clock)", utc(*not_before))]
    NotYetValid { subject: String, not_before: u64 },
    #[error("certificate of {subject} expired at {} (our clock)", utc(*not_after))]
    Expired { subject: String, not_after: u64 },
    #[error("certificate of {subject} is not issued by a trusted CA (issuer {issuer})")]
    UntrustedIssuer { subject: String, issuer: String },
    #[error("certificate of {subject} carries a signature its CA did not make")]
    BadSignature { subject: String },
    #[error("no wall-clock time given: certificate validity cannot be checked")]
    NoClock,
    #[error("certificate of {subject} has a critical extension we do not know ({oid})")]
    UnknownCriticalExtension { subject: String, oid: String },
    #[error("certificate of {subject} may not be used to {purpose} (its keyUsage)")]
    KeyUsage {
        subject: String,
        purpose: &'static str,
    },
    #[error("certificate of {subject} is not a CA (basicConstraints) yet issued {issued}")]
    NotACa { subject: String, issued: String },
}

/// A parsed certificate with its DER bytes and public key.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    cert: x509_cert::Certificate,
    key: PublicKey,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

impl Certificate {
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|_| CertError::Malformed)?;
        let key = public_key(&cert)?;
        Ok(Self {
            der: der.to_vec(),
            cert,
            key,
        })
    }

    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let cert = x509_cert::Certificate::from_pem(pem).map_err(|_| CertError::Malformed)?;
        let der = cert.to_der().map_err(|_| CertError::Malformed)?;
        Self::from_der(&der)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.key
    }

    /// The subject as text (for logs and errors).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The subject name, DER encoded (what an ID_DER_ASN1_DN carries).
    pub fn subject_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .subject
            .to_der()
            .unwrap_or_default()
    }

    /// (notBefore, notAfter) in unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        let v = &self.cert.tbs_certificate.validity;
        (
            v.not_before.to_unix_duration().as_secs(),
            v.not_after.to_unix_duration().as_secs(),
        )
    }

    fn alt_names(&self) -> Vec<GeneralName> {
        let Some(exts) = &self.cert.tbs_certificate.extensions else {
            return vec![];
        };
        exts.iter()
            .filter(|e| e.extn_id == SUBJECT_ALT_NAME)
            .filter_map(|e| SubjectAltName::from_der(e.extn_value.as_bytes()).ok())
            .flat_map(|san| san.0)
            .collect()
    }

    /// Whether the certificate speaks for `id`: a DN must equal the
    /// subject; names and addresses must be among the subjectAltNames
    /// (RFC 4945 §3.1, as strongSwan matches them).
    pub fn matches(&self, id: &Identity) -> bool {
        match id {
            Identity::Dn(dn) => *dn == self.subject_der(),
            Identity::Fqdn(name) => self.alt_names().iter().any(|n| match n {
                GeneralName::DnsName(d) => d.as_str().eq_ignore_ascii_case(name),
                _ => false,
            }),
            Identity::Email(mail) => self.alt_names().iter().any(|n| match n {
                GeneralName::Rfc822Name(m) => m.as_str().eq_ignore_ascii_case(mail),
                _ => false,
            }),
            Identity::Ip(ip) => self.alt_names().iter().any(|n| match (n, ip) {
                (GeneralName::IpAddress(b), IpAddr::V4(a)) => b.as_bytes() == a.octets(),
                (GeneralName::IpAddress(b), IpAddr::V6(a)) => b.as_bytes() == a.octets(),
                _ => false,
            }),
            Identity::KeyId(_) => false,
        }
    }

    /// SHA-1 of the SubjectPublicKeyInfo: how a CERTREQ names a CA
    /// (RFC 7296 §3.7).
    pub fn spki_sha1(&self) -> [u8; 20] {
        let spki = self
            .cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap_or_default();
        Sha1::digest(spki).into()
    }

    fn issuer_der(&self) -> Vec<u8> {
        self.cert
            .tbs_certificate
            .issuer
            .to_der()
            .unwrap_or_default()
    }

    /// Whether `issuer`'s key made this certificate's signature.
    fn signed_by(&self, issuer: &Certificate) -> bool {
        let Ok(tbs) = self.cert.tbs_certificate.to_der() else {
            return false;
        };
        let Ok(alg_der) = self.cert.signature_algorithm.to_der() else {
            return false;
        };
        let Some(alg) = SigAlg::from_algorithm_identifier(&alg_der) else {
            return false;
        };
        let Some(sig) = self.cert.signature.as_bytes() else {
            return false;
        };
        sig::verify(issuer.public_key(), alg, &tbs, sig)
    }

    fn extensions(&self) -> impl Iterator<Item = &x509_cert::ext::Extension> {
        self.cert.tbs_certificate.extensions.iter().flatten()
    }

    /// `Some(usage)` if the certificate limits its key's uses; a
    /// keyUsage that does not parse limits it to nothing.
    fn key_usage(&self) -> Option<KeyUsage> {
        let e = self.extensions().find(|e| e.extn_id == KEY_USAGE)?;
        Some(KeyUsage::from_der(e.extn_value.as_bytes()).unwrap_or(KeyUsage(Default::default())))
    }

    /// Whether basicConstraints says this is a CA (absent: not one).
    fn is_ca(&self) -> bool {
        self.extensions()
            .find(|e| e.extn_id == BASIC_CONSTRAINTS)
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// RFC 5280 §4.2: a critical extension we do not process refuses it.
    fn check_critical(&self) -> Result<(), CertError> {
        match self
            .extensions()
            .find(|e| e.critical && !UNDERSTOOD.contains(&e.extn_id))
        {
            Some(e) => Err(CertError::UnknownCriticalExtension {
                subject: self.subject(),
                oid: e.extn_id.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// A peer's certificate may sign an AUTH payload.
    fn check_signing(&self) -> Result<(), CertError> {
        match self.key_usage() {
            Some(ku) if !ku.digital_signature() && !ku.non_repudiation() => {
                Err(CertError::KeyUsage {
                    subject: self.subject(),
                    purpose: "sign (IKE AUTH)",
                })
            }
            _ => Ok(()),
        }
    }

    /// An issuer may issue `cert`.
    fn check_issuer_of(&self, cert: &Certificate) -> Result<(), CertError> {
        if !self.is_ca() {
            return Err(CertError::NotACa {
                subject: self.subject(),
                issued: cert.subject(),
            });
        }
        match self.key_usage() {
            Some(ku) if !ku.key_cert_sign() => Err(CertError::KeyUsage {
                subject: self.subject(),
                purpose: "issue certificates",
            }),
            _ => self.check_critical(),
        }
    }

    fn check_validity(&self, now: u64) -> Result<(), CertError> {
        let (not_before, not_after) = self.validity();
        if now < not_before {
            return Err(CertError::NotYetValid {
                subject: self.subject(),
                not_before,
            });
        }
        if now > not_after {
            return Err(CertError::Expired {
                subject: self.subject(),
                not_after,
            });
        }
        Ok(())
    }
}

fn public_key(cert: &x509_cert::Certificate) -> Result<PublicKey, CertError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let raw = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CertError::Malformed)?;
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match curve {
            Some(c) if c == P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(raw)
                .map(PublicKey::P256)
                .map_err(|_| CertError::Malformed),
            Some(c) if c == P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(raw)
                .map(|k| PublicKey::P384(Box::new(k)))
                .map_err(|_| CertError::Malformed),
            _ => Err(CertError::UnsupportedKey),
        };
    }
    if spki.algorithm.oid == RSA_ENCRYPTION {
        use rsa::pkcs1::DecodeRsaPublicKey;
        return rsa::RsaPublicKey::from_pkcs1_der(raw)
            .map(|k| PublicKey::Rsa(Box::new(k)))
            .map_err(|_| CertError::Malformed);
    }
    Err(CertError::UnsupportedKey)
}

/// The CA certificates we trust.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    cas: Vec<Certificate>,
}

impl TrustStore {
    pub fn new(cas: Vec<Certificate>) -> Self {
        Self { cas }
    }

    pub fn cas(&self) -> &[Certificate] {
        &self.cas
    }

    /// Checks that `cert` is valid at `now` (unix seconds), may sign, has
    /// no critical extension we do not know, and is issued by one of our
    /// CAs (itself valid then, and a CA).
    pub fn verify(&self, cert: &Certificate, now: u64) -> Result<(), CertError> {
        cert.check_validity(now)?;
        cert.check_critical()?;
        cert.check_signing()?;
        let issuer = cert.issuer_der();
        let mut named = false;
        for ca in self.cas.iter().filter(|ca| ca.subject_der() == issuer) {
            named = true;
            if cert.signed_by(ca) {
                ca.check_issuer_of(cert)?;
                return ca.check_validity(now);
            }
        }
        if named {
            Err(CertError::BadSignature {
                subject: cert.subject(),
            })
        } else {
            Err(CertError::UntrustedIssuer {
                subject: cert.subject(),
                issuer: cert.cert.tbs_certificate.issuer.to_string(),
            })
        }
    }

    /// The CERTREQ payload's data: our CAs' key hashes, concatenated.
    pub fn certreq(&self) -> Vec<u8> {
        self.cas.iter().flat_map(|c| c.spki_sha1()).collect()
    }
}

/// Unix seconds as `YYYY-MM-DD hh:mm:ss UTC`, for operators reading why a
/// certificate was refused (days to civil date: H. Hinnant's algorithm).
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn dates_for_operators() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_609_459_200), "2021-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_661), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}
