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

fn connected(chunk: usize) -> (Channel, Channel) {
    let controller_pub = public_key(&CONTROLLER);
    let mut client =
        Channel::client(&MACHINE, &controller_pub, [1; 32], b"hello from node").expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"welcome").expect("server");
    pump(&mut client, &mut server, chunk).expect("message 1");
    assert_eq!(
        server.poll_event(),
        Some(ChannelEvent::Connected {
            peer: public_key(&MACHINE),
            hello: b"hello from node".to_vec()
        })
    );
    pump(&mut server, &mut client, chunk).expect("message 2");
    assert_eq!(
        client.poll_event(),
        Some(ChannelEvent::Connected {
            peer: controller_pub,
            hello: b"welcome".to_vec()
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
        Channel::client(&MACHINE, &impostor_pub, [1; 32], b"secret hello").expect("client");
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
        Channel::client(&MACHINE, &public_key(&CONTROLLER), [1; 32], b"hi").expect("client");
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
        &vec![0; 70_000]
    )
    .is_err());
}

#[test]
fn seeds_make_handshakes_deterministic_and_distinct_seeds_distinct() {
    let controller_pub = public_key(&CONTROLLER);
    let a = Channel::client(&MACHINE, &controller_pub, [9; 32], b"x")
        .expect("a")
        .poll_transmit();
    let b = Channel::client(&MACHINE, &controller_pub, [9; 32], b"x")
        .expect("b")
        .poll_transmit();
    let c = Channel::client(&MACHINE, &controller_pub, [8; 32], b"x")
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
        b"",
    )
    .expect("client");
    let mut server = Channel::server(&CONTROLLER, [2; 32], b"").expect("server");
    assert_eq!(
        pump(&mut client, &mut server, 1000),
        Err(ChannelError::Handshake)
    );
}
