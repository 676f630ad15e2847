//! The controller's end of the control channel fed arbitrary stream bytes,
//! before and after a genuine handshake: no panic, no unbounded queues,
//! and nothing is ever accepted as a message without authentication, nor
//! as a live session without the initiator's confirmation.
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

    // A genuine message 1, then junk instead of the confirmation: never live.
    let mut client =
        Channel::client(&MACHINE, &public_key(&CONTROLLER), [1; 32], 7, b"hello").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"hi").expect("server");
    let m1 = client.poll_transmit().expect("message 1");
    server.handle_input(&m1).expect("genuine message 1");
    assert!(matches!(
        server.poll_event(),
        Some(ChannelEvent::Hello { timestamp: 7, .. })
    ));
    server.accept().expect("accept");
    let _ = server.handle_input(data);
    assert!(
        server.poll_event().is_none(),
        "live without the initiator's proof"
    );

    // A connected server: junk must never yield a message.
    let mut client =
        Channel::client(&MACHINE, &public_key(&CONTROLLER), [1; 32], 8, b"hello").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"hi").expect("server");
    server
        .handle_input(&client.poll_transmit().expect("message 1"))
        .expect("genuine message 1");
    let _ = server.poll_event();
    server.accept().expect("accept");
    while let Some(b) = server.poll_transmit() {
        client.handle_input(&b).expect("message 2");
    }
    while let Some(b) = client.poll_transmit() {
        server.handle_input(&b).expect("confirmation");
    }
    assert!(matches!(
        server.poll_event(),
        Some(ChannelEvent::Connected { .. })
    ));
    let _ = server.handle_input(data);
    assert!(server.poll_event().is_none(), "forged message accepted");
});
