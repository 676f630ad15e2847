//! Certificates and signatures: the test PKI (tests/data/pki) verifies
//! against its CA; expired, untrusted and tampered certificates are
//! refused with the reason; identities match subjectAltNames and the
//! subject DN; every key type signs and verifies under every hash, in
//! PKCS#1 v1.5 and PSS for RSA; the AlgorithmIdentifiers are the bytes
//! RFC 7427 Appendix A lists.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

use proto_ikev2::cert::{CertError, Certificate, TrustStore};
use proto_ikev2::crypto::sig::{self, Hash, PrivateKey, SigAlg};
use proto_ikev2::Identity;
use rand_core::SeedableRng;

/// 2027-01-15: inside every test certificate's validity but the expired one.
const NOW: u64 = 1_800_000_000;

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/pki/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn cert(name: &str) -> Certificate {
    Certificate::from_pem(&pem(&format!("{name}.pem"))).unwrap()
}

fn key(name: &str) -> PrivateKey {
    PrivateKey::from_pem(&pem(&format!("{name}.key"))).unwrap()
}

fn trust() -> TrustStore {
    TrustStore::new(vec![cert("ca")])
}

#[test]
fn the_test_pki_verifies_and_bad_certificates_say_why() {
    let t = trust();
    for name in ["gw-o-p256", "gw-s-p384", "gw-o-rsa", "gw-s-rsa"] {
        t.verify(&cert(name), NOW)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(matches!(
        t.verify(&cert("gw-o-expired"), NOW),
        Err(CertError::Expired {
            not_after: 1_609_459_200,
            ..
        })
    ));
    assert!(matches!(
        t.verify(&cert("gw-o-p256"), 1_000_000_000),
        Err(CertError::NotYetValid { .. })
    ));
    let e = t.verify(&cert("gw-o-untrusted"), NOW).unwrap_err();
    assert!(matches!(e, CertError::UntrustedIssuer { .. }), "{e}");
    assert!(e.to_string().contains("Untrusted CA"), "{e}");
    // A certificate whose signature was tampered with.
    let mut der = cert("gw-o-p256").der().to_vec();
    let n = der.len();
    der[n - 5] ^= 0x01;
    match Certificate::from_der(&der) {
        Ok(c) => assert!(matches!(
            t.verify(&c, NOW),
            Err(CertError::BadSignature { .. })
        )),
        Err(e) => assert_eq!(e, CertError::Malformed),
    }
    assert_eq!(
        Certificate::from_der(&[0x30, 0x03, 1, 2, 3]).unwrap_err(),
        CertError::Malformed
    );
    // The CERTREQ names our CA by its key hash.
    assert_eq!(t.certreq(), cert("ca").spki_sha1().to_vec());
}

#[test]
fn identities_match_alt_names_or_the_subject() {
    let c = cert("gw-o-p256");
    assert!(c.matches(&Identity::Fqdn("gw-o.interop".into())));
    assert!(c.matches(&Identity::Fqdn("GW-O.interop".into())));
    assert!(!c.matches(&Identity::Fqdn("gw-s.interop".into())));
    assert!(c.matches(&Identity::Dn(c.subject_der())));
    assert!(!c.matches(&Identity::Dn(cert("gw-s-p384").subject_der())));
    assert!(!c.matches(&Identity::Ip("10.0.0.1".parse().unwrap())));
    assert!(c.subject().contains("CN=gw-o.interop"), "{}", c.subject());
}

#[test]
fn keys_match_their_certificates() {
    for name in ["gw-o-p256", "gw-s-p384", "gw-o-rsa", "gw-s-rsa"] {
        assert_eq!(&key(name).public_key(), cert(name).public_key(), "{name}");
    }
    assert_ne!(
        &key("gw-o-p256").public_key(),
        cert("gw-s-p384").public_key()
    );
    assert!(
        PrivateKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
}

#[test]
fn every_key_signs_and_verifies_under_every_hash() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
    let msg = b"InitiatorSignedOctets";
    for name in ["gw-o-p256", "gw-s-p384", "gw-o-rsa"] {
        let k = key(name);
        let public = cert(name).public_key().clone();
        let algs: Vec<SigAlg> = [Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .flat_map(|h| match k {
                PrivateKey::Rsa(_) => vec![SigAlg::RsaPkcs1(h), SigAlg::RsaPss(h)],
                _ => vec![SigAlg::Ecdsa(h)],
            })
            .collect();
        for alg in algs {
            let s = k.sign(alg, msg, &mut rng).unwrap();
            assert!(sig::verify(&public, alg, msg, &s), "{name} {alg:?}");
            assert!(
                !sig::verify(&public, alg, b"something else", &s),
                "{name} {alg:?}"
            );
            let other = cert("gw-s-rsa").public_key().clone();
            assert!(!sig::verify(&other, alg, msg, &s));
            // Through the RFC 7427 AUTH encoding and back.
            let data = sig::auth_data(alg, &s);
            let (alg2, s2) = sig::parse_auth_data(&data).unwrap();
            assert_eq!(alg2, alg);
            assert!(sig::verify(&public, alg2, msg, s2));
        }
    }
    // The hash follows the key and the peer.
    assert_eq!(
        key("gw-s-p384").algorithm(&[], false),
        SigAlg::Ecdsa(Hash::Sha384)
    );
    assert_eq!(
        key("gw-o-p256").algorithm(&[Hash::Sha512], false),
        SigAlg::Ecdsa(Hash::Sha512)
    );
    assert_eq!(
        key("gw-o-rsa").algorithm(&[Hash::Sha256], true),
        SigAlg::RsaPss(Hash::Sha256)
    );
    assert!(sig::parse_auth_data(&[200, 1, 2]).is_none());
}

#[test]
fn algorithm_identifiers_are_the_rfc_7427_bytes() {
    let h = |s: &str| hex::decode(s.replace(' ', "")).unwrap();
    // RFC 7427 Appendix A.
    assert_eq!(
        SigAlg::Ecdsa(Hash::Sha256).algorithm_identifier(),
        h("300a 0608 2a86 48ce 3d04 0302")
    );
    assert_eq!(
        SigAlg::Ecdsa(Hash::Sha384).algorithm_identifier(),
        h("300a 0608 2a86 48ce 3d04 0303")
    );
    assert_eq!(
        SigAlg::RsaPkcs1(Hash::Sha256).algorithm_identifier(),
        h("300d 0609 2a86 4886 f70d 0101 0b05 00")
    );
    assert_eq!(
        SigAlg::RsaPss(Hash::Sha256).algorithm_identifier(),
        h("3041 0609 2a86 4886 f70d 0101 0a30 34a0 0f30 0d06 0960 8648 0165 0304 0201 0500 a11c 301a 0609 2a86 4886 f70d 0101 0830 0d06 0960 8648 0165 0304 0201 0500 a203 0201 20")
    );
    for alg in [
        SigAlg::RsaPss(Hash::Sha384),
        SigAlg::RsaPkcs1(Hash::Sha512),
        SigAlg::Ecdsa(Hash::Sha512),
    ] {
        assert_eq!(
            SigAlg::from_algorithm_identifier(&alg.algorithm_identifier()),
            Some(alg)
        );
    }
}

#[test]
fn rfc_5280_checks_keyusage_critical_extensions_and_issuers() {
    let t = TrustStore::new(vec![cert("ca-3")]);
    t.verify(&cert("gw-o-ca3"), NOW).unwrap();
    let e = t.verify(&cert("gw-o-no-signing"), NOW).unwrap_err();
    assert!(
        matches!(e, CertError::KeyUsage { purpose, .. } if purpose.contains("sign")),
        "{e}"
    );
    let e = t.verify(&cert("gw-o-critical-ext"), NOW).unwrap_err();
    assert!(
        matches!(&e, CertError::UnknownCriticalExtension { oid, .. } if oid == "1.3.6.1.4.1.55555.1"),
        "{e}"
    );
    // Trusting a certificate that is not a CA does not make what it
    // signed trusted.
    let leaf_as_ca = TrustStore::new(vec![cert("not-a-ca")]);
    let e = leaf_as_ca.verify(&cert("gw-o-via-leaf"), NOW).unwrap_err();
    assert!(matches!(e, CertError::NotACa { .. }), "{e}");
    assert!(e.to_string().contains("is not a CA"), "{e}");
}
