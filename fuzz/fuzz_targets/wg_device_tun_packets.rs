//! A device fed arbitrary packets from the TUN side, before and after a
//! session exists. No panic; staged packets stay bounded.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_wg::harness::Pair;

fuzz_target!(|data: &[u8]| {
    let mut pair = Pair::new(2);
    let mut rest = data;
    let mut round = 0;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 1600;
        let len = len.min(rest.len() - 2);
        let packet = &rest[2..2 + len];
        let _ = pair.send_ip(0, packet);
        // Also as a valid IPv4 header to the peer with this payload.
        let _ = pair.send(0, packet);
        round += 1;
        if round % 8 == 0 {
            pair.pump();
        }
        rest = &rest[2 + len..];
    }
    pair.pump();
});
