//! The STUN decoder and server fed arbitrary datagrams: no panic, and the
//! server never answers with more than the request plus the address it adds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stun::server::{answer, xor_mapped_address_len, Answer};
use stun::Message;

fuzz_target!(|data: &[u8]| {
    let _ = stun::is_stun(data);
    if let Ok(m) = Message::parse(data) {
        let _ = (m.class(), m.method(), m.transaction_id());
        let _ = (m.username(), m.software(), m.realm(), m.nonce());
        let _ = (m.xor_mapped_address(), m.mapped_address(), m.alternate_server(), m.error_code());
        if let Ok(Some(u)) = m.unknown_attributes() {
            let _ = u.count();
        }
        let _ = m.unknown_required().count();
        let _ = (m.check_integrity(b"key"), m.check_integrity_sha256(b"key"), m.check_fingerprint());
    }
    for from in ["192.0.2.1:3478", "[2001:db8::1]:3478"] {
        let from = from.parse().expect("addr");
        let mut out = [0u8; 2048];
        if let Answer::Reply(n) = answer(data, from, &mut out) {
            assert!(n <= data.len() + xor_mapped_address_len(from), "amplification");
            assert!(Message::parse(&out[..n]).is_ok() || data.len() >= 20, "answers parse");
        }
    }
});
