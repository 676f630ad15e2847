//! Both ends of a channel against each other, bytes moved by hand.

use crate::{public_key, Channel, ChannelError, ChannelEvent};

const MACHINE: [u8; 32] = [0x11; 32];
const CONTROLLER: [u8; 32] = [0x22; 32];

/// Moves everything `from` wants to write into `to`, `chunk` bytes at a time.
fn pump(from: &mut Channel, to: &mut Channel, chunk: usize) -> Result<usize, ChannelError> {
    let mut moved = 0;
    while let Some(bytes) = from.poll_transmit() {
        for piece in bytes.chunks(chunk.max(1)) {
            to.handle_input(piece)?;
        }
        moved += 1;
    }
    Ok(moved)
}

const STAMP: u64 = 1_700_000_000_000_000_000;

fn connected(chunk: usize) -> (Channel, Channel) {
    let controller_pub = public_key(&CONTROLLER);
    let mut client = Channel::client(
        &MACHINE,
        &controller_pub,
        [1; 32],
        STAMP,
        b"hello from node",
    )
    .expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"welcome").expect("server");
    pump(&mut client, &mut server, chunk).expect("message 1");
    assert_eq!(
        server.poll_event(),
        Some(ChannelEvent::Hello {
            peer: public_key(&MACHINE),
            timestamp: STAMP
        })
    );
    assert!(!server.is_open());
    server.accept().expect("accept");
    pump(&mut server, &mut client, chunk).expect("message 2");
    assert_eq!(
        client.poll_event(),
        Some(ChannelEvent::Connected {
            peer: controller_pub,
            hello: b"welcome".to_vec()
        })
    );
    assert_eq!(server.poll_event(), None, "not live before the proof");
    assert!(!server.is_open());
    pump(&mut client, &mut server, chunk).expect("confirmation");
    assert_eq!(
        server.poll_event(),
        Some(ChannelEvent::Connected {
            peer: public_key(&MACHINE),
            hello: b"hello from node".to_vec()
        })
    );
    (client, server)
}

#[test]
fn handshake_and_messages_both_ways_in_any_split() {
    for chunk in [1, 3, 64, 100_000] {
        let (mut c, mut s) = connected(chunk);
        assert!(c.is_open() && s.is_open());
        assert_eq!(
            s.peer(),
            Some(public_key(&MACHINE)),
            "the controller learns the machine key"
        );
        for i in 0..20u8 {
            c.send(&vec![i; usize::from(i) * 50]).expect("send");
            s.send(&[i]).expect("send");
        }
        pump(&mut c, &mut s, chunk).expect("c->s");
        pump(&mut s, &mut c, chunk).expect("s->c");
        for i in 0..20u8 {
            assert_eq!(
                s.poll_event(),
                Some(ChannelEvent::Message(vec![i; usize::from(i) * 50]))
            );
            assert_eq!(c.poll_event(), Some(ChannelEvent::Message(vec![i])));
        }
    }
}

#[test]
fn wrong_controller_key_fails_the_handshake_on_both_sides() {
    let impostor_pub = public_key(&[0x33; 32]);
    // The node expects another controller: the real one cannot read it.
    let mut client =
        Channel::client(&MACHINE, &impostor_pub, [1; 32], STAMP, b"secret hello").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"welcome").expect("server");
    assert_eq!(
        pump(&mut client, &mut server, 1000),
        Err(ChannelError::Handshake)
    );
    assert_eq!(
        server.poll_event(),
        None,
        "nothing leaks from a failed handshake"
    );
    assert!(!server.is_open());
    assert_eq!(
        server.handle_input(&[0, 1, 2]),
        Err(ChannelError::Closed),
        "closed for good"
    );
    // An impostor controller answering a node that expects the real key.
    let mut client =
        Channel::client(&MACHINE, &public_key(&CONTROLLER), [1; 32], STAMP, b"hi").expect("client");
    let mut impostor = Channel::server(&[0x33; 32], [2; 32], b"trust me").expect("server");
    assert_eq!(
        pump(&mut client, &mut impostor, 1000),
        Err(ChannelError::Handshake)
    );
}

#[test]
fn tampered_replayed_and_reordered_frames_are_rejected() {
    let (mut c, mut s) = connected(1000);
    c.send(b"first").expect("send");
    c.send(b"second").expect("send");
    let first = c.poll_transmit().expect("frame");
    let second = c.poll_transmit().expect("frame");
    // Tampered.
    let mut bad = first.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(s.handle_input(&bad), Err(ChannelError::Decrypt));
    assert!(!s.is_open());

    // Replayed: a frame accepted once fails the second time.
    let (mut c, mut s) = connected(1000);
    c.send(b"once").expect("send");
    let frame = c.poll_transmit().expect("frame");
    s.handle_input(&frame).expect("first time");
    assert_eq!(
        s.poll_event(),
        Some(ChannelEvent::Message(b"once".to_vec()))
    );
    assert_eq!(s.handle_input(&frame), Err(ChannelError::Decrypt));

    // Reordered: the second frame before the first.
    let (mut c, mut s) = connected(1000);
    c.send(b"a").expect("send");
    c.send(b"b").expect("send");
    let _a = c.poll_transmit();
    let b = c.poll_transmit().expect("frame");
    assert_eq!(s.handle_input(&b), Err(ChannelError::Decrypt));
    let _ = (first, second);
}

#[test]
fn garbage_oversize_and_misuse_are_typed_errors() {
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    // A frame that is not a Noise message 1.
    assert_eq!(
        server.handle_input(&[0, 5, 1, 2, 3, 4, 5]),
        Err(ChannelError::Handshake)
    );
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    // Length prefixes are bounded by their own width; a partial frame waits.
    server
        .handle_input(&[0xff, 0xff, 1, 2, 3])
        .expect("partial frame is fine");
    assert_eq!(server.poll_event(), None);
    let (mut c, _) = connected(1000);
    assert_eq!(
        c.send(&vec![0; crate::MAX_MESSAGE + 1]),
        Err(ChannelError::TooLarge)
    );
    let mut fresh = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    assert_eq!(fresh.send(b"too early"), Err(ChannelError::NotConnected));
    assert!(Channel::client(
        &MACHINE,
        &public_key(&CONTROLLER),
        [0; 32],
        STAMP,
        &vec![0; 70_000]
    )
    .is_err());
}

#[test]
fn seeds_make_handshakes_deterministic_and_distinct_seeds_distinct() {
    let controller_pub = public_key(&CONTROLLER);
    let a = Channel::client(&MACHINE, &controller_pub, [9; 32], STAMP, b"x")
        .expect("a")
        .poll_transmit();
    let b = Channel::client(&MACHINE, &controller_pub, [9; 32], STAMP, b"x")
        .expect("b")
        .poll_transmit();
    let c = Channel::client(&MACHINE, &controller_pub, [8; 32], STAMP, b"x")
        .expect("c")
        .poll_transmit();
    assert_eq!(a, b, "same seed, same ephemeral key, same bytes");
    assert_ne!(a, c);
}

#[test]
fn a_channel_for_one_purpose_cannot_talk_to_another() {
    let mut client = Channel::client_for(
        crate::Purpose::Relay,
        &MACHINE,
        &public_key(&CONTROLLER),
        [1; 32],
        STAMP,
        b"",
    )
    .expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    assert_eq!(
        pump(&mut client, &mut server, 1000),
        Err(ChannelError::Handshake)
    );
}

/// What a passive observer recorded of a real handshake: message 1 and
/// the confirmation, as sent.
fn recorded_handshake() -> (Vec<u8>, Vec<u8>) {
    let mut client = Channel::client(
        &MACHINE,
        &public_key(&CONTROLLER),
        [1; 32],
        STAMP,
        b"hello from node",
    )
    .expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"welcome").expect("server");
    let message_1 = client.poll_transmit().expect("message 1");
    server.handle_input(&message_1).expect("message 1");
    server.accept().expect("accept");
    pump(&mut server, &mut client, 1000).expect("message 2");
    let confirmation = client.poll_transmit().expect("confirmation");
    server.handle_input(&confirmation).expect("confirmation");
    assert!(server.is_open());
    (message_1, confirmation)
}

#[test]
fn a_replayed_first_message_never_connects() {
    let (message_1, confirmation) = recorded_handshake();
    // A responder with a fresh ephemeral key (a new connection).
    let mut server = Channel::server(&CONTROLLER, [3; 32], b"welcome").expect("server");
    server
        .handle_input(&message_1)
        .expect("message 1 still opens");
    assert_eq!(
        server.poll_event(),
        Some(ChannelEvent::Hello {
            peer: public_key(&MACHINE),
            timestamp: STAMP
        }),
        "authenticated, maybe replayed: only reported"
    );
    assert_eq!(server.send(b"map"), Err(ChannelError::NotConnected));
    server.accept().expect("accept");
    assert!(server.poll_transmit().is_some(), "message 2 goes out");
    // The recorded confirmation was sealed for the old session's keys.
    assert_eq!(
        server.handle_input(&confirmation),
        Err(ChannelError::Handshake)
    );
    assert_eq!(server.poll_event(), None, "never connected");
    assert!(!server.is_open());

    // A responder that knows the newest confirmed timestamp turns it away
    // without an answer.
    let mut times = crate::HelloTimes::new(16);
    times.confirm(public_key(&MACHINE), STAMP);
    let mut server = Channel::server(&CONTROLLER, [4; 32], b"welcome").expect("server");
    server.handle_input(&message_1).expect("message 1");
    match server.poll_event() {
        Some(ChannelEvent::Hello { peer, timestamp }) => {
            assert!(!times.is_fresh(&peer, timestamp));
            server.refuse();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.poll_transmit(), None, "nothing answered");
    assert_eq!(server.handle_input(&[0, 1, 0]), Err(ChannelError::Closed));
}

#[test]
fn the_confirmation_must_be_empty_and_must_come_before_anything_else() {
    let controller_pub = public_key(&CONTROLLER);
    // A frame before the verdict on message 1 is a protocol violation.
    let mut client =
        Channel::client(&MACHINE, &controller_pub, [1; 32], STAMP, b"x").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    let m1 = client.poll_transmit().expect("m1");
    let mut both = m1.clone();
    both.extend_from_slice(&[0, 3, 1, 2, 3]);
    assert_eq!(server.handle_input(&both), Err(ChannelError::Handshake));
    // A client whose first transport message is not the empty proof.
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    server.handle_input(&m1).expect("m1");
    server.accept().expect("accept");
    assert_eq!(server.accept(), Err(ChannelError::NoHelloWaiting));
    pump(&mut server, &mut client, 1000).expect("m2");
    let _proof = client.poll_transmit().expect("proof");
    client.send(b"not the proof").expect("send");
    let second = client.poll_transmit().expect("frame");
    assert_eq!(server.handle_input(&second), Err(ChannelError::Handshake));
    assert!(!server.is_open());
}

#[test]
fn timestamps_never_step_back() {
    assert_eq!(crate::next_timestamp(100, 0), 100);
    assert_eq!(crate::next_timestamp(100, 100), 101, "same instant");
    assert_eq!(crate::next_timestamp(5, 100), 101, "clock stepped back");
}
