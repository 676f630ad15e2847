//! The STUN decoder, server and client fed arbitrary datagrams: no panic,
//! the server never answers with more than the request plus the address it
//! adds, and the client never grows or emits anything from junk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use stun::server::{answer, xor_mapped_address_len, Answer};
use stun::{BindingClient, ClientConfig, Message, TransactionId};

fuzz_target!(|data: &[u8]| {
    // A client with one transaction in flight, fed the bytes as if from its
    // server; make the id match sometimes so the response paths run.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let server = "192.0.2.9:3478".parse().expect("addr");
    let mut client = BindingClient::new(ClientConfig::default());
    let mut id = [0u8; 12];
    if data.len() >= 20 {
        id.copy_from_slice(&data[8..20]);
    }
    client.query(now, server, TransactionId(id)).expect("query");
    let _ = client.poll_transmit();
    let ok = client.handle_input(now, server, data).is_ok();
    assert!(client.poll_transmit().is_none());
    assert!(client.in_flight() == usize::from(!ok));
    client.handle_timeout(now + std::time::Duration::from_secs(60));

    let _ = stun::is_stun(data);
    if let Ok(m) = Message::parse(data) {
        let _ = (m.class(), m.method(), m.transaction_id());
        let _ = (m.username(), m.software(), m.realm(), m.nonce());
        let _ = (
            m.xor_mapped_address(),
            m.mapped_address(),
            m.alternate_server(),
            m.error_code(),
        );
        if let Ok(Some(u)) = m.unknown_attributes() {
            let _ = u.count();
        }
        let _ = m.unknown_required().count();
        let _ = (
            m.check_integrity(b"key"),
            m.check_integrity_sha256(b"key"),
            m.check_fingerprint(),
        );
    }
    for from in ["192.0.2.1:3478", "[2001:db8::1]:3478"] {
        let from = from.parse().expect("addr");
        let mut out = [0u8; 2048];
        if let Answer::Reply(n) = answer(data, from, &mut out) {
            assert!(
                n <= data.len() + xor_mapped_address_len(from),
                "amplification"
            );
            assert!(
                Message::parse(&out[..n]).is_ok() || data.len() >= 20,
                "answers parse"
            );
        }
    }
});
