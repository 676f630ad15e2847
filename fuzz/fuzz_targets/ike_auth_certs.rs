//! Certificates from the network: parsed on their own, and carried in an
//! IKE_AUTH to a responder that authenticates by certificate (after a
//! genuine IKE_SA_INIT, sealed with the initiator's keys, so the fuzzer
//! reaches certificate parsing, trust checks and signature verification).
//! No panic; a forged certificate never brings the IKE SA up.
#![no_main]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto_ikev2::cert::{Certificate, TrustStore};
use proto_ikev2::crypto::sig::PrivateKey;
use proto_ikev2::wire::consts::{exchange, payload as pt};
use proto_ikev2::wire::{Auth, CertData, Identification, Payload, TrafficSelector, Writer};
use proto_ikev2::{
    Config, Credentials, EspProposal, Event, Identity, IkeProposal, IkeSa, Phase, Timers,
};

const CA: &str = include_str!("../../proto-ikev2/tests/data/pki/ca.pem");
const OURS: &str = include_str!("../../proto-ikev2/tests/data/pki/gw-s-p384.pem");
const OUR_KEY: &str = include_str!("../../proto-ikev2/tests/data/pki/gw-s-p384.key");
/// 2027-01-15: inside every test certificate's validity.
const NOW: u64 = 1_800_000_000;

fn config(certificates: bool) -> Arc<Config> {
    let any = TrafficSelector::subnet("0.0.0.0".parse().expect("ip"), 0);
    let credentials = if certificates {
        Credentials::Certificate {
            cert: Arc::new(Certificate::from_pem(OURS).expect("cert")),
            key: Arc::new(PrivateKey::from_pem(OUR_KEY).expect("key")),
            trust: Arc::new(TrustStore::new(
                vec![Certificate::from_pem(CA).expect("ca")],
            )),
            rsa_pss: false,
        }
    } else {
        Credentials::Psk(b"fuzz-psk-1234".to_vec().into())
    };
    Arc::new(Config {
        local_id: Identity::parse(if certificates {
            "gw-s.interop"
        } else {
            "gw-o.interop"
        }),
        remote_id: Some(Identity::parse(if certificates {
            "gw-o.interop"
        } else {
            "gw-s.interop"
        })),
        credentials,
        ike_proposals: vec![IkeProposal::parse("aes128gcm16-prfsha256-x25519").expect("ike")],
        esp_proposals: vec![EspProposal::parse("aes128gcm16").expect("esp")],
        local_ts: vec![any],
        remote_ts: vec![any],
        force_encap: false,
        fragment_size: None,
        timers: Timers::default(),
        child_limits: Default::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    // On its own: parsing never panics, and nothing unsigned is trusted.
    if let Ok(c) = Certificate::from_der(data) {
        let trust = TrustStore::new(vec![Certificate::from_pem(CA).expect("ca")]);
        let _ = trust.verify(&c, NOW);
        let _ = c.matches(&Identity::parse("gw-o.interop"));
    }
    // In an IKE_AUTH: [auth method, certificate length (2 bytes), the
    // certificate, auth data...].
    let [method, hi, lo, rest @ ..] = data else {
        return;
    };
    let cert_len = usize::from(u16::from_be_bytes([*hi, *lo]));
    let (cert, auth) = rest.split_at(cert_len.min(rest.len()));
    let now = Instant::now();
    let (a, b): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().expect("a"),
        "192.0.2.2:500".parse().expect("b"),
    );
    let mut i = IkeSa::initiate(now, config(false), a, b, [1; 32]);
    let first = i.poll_transmit().expect("init").contents;
    let Ok(mut r) = IkeSa::respond(now, config(true), b, a, &first, [2; 32]) else {
        return;
    };
    r.set_unix_time(NOW);
    while r.poll_transmit().is_some() {}
    let id = Identity::parse("gw-o.interop").to_wire();
    let mut w = Writer::chain();
    w.push(&Payload::IdI(Identification {
        id_type: id.0,
        data: &id.1,
    }))
    .push(&Payload::Cert(CertData {
        encoding: 4,
        data: cert,
    }))
    .push(&Payload::Auth(Auth {
        method: *method,
        data: auth,
    }));
    let first_payload = w.first();
    let chain = w.finish();
    debug_assert_eq!(first_payload, pt::IDI);
    r.fuzz_peer_request(now, exchange::IKE_AUTH, first_payload, &chain);
    while r.poll_transmit().is_some() {}
    while let Some(e) = r.poll_event() {
        assert!(
            !matches!(e, Event::IkeSaUp { .. }),
            "a forged certificate authenticated"
        );
    }
    assert_ne!(r.phase(), Phase::Established);
});
