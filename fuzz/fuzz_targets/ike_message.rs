//! The IKEv2 message parser fed arbitrary bytes: typed errors only; what
//! parses re-encodes to bytes that parse to the same payloads (a
//! transform's unknown attributes are kept only as a flag that stops its
//! selection, so the comparison leaves that flag out); and no forged
//! Encrypted payload ever opens.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_ikev2::crypto::Encr;
use proto_ikev2::crypto::sk;
use proto_ikev2::wire::{parse_chain, Message, Payload, Writer};

/// The payloads without the unknown-attribute flags.
fn understood<'a>(payloads: &[Payload<'a>]) -> Vec<Payload<'a>> {
    let mut out = payloads.to_vec();
    for p in &mut out {
        if let Payload::Sa(sa) = p {
            for t in sa
                .proposals
                .iter_mut()
                .flat_map(|p| p.transforms.iter_mut())
            {
                t.unknown_attribute = false;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if let Some((&first, rest)) = data.split_first() {
        let _ = parse_chain(first, rest);
    }
    let Ok(m) = Message::parse(data) else {
        return;
    };
    let mut w = Writer::message(m.header);
    for p in &m.payloads {
        w.push(p);
    }
    let again = w.finish();
    let m2 = Message::parse(&again).expect("what we emit parses");
    assert_eq!(
        understood(&m.payloads),
        understood(&m2.payloads),
        "re-encoding changed the payloads"
    );
    if let Some(Payload::Sk(s)) = m.payloads.last() {
        for encr in [Encr::AesGcm16 { bits: 256 }, Encr::ChaCha20Poly1305] {
            let cipher = encr.cipher(&[9; 36], None).expect("key");
            assert!(sk::open(data, s.body, &cipher).is_err(), "forgery opened");
        }
        let cbc = Encr::AesCbc { bits: 128 }
            .cipher(&[1; 16], Some((proto_esp::Integ::HmacSha256, &[2; 32])))
            .expect("key");
        assert!(sk::open(data, s.body, &cbc).is_err(), "forgery opened");
    }
});
