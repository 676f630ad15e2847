//! Making our AUTH payload and checking the peer's (RFC 7296 §2.15): the
//! signed octets are the sender's IKE_SA_INIT message, the other side's
//! nonce and prf(SK_p, ID payload body); a pre-shared key MACs them, a
//! certificate's key signs them (RFC 7427, or RFC 4754 for ECDSA peers
//! that did not announce SIGNATURE_HASH_ALGORITHMS).

use super::IkeSa;
use crate::cert::{CertError, Certificate};
use crate::config::{Credentials, Identity};
use crate::crypto::auth::{auth_matches, maced_id, psk_auth};
use crate::crypto::sig::{self, Hash, PrivateKey, SigAlg};
use crate::wire::consts::auth_method;
use crate::wire::Payload;

/// X.509 Certificate - Signature (RFC 7296 §3.6).
pub(super) const CERT_X509: u8 = 4;

/// What one side's AUTH covers.
pub(super) struct Signed<'a> {
    /// The sender's IKE_SA_INIT message.
    pub(super) init_message: &'a [u8],
    /// The receiver's nonce.
    pub(super) nonce: &'a [u8],
    /// The sender's ID payload: type and data.
    pub(super) id: &'a (u8, Vec<u8>),
    /// SK_pi or SK_pr.
    pub(super) sk_p: &'a [u8],
}

impl IkeSa {
    fn octets(&self, s: &Signed<'_>) -> Option<Vec<u8>> {
        let prf = self.protection.as_ref()?.suite.prf;
        let maced = maced_id(prf, s.sk_p, s.id.0, &s.id.1);
        Some([s.init_message, s.nonce, &maced].concat())
    }

    /// Our AUTH payload: (method, data).
    pub(super) fn our_auth(
        &mut self,
        s: &Signed<'_>,
        peer_hashes: &[Hash],
    ) -> Option<(u8, Vec<u8>)> {
        let prf = self.protection.as_ref()?.suite.prf;
        match &self.config.credentials {
            Credentials::Psk(psk) => {
                let maced = maced_id(prf, s.sk_p, s.id.0, &s.id.1);
                let data = psk_auth(prf, psk, s.init_message, s.nonce, &maced);
                Some((auth_method::PSK, data.to_vec()))
            }
            Credentials::Certificate { key, rsa_pss, .. } => {
                let key = key.clone();
                let rsa_pss = *rsa_pss;
                let octets = self.octets(s)?;
                let raw_method = match (&*key, peer_hashes.is_empty()) {
                    (PrivateKey::P256(_), true) => Some((auth_method::ECDSA_256, Hash::Sha256)),
                    (PrivateKey::P384(_), true) => Some((auth_method::ECDSA_384, Hash::Sha384)),
                    _ => None,
                };
                if let Some((method, hash)) = raw_method {
                    // RFC 4754: r||s, for a peer without RFC 7427.
                    let der = key.sign(SigAlg::Ecdsa(hash), &octets, &mut self.rng)?;
                    return Some((method, sig::der_to_raw_ecdsa(&key, &der)?));
                }
                let alg = key.algorithm(peer_hashes, rsa_pss);
                let signature = key.sign(alg, &octets, &mut self.rng)?;
                Some((
                    auth_method::DIGITAL_SIGNATURE,
                    sig::auth_data(alg, &signature),
                ))
            }
        }
    }

    /// The CERT payload we send, if we authenticate with a certificate.
    pub(super) fn our_cert(&self) -> Option<Vec<u8>> {
        match &self.config.credentials {
            Credentials::Certificate { cert, .. } => Some(cert.der().to_vec()),
            Credentials::Psk(_) => None,
        }
    }

    /// The CERTREQ we send: the CAs we trust (for a responder, those of
    /// every configuration that may serve this SA), each once.
    pub(super) fn our_certreq(&self) -> Option<Vec<u8>> {
        let mut hashes: Vec<u8> = Vec::new();
        for c in std::iter::once(&self.config).chain(&self.alternatives) {
            if let Credentials::Certificate { trust, .. } = &c.credentials {
                for h in trust.certreq().chunks(20) {
                    if !hashes.chunks(20).any(|known| known == h) {
                        hashes.extend_from_slice(h);
                    }
                }
            }
        }
        (!hashes.is_empty()).then_some(hashes)
    }

    /// Checks the peer's AUTH (and certificate) for identity `peer`;
    /// the error says what did not match, for the operator.
    pub(super) fn check_peer_auth(
        &self,
        payloads: &[Payload<'_>],
        s: &Signed<'_>,
        peer: &Identity,
    ) -> Result<(), String> {
        let Some((method, data)) = payloads.iter().find_map(|p| match p {
            Payload::Auth(a) => Some((a.method, a.data)),
            _ => None,
        }) else {
            return Err(format!("{peer} sent no AUTH payload"));
        };
        match &self.config.credentials {
            Credentials::Psk(psk) => {
                if method != auth_method::PSK {
                    return Err(format!(
                        "{peer} authenticated with method {method}; this tunnel expects a pre-shared key"
                    ));
                }
                let prf = self.protection.as_ref().ok_or("no keys")?.suite.prf;
                let maced = maced_id(prf, s.sk_p, s.id.0, &s.id.1);
                let want = psk_auth(prf, psk, s.init_message, s.nonce, &maced);
                if auth_matches(data, &want) {
                    Ok(())
                } else {
                    Err(format!(
                        "{peer}: AUTH does not verify with our PSK (the keys differ)"
                    ))
                }
            }
            Credentials::Certificate { trust, .. } => {
                if method == auth_method::PSK {
                    return Err(format!(
                        "{peer} authenticated with a pre-shared key; this tunnel expects a certificate"
                    ));
                }
                let cert = payloads
                    .iter()
                    .find_map(|p| match p {
                        Payload::Cert(c) if c.encoding == CERT_X509 => Some(c.data),
                        _ => None,
                    })
                    .ok_or_else(|| format!("{peer} sent no X.509 certificate"))?;
                let cert = Certificate::from_der(cert).map_err(|e| format!("{peer}: {e}"))?;
                let now = self
                    .unix_time
                    .ok_or(CertError::NoClock)
                    .map_err(|e| e.to_string())?;
                trust.verify(&cert, now).map_err(|e| e.to_string())?;
                if !cert.matches(peer) {
                    return Err(format!(
                        "identity {peer} is not in the certificate of {} (subjectAltName or subject)",
                        cert.subject()
                    ));
                }
                let octets = self.octets(s).ok_or("no keys")?;
                let good = match method {
                    auth_method::DIGITAL_SIGNATURE => sig::parse_auth_data(data)
                        .is_some_and(|(alg, sg)| sig::verify(cert.public_key(), alg, &octets, sg)),
                    auth_method::ECDSA_256 | auth_method::ECDSA_384 => {
                        sig::verify_raw_ecdsa(cert.public_key(), method, &octets, data)
                    }
                    other => {
                        return Err(format!(
                            "{peer} used auth method {other}, which we do not take"
                        ))
                    }
                };
                if good {
                    Ok(())
                } else {
                    Err(format!(
                        "{peer}: the AUTH signature does not verify with its certificate"
                    ))
                }
            }
        }
    }
}
