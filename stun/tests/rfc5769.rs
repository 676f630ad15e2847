//! RFC 5769 test vectors (and RFC 8489 B.1 as corrected by Errata 6268):
//! each decoded, its integrity and fingerprint verified, and re-encoded
//! byte for byte by our builder. Bytes as in ../shared/lab/stun.

use std::net::SocketAddr;

use sha2::Digest;
use stun::wire::{self, ATTR_PASSWORD_ALGORITHM, ATTR_SOFTWARE, ATTR_USERHASH, ATTR_USERNAME};
use stun::{long_term_key, Class, Message, MessageBuilder, StunError, TransactionId};

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).expect("hex")
}

const SHORT_TERM: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const USER_24: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";

const REQUEST_2_1: &str = "00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74 00240004 6e0001ff 80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020 00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf";
const RESPONSE_2_2: &str = "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220 00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7 80280004 c07d4c96";
const RESPONSE_2_3: &str = "01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220 00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41 80280004 c8fb0b4c";
const REQUEST_2_4: &str = "00010060 2112a442 78ad3433 c6ad72c0 29da412e
  00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
  0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
  0014000b 6578616d 706c652e 6f726700
  00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666";
const REQUEST_8489_B1_ERRATA: &str = "00010090 2112a442 78ad3433 c6ad72c0 29da412e
  001e0020 4a3cf38f ef6992bd a952c678 0417da0f 24819415 569e60b2 05c46e41 407f1704
  00150029 6f624d61 744a6f73 32414141 43662f2f 3439396b 39353464 364f4c33 346f4c39 46535476 79363473 41000000
  0014000b 6578616d 706c652e 6f726700 001d0004 00020000
  001c0020 b5c7bf00 5b6c52a2 1c51c5e8 92f81924 136296cb 927c4314 9309278c c6518e65";

fn txid(s: &str) -> TransactionId {
    TransactionId(hex(s).try_into().expect("12 bytes"))
}

fn build(
    class: Class,
    id: TransactionId,
    pad: u8,
    f: impl FnOnce(&mut MessageBuilder<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut b = MessageBuilder::new(&mut buf, class, wire::METHOD_BINDING, id)
        .expect("builder")
        .padding_byte(pad);
    f(&mut b);
    let n = b.finish();
    buf.truncate(n);
    buf
}

#[test]
fn sample_request_2_1() {
    let bytes = hex(REQUEST_2_1);
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(
        (m.class(), m.method()),
        (Class::Request, wire::METHOD_BINDING)
    );
    assert_eq!(m.transaction_id(), txid("b7e7a701bc34d686fa87dfae"));
    assert_eq!(m.software().expect("sw"), Some("STUN test client"));
    assert_eq!(
        m.attribute(0x0024).expect("PRIORITY").value,
        hex("6e0001ff")
    );
    assert_eq!(
        m.attribute(0x8029).expect("ICE-CONTROLLED").value,
        hex("932ff9b151263b36")
    );
    assert_eq!(m.username().expect("user"), Some("evtj:h6vY"));
    m.check_integrity(SHORT_TERM).expect("MESSAGE-INTEGRITY");
    m.check_fingerprint().expect("FINGERPRINT");
    assert_eq!(m.check_integrity(b"wrong"), Err(StunError::BadIntegrity));
    let again = build(Class::Request, m.transaction_id(), 0x20, |b| {
        b.attribute(ATTR_SOFTWARE, b"STUN test client").expect("sw");
        b.attribute(0x0024, &hex("6e0001ff")).expect("priority");
        b.attribute(0x8029, &hex("932ff9b151263b36")).expect("ice");
        b.attribute(ATTR_USERNAME, b"evtj:h6vY").expect("user");
        b.message_integrity(SHORT_TERM).expect("mi");
        b.fingerprint().expect("fp");
    });
    assert_eq!(
        hex::encode(&again),
        hex::encode(&bytes),
        "re-encoded byte for byte"
    );
}

fn sample_response(vector: &str, expected: &str) {
    let bytes = hex(vector);
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(m.software().expect("sw"), Some("test vector"));
    let addr: SocketAddr = expected.parse().expect("addr");
    assert_eq!(m.xor_mapped_address().expect("xma"), Some(addr));
    m.check_integrity(SHORT_TERM).expect("MESSAGE-INTEGRITY");
    m.check_fingerprint().expect("FINGERPRINT");
    let again = build(Class::SuccessResponse, m.transaction_id(), 0x20, |b| {
        b.attribute(ATTR_SOFTWARE, b"test vector").expect("sw");
        b.xor_mapped_address(addr).expect("xma");
        b.message_integrity(SHORT_TERM).expect("mi");
        b.fingerprint().expect("fp");
    });
    assert_eq!(
        hex::encode(&again),
        hex::encode(&bytes),
        "re-encoded byte for byte"
    );
}

#[test]
fn sample_ipv4_response_2_2() {
    sample_response(RESPONSE_2_2, "192.0.2.1:32853");
}

#[test]
fn sample_ipv6_response_2_3() {
    sample_response(RESPONSE_2_3, "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

#[test]
fn sample_request_with_long_term_credentials_2_4() {
    let bytes = hex(REQUEST_2_4);
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(m.transaction_id(), txid("78ad3433c6ad72c029da412e"));
    assert_eq!(m.username().expect("user"), Some(USER_24));
    assert_eq!(
        m.nonce().expect("nonce"),
        Some("f//499k954d6OL34oL9FSTvy64sA")
    );
    assert_eq!(m.realm().expect("realm"), Some("example.org"));
    assert!(!m.has_fingerprint());
    // "TheMatrIX" is the SASLprep form of the vector's password.
    let key = long_term_key(USER_24, "example.org", "TheMatrIX");
    m.check_integrity(&key).expect("MESSAGE-INTEGRITY");
    let again = build(Class::Request, m.transaction_id(), 0, |b| {
        b.attribute(ATTR_USERNAME, USER_24.as_bytes())
            .expect("user");
        b.attribute(wire::ATTR_NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
            .expect("nonce");
        b.attribute(wire::ATTR_REALM, b"example.org")
            .expect("realm");
        b.message_integrity(&key).expect("mi");
    });
    assert_eq!(
        hex::encode(&again),
        hex::encode(&bytes),
        "re-encoded byte for byte"
    );
}

#[test]
fn rfc8489_b1_with_errata_6268_message_integrity_sha256() {
    let bytes = hex(REQUEST_8489_B1_ERRATA);
    let m = Message::parse(&bytes).expect("parse");
    let userhash = sha2::Sha256::digest(format!("{USER_24}:example.org").as_bytes());
    assert_eq!(
        m.attribute(ATTR_USERHASH).expect("USERHASH").value,
        userhash.as_slice()
    );
    assert_eq!(
        m.attribute(ATTR_PASSWORD_ALGORITHM).expect("PA").value,
        hex("00020000")
    );
    let key = sha2::Sha256::digest(format!("{USER_24}:example.org:TheMatrIX").as_bytes());
    m.check_integrity_sha256(&key)
        .expect("MESSAGE-INTEGRITY-SHA256");
    let nonce = m.nonce().expect("nonce").expect("present");
    assert_eq!(nonce, "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA");
    let again = build(Class::Request, m.transaction_id(), 0, |b| {
        b.attribute(ATTR_USERHASH, &userhash).expect("userhash");
        b.attribute(wire::ATTR_NONCE, nonce.as_bytes())
            .expect("nonce");
        b.attribute(wire::ATTR_REALM, b"example.org")
            .expect("realm");
        b.attribute(ATTR_PASSWORD_ALGORITHM, &hex("00020000"))
            .expect("pa");
        b.message_integrity_sha256(&key).expect("mi");
    });
    assert_eq!(
        hex::encode(&again),
        hex::encode(&bytes),
        "re-encoded byte for byte"
    );
}

#[test]
fn tampered_vectors_fail_integrity_or_fingerprint() {
    let mut bytes = hex(RESPONSE_2_2);
    bytes[30] ^= 1; // inside XOR-MAPPED-ADDRESS
    let m = Message::parse(&bytes).expect("parse");
    assert_eq!(m.check_integrity(SHORT_TERM), Err(StunError::BadIntegrity));
    assert_eq!(m.check_fingerprint(), Err(StunError::BadFingerprint));
}
