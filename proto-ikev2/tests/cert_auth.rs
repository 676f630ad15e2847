//! IKE_AUTH with certificates in memory: ECDSA P-256/P-384 and RSA
//! (PKCS#1 v1.5 and PSS) in every pairing, then every way it must fail:
//! an expired or untrusted certificate, an identity the certificate does
//! not name, a peer using a PSK where a certificate is expected, and no
//! wall clock to check validity against. Each failure names its cause.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

mod common;
use common::*;

use std::sync::Arc;

use proto_ikev2::cert::{Certificate, TrustStore};
use proto_ikev2::crypto::sig::PrivateKey;
use proto_ikev2::{Config, Credentials, DownReason, Identity, Phase};

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/data/pki/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn creds(name: &str, rsa_pss: bool) -> Credentials {
    Credentials::Certificate {
        cert: Arc::new(Certificate::from_pem(&pem(&format!("{name}.pem"))).unwrap()),
        key: Arc::new(PrivateKey::from_pem(&pem(&format!("{name}.key"))).unwrap()),
        trust: Arc::new(TrustStore::new(vec![
            Certificate::from_pem(&pem("ca.pem")).unwrap()
        ])),
        rsa_pss,
    }
}

/// The initiator is gw-o.interop with `ours`, the responder gw-s.interop
/// with `theirs`.
fn configs(ours: &str, theirs: &str, pss: bool) -> (Config, Config) {
    let mut a = gcm();
    a.local_id = Identity::parse("gw-o.interop");
    a.remote_id = Some(Identity::parse("gw-s.interop"));
    a.credentials = creds(ours, pss);
    let mut b = mirror(&a);
    b.credentials = creds(theirs, pss);
    (a, b)
}

fn down_reason(p: &Pair, initiator: bool) -> String {
    let seen = if initiator { &p.ea } else { &p.eb };
    match &seen.down {
        Some(DownReason::AuthenticationFailed(w)) => w.clone(),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
}

#[test]
fn every_key_pairing_authenticates_and_carries_esp() {
    for (ours, theirs, pss) in [
        ("gw-o-p256", "gw-s-p384", false),
        ("gw-o-rsa", "gw-s-rsa", false),
        ("gw-o-rsa", "gw-s-rsa", true),
        ("gw-o-p256", "gw-s-rsa", false),
        ("gw-o-rsa", "gw-s-p384", true),
    ] {
        let (a, b) = configs(ours, theirs, pss);
        let mut p = Pair::new(a, b);
        p.pump();
        assert_eq!(
            p.a.phase(),
            Phase::Established,
            "{ours}/{theirs}: {:?}",
            p.ea.down
        );
        assert_eq!(
            p.b().phase(),
            Phase::Established,
            "{ours}/{theirs}: {:?}",
            p.eb.down
        );
        assert_eq!(p.eb.up.as_ref().unwrap().0, Identity::parse("gw-o.interop"));
        assert!(esp_delivers(&mut p.ea, &mut p.eb, 1) && esp_delivers(&mut p.eb, &mut p.ea, 2));
    }
}

#[test]
fn an_expired_certificate_is_refused_with_its_date() {
    let (mut a, b) = configs("gw-o-p256", "gw-s-p384", false);
    a.credentials = creds("gw-o-expired", false);
    let mut p = Pair::new(a, b);
    p.pump();
    let why = down_reason(&p, false);
    assert!(why.contains("expired at 2021-01-01 00:00:00 UTC"), "{why}");
    assert!(down_reason(&p, true).contains("refused our authentication"));
}

#[test]
fn an_untrusted_issuer_is_named() {
    let (mut a, b) = configs("gw-o-p256", "gw-s-p384", false);
    a.credentials = creds("gw-o-untrusted", false);
    let mut p = Pair::new(a, b);
    p.pump();
    let why = down_reason(&p, false);
    assert!(
        why.contains("not issued by a trusted CA") && why.contains("Untrusted CA"),
        "{why}"
    );
}

#[test]
fn an_identity_the_certificate_does_not_name_is_refused() {
    let (mut a, mut b) = configs("gw-o-p256", "gw-s-p384", false);
    a.local_id = Identity::parse("gw-x.interop");
    b.remote_id = None; // any identity, as long as its certificate names it
    let mut p = Pair::new(a, b);
    p.pump();
    let why = down_reason(&p, false);
    assert!(
        why.contains("gw-x.interop is not in the certificate"),
        "{why}"
    );
    // The responder's identity is checked against its certificate too.
    let (mut a, mut b) = configs("gw-o-p256", "gw-s-p384", false);
    a.remote_id = Some(Identity::parse("gw-o.interop"));
    b.local_id = Identity::parse("gw-o.interop");
    let mut p = Pair::new(a, b);
    p.pump();
    assert!(
        down_reason(&p, true).contains("not in the certificate"),
        "{:?}",
        p.ea.down
    );
}

#[test]
fn psk_against_certificate_says_so() {
    let (a, mut b) = configs("gw-o-p256", "gw-s-p384", false);
    b.credentials = gcm().credentials;
    let mut p = Pair::new(a, b);
    p.pump();
    assert!(
        down_reason(&p, false).contains("expects a pre-shared key"),
        "{:?}",
        p.eb.down
    );
}

#[test]
fn without_a_wall_clock_no_certificate_is_accepted() {
    let (a, b) = configs("gw-o-p256", "gw-s-p384", false);
    let mut p = Pair::new(a, b);
    p.clock = false;
    p.pump();
    assert!(
        down_reason(&p, false).contains("no wall-clock time"),
        "{:?}",
        p.eb.down
    );
}

#[test]
fn large_messages_go_in_fragments_and_survive_losing_one() {
    for lose in [None, Some(2usize)] {
        let (mut a, mut b) = configs("gw-o-rsa", "gw-s-rsa", false);
        a.fragment_size = Some(400);
        b.fragment_size = Some(400);
        let mut p = Pair::new(a, b);
        let mut n = 0;
        p.filter = Box::new(move |_, bytes: &mut Vec<u8>| {
            n += 1;
            assert!(
                bytes.len() <= 400 || n <= 2,
                "datagram {n} of {} bytes",
                bytes.len()
            );
            Some(n) != lose
        });
        p.run_timers(std::time::Duration::from_secs(20));
        assert_eq!(
            p.a.phase(),
            Phase::Established,
            "lose {lose:?}: {:?}",
            p.ea.down
        );
        assert_eq!(p.b().phase(), Phase::Established);
        assert!(
            p.datagrams > 8,
            "IKE_AUTH went in fragments: {}",
            p.datagrams
        );
        assert!(esp_delivers(&mut p.ea, &mut p.eb, 3));
    }
    // Without fragmentation on one side, the whole message goes as one.
    let (a, mut b) = configs("gw-o-rsa", "gw-s-rsa", false);
    b.fragment_size = None;
    let mut p = Pair::new(a, b);
    p.pump();
    assert_eq!(p.a.phase(), Phase::Established);
    assert_eq!(p.datagrams, 4);
}

#[test]
fn a_certificate_config_behind_a_psk_one_for_the_same_address_is_asked_for_and_chosen() {
    use proto_ikev2::wire::{consts::payload as payload_type, Message, Payload};
    use proto_ikev2::{Endpoint, EndpointConfig, Event};
    use std::net::SocketAddr;
    // The responder's first configuration for every address is a PSK
    // tunnel for someone else; the second is ours, by certificate.
    let (a, b) = configs("gw-o-p256", "gw-s-p384", false);
    let mut psk_first = b.clone();
    psk_first.remote_id = Some(Identity::parse("someone-else.interop"));
    psk_first.credentials = Credentials::Psk(zeroize::Zeroizing::new(b"a-psk-for-them".to_vec()));
    let cert_second = Arc::new(b);
    let mut gw = Endpoint::new(EndpointConfig::default(), [1; 32]);
    gw.add_responder(None, Arc::new(psk_first));
    gw.add_responder(None, cert_second.clone());

    #[allow(clippy::disallowed_methods)] // the virtual clock's origin
    let now = std::time::Instant::now();
    let (ours, theirs): (SocketAddr, SocketAddr) = (
        "10.0.0.2:500".parse().unwrap(),
        "10.0.0.1:500".parse().unwrap(),
    );
    let mut ini = Endpoint::new(EndpointConfig::default(), [2; 32]);
    ini.set_unix_time(1_900_000_000);
    gw.set_unix_time(1_900_000_000);
    ini.connect(now, Arc::new(a), ours, theirs);
    let request = ini.poll_transmit().unwrap();
    gw.handle_input(now, request.source, request.destination, &request.contents);
    let first = gw.poll_transmit().unwrap();
    ini.handle_input(now, first.source, first.destination, &first.contents);
    shuttle(now, &mut ini, &mut gw);
    let m = Message::parse(&first.contents).unwrap();
    assert!(
        matches!(m.find(payload_type::CERTREQ), Some(Payload::CertReq(_))),
        "IKE_SA_INIT answered without asking for a certificate"
    );
    assert_eq!(ini.sas().next().unwrap().1.phase(), Phase::Established);
    let (_, sa) = gw.sas().next().unwrap();
    assert!(
        Arc::ptr_eq(sa.config(), &cert_second),
        "served by the certificate tunnel"
    );
    let mut up = false;
    while let Some((_, e)) = gw.poll_event() {
        up |= matches!(e, Event::ChildSaUp(_));
    }
    assert!(up);
}

#[test]
fn a_certificate_that_may_not_sign_or_carries_an_unknown_critical_extension_is_refused() {
    for (name, cause) in [
        ("gw-o-no-signing", "may not be used to sign"),
        ("gw-o-critical-ext", "critical extension we do not know"),
    ] {
        let (mut a, mut b) = configs("gw-o-p256", "gw-s-p384", false);
        a.credentials = creds(name, false);
        // The responder trusts the CA that issued them.
        if let Credentials::Certificate { cert, key, .. } = &b.credentials {
            b.credentials = Credentials::Certificate {
                cert: cert.clone(),
                key: key.clone(),
                trust: Arc::new(TrustStore::new(vec![
                    Certificate::from_pem(&pem("ca.pem")).unwrap(),
                    Certificate::from_pem(&pem("ca-3.pem")).unwrap(),
                ])),
                rsa_pss: false,
            };
        }
        let mut p = Pair::new(a, b);
        p.pump();
        let why = down_reason(&p, false);
        assert!(why.contains(cause), "{name}: {why}");
        assert_ne!(p.b().phase(), Phase::Established, "{name}");
    }
}
