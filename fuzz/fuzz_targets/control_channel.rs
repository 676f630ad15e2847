//! The controller's end of the control channel fed arbitrary stream bytes,
//! before and after a genuine handshake: no panic, no unbounded queues,
//! and nothing is ever accepted as a message without authentication.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_control::{public_key, Channel, ChannelEvent};

const MACHINE: [u8; 32] = [0x11; 32];
const CONTROLLER: [u8; 32] = [0x22; 32];

fuzz_target!(|data: &[u8]| {
    // A fresh server: junk must never complete a handshake.
    let mut fresh = Channel::server(&CONTROLLER, [2; 32], b"hi").expect("server");
    let _ = fresh.handle_input(data);
    assert!(fresh.poll_event().is_none(), "forged handshake accepted");

    // A connected server: junk must never yield a message.
    let mut client =
        Channel::client(&MACHINE, &public_key(&CONTROLLER), [1; 32], b"hello").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"hi").expect("server");
    while let Some(b) = client.poll_transmit() {
        server.handle_input(&b).expect("genuine handshake");
    }
    assert!(matches!(
        server.poll_event(),
        Some(ChannelEvent::Connected { .. })
    ));
    let _ = server.handle_input(data);
    assert!(server.poll_event().is_none(), "forged message accepted");
});
