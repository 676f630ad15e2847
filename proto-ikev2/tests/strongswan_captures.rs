//! Real IKEv2 exchanges captured from strongSwan 5.9.8 (PSK with AES-GCM,
//! PSK with AES-CBC + HMAC-SHA-256 and MODP-2048, ECDSA certificates, RSA
//! certificates with IKE fragmentation), with the IKE SA keys strongSwan
//! logged: every message parses, the unencrypted ones re-encode byte for
//! byte, and every SK/SKF payload opens under the logged keys into the
//! payloads tshark decoded.
#![allow(clippy::unwrap_used)] // a test panics to report a failure

use proto_ikev2::crypto::sk;
use proto_ikev2::crypto::{integ_from_transform, Encr};
use proto_ikev2::wire::consts::{exchange, payload as pt, transform};
use proto_ikev2::wire::{parse_chain, Header, Message, Payload, Writer};

const CAPTURED: &str = include_str!("data/strongswan-ike.txt");

struct Keys {
    spi_i: u64,
    spi_r: u64,
    sk_ei: Vec<u8>,
    sk_er: Vec<u8>,
    encr: Encr,
    sk_ai: Vec<u8>,
    sk_ar: Vec<u8>,
    integ: Option<proto_esp::Integ>,
}

struct Capture {
    variant: String,
    keys: Keys,
    messages: Vec<Vec<u8>>,
}

fn captures() -> Vec<Capture> {
    let mut out: Vec<Capture> = Vec::new();
    for line in CAPTURED.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hx = |s: &str| {
            if s == "-" {
                Vec::new()
            } else {
                hex::decode(s).unwrap()
            }
        };
        match f[0] {
            "keys" => out.push(Capture {
                variant: f[1].to_string(),
                keys: Keys {
                    spi_i: u64::from_str_radix(f[2], 16).unwrap(),
                    spi_r: u64::from_str_radix(f[3], 16).unwrap(),
                    sk_ei: hx(f[4]),
                    sk_er: hx(f[5]),
                    encr: match f[6] {
                        "aes-gcm-16-256" => Encr::AesGcm16 { bits: 256 },
                        "aes-cbc-256" => Encr::AesCbc { bits: 256 },
                        other => panic!("{other}"),
                    },
                    sk_ai: hx(f[7]),
                    sk_ar: hx(f[8]),
                    integ: match f[9] {
                        "-" => None,
                        "hmac-sha2-256-128" => {
                            integ_from_transform(transform::AUTH_HMAC_SHA2_256_128)
                        }
                        other => panic!("{other}"),
                    },
                },
                messages: Vec::new(),
            }),
            "msg" => {
                let c = out.last_mut().unwrap();
                assert_eq!(c.variant, f[1]);
                c.messages.push(hx(f[4]));
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(out.len(), 4);
    out
}

fn kinds(payloads: &[Payload<'_>]) -> Vec<u8> {
    payloads.iter().map(|p| p.kind()).collect()
}

#[test]
fn ike_sa_init_parses_and_reencodes_byte_for_byte() {
    for c in captures() {
        for raw in c.messages.iter().take(2) {
            let m = Message::parse(raw).unwrap();
            assert_eq!(m.header.exchange, exchange::IKE_SA_INIT, "{}", c.variant);
            assert_eq!(m.header.spi_i, c.keys.spi_i);
            let mut w = Writer::message(m.header);
            for p in &m.payloads {
                w.push(p);
            }
            assert_eq!(&w.finish(), raw, "{}: re-encoded differently", c.variant);

            let Some(Payload::Sa(sa)) = m.find(pt::SA) else {
                panic!("no SA")
            };
            assert!(!sa.proposals.is_empty());
            let Some(Payload::Ke(ke)) = m.find(pt::KE) else {
                panic!("no KE")
            };
            let want_group = if c.variant == "psk-cbc" { 14 } else { 19 };
            assert_eq!(ke.group, want_group, "{}", c.variant);
            assert!(m.find(pt::NONCE).is_some());
            assert_eq!(m.notifies(16388).count(), 1, "NAT_DETECTION_SOURCE_IP");
        }
        // The response carries the responder's SPI and one chosen proposal.
        let resp = Message::parse(&c.messages[1]).unwrap();
        assert!(resp.header.is_response());
        assert_eq!(resp.header.spi_r, c.keys.spi_r);
        let Some(Payload::Sa(sa)) = resp.find(pt::SA) else {
            panic!("no SA")
        };
        assert_eq!(sa.proposals.len(), 1);
    }
}

/// Opens every encrypted message of a capture; returns (exchange, from
/// initiator, inner payload types) per message, fragments reassembled.
fn open_all(c: &Capture) -> Vec<(u8, bool, Vec<u8>)> {
    let k = &c.keys;
    let integ_i = k.integ.map(|i| (i, &k.sk_ai[..]));
    let integ_r = k.integ.map(|i| (i, &k.sk_ar[..]));
    let from_i = k.encr.cipher(&k.sk_ei, integ_i).unwrap();
    let from_r = k.encr.cipher(&k.sk_er, integ_r).unwrap();
    let mut out = Vec::new();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut first_inner = 0;
    for raw in &c.messages[2..] {
        let m = Message::parse(raw).unwrap();
        let h: Header = m.header;
        let Some(Payload::Sk(s)) = m.payloads.last() else {
            panic!("{}: no encrypted payload", c.variant)
        };
        let cipher = if h.from_initiator() { &from_i } else { &from_r };
        let plain = sk::open(raw, s.body, cipher).unwrap_or_else(|e| panic!("{}: {e}", c.variant));
        // A wrong key or a flipped bit fails.
        let other = if h.from_initiator() { &from_r } else { &from_i };
        assert!(sk::open(raw, s.body, other).is_err());
        let mut bad = raw.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(sk::open(&bad, &bad[n - s.body.len()..], cipher).is_err());

        let (inner, first) = match s.fragment {
            None => (plain, s.next),
            Some((number, total)) => {
                if number == 1 {
                    first_inner = s.next;
                }
                pending.push(plain);
                if number < total {
                    continue;
                }
                (std::mem::take(&mut pending).concat(), first_inner)
            }
        };
        let payloads = parse_chain(first, &inner).unwrap();
        out.push((h.exchange, h.from_initiator(), kinds(&payloads)));
    }
    out
}

#[test]
fn encrypted_payloads_open_under_the_logged_keys() {
    use pt::*;
    for c in captures() {
        let opened = open_all(&c);
        let auth_req = &opened[0];
        let auth_resp = &opened[1];
        assert_eq!(
            (auth_req.0, auth_req.1),
            (exchange::IKE_AUTH, true),
            "{}",
            c.variant
        );
        for p in [IDI, AUTH, SA, TSI, TSR] {
            assert!(
                auth_req.2.contains(&p),
                "{}: IKE_AUTH request lacks {p}",
                c.variant
            );
        }
        for p in [IDR, AUTH, SA, TSI, TSR] {
            assert!(
                auth_resp.2.contains(&p),
                "{}: IKE_AUTH response lacks {p}",
                c.variant
            );
        }
        if c.variant.contains("cert") || c.variant.contains("rsa") {
            assert!(auth_req.2.contains(&CERT), "{}", c.variant);
            assert!(auth_resp.2.contains(&CERT), "{}", c.variant);
        }
        // The capture ends with a delete and its (empty) answer.
        let (ex, _, del) = &opened[opened.len() - 2];
        assert_eq!(*ex, exchange::INFORMATIONAL);
        assert_eq!(del, &vec![DELETE], "{}", c.variant);
        assert_eq!(opened[opened.len() - 1].2, Vec::<u8>::new());
    }
}

#[test]
fn what_we_seal_opens_and_reparses() {
    for c in captures() {
        let k = &c.keys;
        let cipher = k
            .encr
            .cipher(&k.sk_ei, k.integ.map(|i| (i, &k.sk_ai[..])))
            .unwrap();
        let m = Message::parse(&c.messages[0]).unwrap();
        let mut inner = Writer::chain();
        for p in &m.payloads {
            inner.push(p);
        }
        let header = Header {
            exchange: exchange::IKE_AUTH,
            message_id: 1,
            ..m.header
        };
        let want = {
            let mut w = Writer::chain();
            for p in &m.payloads {
                w.push(p);
            }
            w.finish()
        };
        let sealed = sk::seal(header, inner, &cipher, 7);
        let parsed = Message::parse(&sealed).unwrap();
        let Some(Payload::Sk(s)) = parsed.payloads.last() else {
            panic!()
        };
        assert_eq!(sk::open(&sealed, s.body, &cipher).unwrap(), want);
        assert_eq!(s.next, pt::SA);
    }
}
