//! Two devices against each other over the harness link, with fake time.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::harness::{ipv4_packet, Impairments, Pair};
use crate::timers::{REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, ZERO_KEYS_AFTER};
use crate::{
    Encapsulated, Event, PresharedKey, PrivateKey, Received, RecvError, SendError, TransmitKind,
};

const A: usize = 0;
const B: usize = 1;

fn completed(initiator: bool) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::HandshakeCompleted { initiator: i, .. } if *i == initiator)
}

/// Which message a transmit carries (the tests assert on it).
fn kind(t: &crate::Transmit) -> TransmitKind {
    TransmitKind::of(&t.contents).expect("a WireGuard message")
}

fn payload(i: u32) -> Vec<u8> {
    let mut p = format!("packet {i} ").into_bytes();
    p.resize(40 + (i as usize * 7) % 1300, (i % 251) as u8);
    p
}

/// Hands one message to `dest` (as if from the other node's address),
/// bypassing the link.
fn deliver_raw(p: &mut Pair, dest: usize, bytes: &[u8]) -> Result<Received, RecvError> {
    let src = p.nodes[1 - dest].addr;
    p.deliver(dest, src, bytes.to_vec())
}

/// Compares payload lists without dumping megabytes on failure.
#[track_caller]
fn assert_same(got: &[Vec<u8>], expected: &[Vec<u8>]) {
    assert_eq!(got.len(), expected.len(), "packet count");
    if let Some(i) = got.iter().zip(expected).position(|(g, e)| g != e) {
        panic!(
            "packet {i} differs ({} vs {} bytes)",
            got[i].len(),
            expected[i].len()
        );
    }
}

/// The IP payload of the packets node `i` received.
fn payloads(p: &Pair, i: usize) -> Vec<Vec<u8>> {
    p.nodes[i]
        .delivered
        .iter()
        .map(|ip| ip[20..].to_vec())
        .collect()
}

fn established(seed: u64) -> Pair {
    let mut p = Pair::new(seed);
    assert_eq!(p.send(A, b"hello"), Ok(Encapsulated::Queued));
    p.pump();
    assert_eq!(payloads(&p, B), vec![b"hello".to_vec()]);
    p
}

#[test]
fn handshake_initiated_by_either_side_delivers_the_first_packet() {
    for (init, resp) in [(A, B), (B, A)] {
        let mut p = Pair::new(10 + init as u64);
        assert_eq!(p.send(init, b"first"), Ok(Encapsulated::Queued));
        p.pump();
        assert_eq!(
            payloads(&p, resp),
            vec![b"first".to_vec()],
            "staged packet delivered"
        );
        assert_eq!(p.count_events(init, completed(true)), 1);
        assert_eq!(p.count_events(resp, completed(false)), 1);
        // The reverse direction works at once on the confirmed session.
        assert!(matches!(
            p.send(resp, b"back"),
            Ok(Encapsulated::Send { .. })
        ));
        p.pump();
        assert_eq!(payloads(&p, init), vec![b"back".to_vec()]);
        let kinds: Vec<TransmitKind> = p.nodes[init].sent.iter().map(kind).collect();
        assert_eq!(kinds[0], TransmitKind::Initiation);
        assert!(p.nodes[init]
            .device
            .peer_info(p.nodes[init].peer)
            .and_then(|i| i.last_handshake)
            .is_some());
    }
}

#[test]
fn simultaneous_initiation_converges_and_loses_nothing() {
    let mut p = Pair::new(20);
    assert_eq!(p.send(A, b"from a"), Ok(Encapsulated::Queued));
    assert_eq!(p.send(B, b"from b"), Ok(Encapsulated::Queued));
    p.pump();
    assert_eq!(payloads(&p, B), vec![b"from a".to_vec()]);
    assert_eq!(payloads(&p, A), vec![b"from b".to_vec()]);
    for i in 0..50u32 {
        let from = (i % 2) as usize;
        assert!(
            matches!(p.send(from, &payload(i)), Ok(Encapsulated::Send { .. })),
            "{i}"
        );
        p.pump();
    }
    assert_eq!(payloads(&p, B).len(), 26);
    assert_eq!(payloads(&p, A).len(), 26);
    assert!(
        p.nodes.iter().all(|n| n.errors.is_empty()),
        "{:?}",
        p.nodes.iter().map(|n| &n.errors).collect::<Vec<_>>()
    );
}

#[test]
fn rekey_by_time_loses_no_packet() {
    let mut p = established(30);
    let mut sent = [1usize, 0];
    // Both directions, one packet per second each, for three rekey periods.
    for s in 0..(3 * REKEY_AFTER_TIME.as_secs() as u32) {
        for from in [A, B] {
            p.send(from, &payload(s)).expect("send");
            sent[from] += 1;
        }
        p.advance(Duration::from_secs(1));
    }
    assert_eq!(p.nodes[B].delivered.len(), sent[A]);
    assert_eq!(p.nodes[A].delivered.len(), sent[B]);
    // A new session at least every REKEY_AFTER_TIME.
    let handshakes = p.count_events(A, |e| matches!(e, Event::HandshakeCompleted { .. }));
    assert!(handshakes >= 3, "{handshakes} handshakes");
    assert!(
        p.nodes.iter().all(|n| n.errors.is_empty()),
        "{:?}",
        p.nodes[0].errors
    );
}

#[test]
fn rekey_by_message_count_loses_no_packet() {
    let mut p = established(40);
    let peer = p.nodes[A].peer;
    // Past the 5 s initiation rate limit of the first handshake.
    p.advance(Duration::from_secs(6));
    let session = p.nodes[A]
        .device
        .current_session_mut(peer)
        .expect("session");
    session.set_send_counter(REKEY_AFTER_MESSAGES);
    let before = p.count_events(A, completed(true));
    for i in 0..20 {
        p.send(A, &payload(i)).expect("send");
        p.pump();
    }
    assert_eq!(
        p.count_events(A, completed(true)),
        before + 1,
        "exactly one new handshake"
    );
    assert_eq!(p.nodes[B].delivered.len(), 21);
    assert!(p.nodes[B].errors.is_empty(), "{:?}", p.nodes[B].errors);
}

#[test]
fn sessions_expire_and_keys_are_zeroed() {
    let mut p = established(50);
    // Silence past REJECT_AFTER_TIME: the session may no longer send.
    p.advance(REJECT_AFTER_TIME + Duration::from_secs(1));
    let before = p.nodes[A].sent.len();
    // Cut the link so the handshake this triggers cannot complete.
    p.link.loss = 100;
    assert_eq!(p.send(A, b"late"), Ok(Encapsulated::Queued));
    p.pump();
    assert_eq!(kind(&p.nodes[A].sent[before]), TransmitKind::Initiation);
    // Gives up after REKEY_ATTEMPT_TIME, then zeroes keys at 3 × REJECT_AFTER_TIME.
    p.advance(Duration::from_secs(100));
    assert_eq!(
        p.count_events(A, |e| matches!(e, Event::HandshakeGaveUp { .. })),
        1
    );
    p.advance(ZERO_KEYS_AFTER);
    assert!(p.count_events(A, |e| matches!(e, Event::KeysZeroed { .. })) >= 1);
    assert!(p.count_events(B, |e| matches!(e, Event::KeysZeroed { .. })) >= 1);
    // With the link back, a new handshake carries traffic again.
    p.link.loss = 0;
    p.nodes[B].delivered.clear();
    assert_eq!(p.send(A, b"again"), Ok(Encapsulated::Queued));
    p.pump();
    assert_eq!(payloads(&p, B), vec![b"again".to_vec()]);
}

#[test]
fn replayed_duplicated_and_reordered_data() {
    let mut p = established(60);
    let mut datagrams = Vec::new();
    for i in 0..64 {
        let Ok(Encapsulated::Send { .. }) = p.send(A, &payload(i)) else {
            panic!("send {i}")
        };
        // Take the datagram off the link: we deliver by hand.
        datagrams.push(p.nodes[A].sent.last().expect("sent").contents.clone());
    }
    let before = p.nodes[B].delivered.len();
    p.pump(); // delivers the in-flight originals in order
    assert_eq!(p.nodes[B].delivered.len(), before + 64);
    // Every one of them, again, in reverse: all replays.
    for d in datagrams.iter().rev() {
        assert_eq!(deliver_raw(&mut p, B, d), Err(RecvError::Replayed));
    }
    // Fresh packets delivered in reverse order are all accepted.
    let mut fresh = Vec::new();
    p.link.loss = 100;
    for i in 0..64 {
        p.send(A, &payload(100 + i)).expect("send");
        fresh.push(p.nodes[A].sent.last().expect("sent").contents.clone());
    }
    p.link.loss = 0;
    let before = p.nodes[B].delivered.len();
    for d in fresh.iter().rev() {
        assert!(matches!(
            deliver_raw(&mut p, B, d),
            Ok(Received::Packet { .. })
        ));
    }
    assert_eq!(p.nodes[B].delivered.len(), before + 64);
    let expected: Vec<Vec<u8>> = (0..64).rev().map(|i| payload(100 + i)).collect();
    assert_same(&payloads(&p, B)[before..], &expected);
}

#[test]
fn truncated_and_tampered_data_is_rejected_without_harm() {
    let mut p = established(70);
    p.link.loss = 100;
    p.send(A, &payload(5)).expect("send");
    p.link.loss = 0;
    let d = p.nodes[A].sent.last().expect("sent").contents.clone();
    for cut in 0..d.len() {
        let r = deliver_raw(&mut p, B, &d[..cut]);
        assert!(r.is_err(), "prefix {cut} accepted: {r:?}");
    }
    for bit in [0usize, 8 * 16, 8 * (d.len() - 1)] {
        let mut t = d.clone();
        t[bit / 8] ^= 1;
        assert!(deliver_raw(&mut p, B, &t).is_err(), "bit {bit}");
    }
    // The untouched original still goes through afterwards.
    assert!(matches!(
        deliver_raw(&mut p, B, &d),
        Ok(Received::Packet { .. })
    ));
}

#[test]
fn replayed_initiation_is_rejected() {
    let mut p = Pair::new(80);
    p.link.loss = 100;
    p.send(A, b"x").expect("send");
    let init = p.nodes[A]
        .device
        .poll_transmit()
        .expect("initiation")
        .contents;
    p.link.loss = 0;
    assert_eq!(deliver_raw(&mut p, B, &init), Ok(Received::Handshake));
    p.advance(Duration::from_secs(1));
    assert_eq!(
        deliver_raw(&mut p, B, &init),
        Err(RecvError::ReplayedInitiation)
    );
}

#[test]
fn under_load_handshake_goes_through_the_cookie_path() {
    let mut p = Pair::new(90);
    p.nodes[B].device.set_under_load(true);
    assert_eq!(p.send(A, b"cookie please"), Ok(Encapsulated::Queued));
    p.pump();
    assert_eq!(p.nodes[B].errors, vec![RecvError::CookieSent]);
    assert!(p.nodes[B]
        .sent
        .iter()
        .any(|t| kind(t) == TransmitKind::CookieReply));
    assert!(p.nodes[B].delivered.is_empty());
    // The retry after REKEY_TIMEOUT carries MAC2 and is answered.
    p.advance(Duration::from_secs(6));
    assert_eq!(payloads(&p, B), vec![b"cookie please".to_vec()]);
    assert_eq!(
        p.nodes[B].errors,
        vec![RecvError::CookieSent],
        "no second cookie needed"
    );
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut p = established(100);
    let new_addr: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
    p.nodes[A].addr = new_addr;
    p.send(A, b"from new place").expect("send");
    p.pump();
    assert!(
        p.count_events(
            B,
            |e| matches!(e, Event::EndpointChanged { endpoint, .. } if *endpoint == new_addr)
        ) >= 1
    );
    let Ok(Encapsulated::Send { to, .. }) = p.send(B, b"reply") else {
        panic!("send")
    };
    assert_eq!(to, new_addr);
    p.pump();
    assert_eq!(payloads(&p, A).last().expect("reply"), &b"reply".to_vec());
    // Garbage from a third address changes nothing.
    let spoof: SocketAddr = "203.0.113.9:1".parse().expect("addr");
    let mut junk = p.nodes[A].sent.last().expect("sent").contents.clone();
    junk[20] ^= 0xff;
    assert!(p.deliver(B, spoof, junk).is_err());
    let info = p.nodes[B].device.peer_info(p.nodes[B].peer).expect("peer");
    assert_eq!(info.endpoint, Some(new_addr));
}

#[test]
fn a_pinned_endpoint_does_not_follow_the_peers_packets() {
    let mut p = established(101);
    let (peer_of_a, old) = (p.nodes[B].peer, p.nodes[A].addr);
    p.nodes[B].device.set_endpoint_pinned(peer_of_a, true);
    // A's packets now come from elsewhere (through a relay, say): B takes
    // them, and still sends where its owner said.
    p.nodes[A].addr = "198.51.100.7:40000".parse().expect("addr");
    p.send(A, b"via the relay").expect("send");
    p.pump();
    assert_eq!(
        payloads(&p, B).last().expect("delivered"),
        &b"via the relay".to_vec()
    );
    assert_eq!(
        p.count_events(B, |e| matches!(e, Event::EndpointChanged { .. })),
        0
    );
    let Ok(Encapsulated::Send { to, .. }) = p.send(B, b"reply") else {
        panic!("send")
    };
    assert_eq!(to, old, "the pinned endpoint");
    // Unpinned, it roams again.
    p.nodes[B].device.set_endpoint_pinned(peer_of_a, false);
    p.send(A, b"again").expect("send");
    p.pump();
    let info = p.nodes[B].device.peer_info(peer_of_a).expect("peer");
    assert_eq!(info.endpoint, Some(p.nodes[A].addr));
}

/// A and B established, both pinned, each with a relay detour to the
/// other (what the agent sets up): A's copies reach B from `relay_a`.
fn with_fallbacks(seed: u64) -> Pair {
    let mut p = established(seed);
    let relay_a: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    let relay_b: SocketAddr = "127.0.0.1:40002".parse().expect("addr");
    p.add_detour(relay_a, B, "127.0.0.1:50001".parse().expect("addr"));
    p.add_detour(relay_b, A, "127.0.0.1:50002".parse().expect("addr"));
    for (node, relay) in [(A, relay_a), (B, relay_b)] {
        let peer = p.nodes[node].peer;
        p.nodes[node].device.set_endpoint_pinned(peer, true);
        p.nodes[node].device.set_fallback(peer, Some(relay));
    }
    p
}

/// A ping every 50 ms from A, answered by B, `n` times; how many of the
/// pings and of the answers arrived.
fn ping_pong(p: &mut Pair, n: u32) -> (usize, usize) {
    let (a0, b0) = (p.nodes[A].delivered.len(), p.nodes[B].delivered.len());
    for i in 0..n {
        let before = p.nodes[B].delivered.len();
        let _ = p.send(A, &payload(i));
        p.pump();
        if p.nodes[B].delivered.len() > before {
            let _ = p.send(B, &payload(i));
            p.pump();
        }
        p.advance(Duration::from_millis(50));
    }
    (
        p.nodes[B].delivered.len() - b0,
        p.nodes[A].delivered.len() - a0,
    )
}

#[test]
fn answered_traffic_is_never_copied_to_the_fallback() {
    let mut p = with_fallbacks(103);
    assert_eq!(ping_pong(&mut p, 100), (100, 100));
    for node in [A, B] {
        assert_eq!(p.nodes[node].device.stats().tx_copied_to_fallback, 0);
    }
}

#[test]
fn replies_interleaved_with_our_own_requests_are_not_copied() {
    // Two 20/s ping floods 40 ms out of phase: each side's request leaves
    // 40 ms after its last reply, with nothing heard in between. That is
    // the peer's usual rhythm, not a broken path.
    let mut p = with_fallbacks(106);
    for i in 0..100u32 {
        for (asker, offset) in [(A, 0), (B, 40)] {
            let _ = p.send(asker, &payload(i));
            p.pump();
            let _ = p.send(1 - asker, &payload(i));
            p.pump();
            p.advance(Duration::from_millis(if offset == 0 { 40 } else { 10 }));
        }
    }
    for node in [A, B] {
        assert_eq!(p.nodes[node].device.stats().tx_copied_to_fallback, 0);
    }
}

#[test]
fn a_path_just_chosen_is_not_copied_while_the_peer_answers_through_the_relay() {
    // A has moved to the direct path; B still sends through the relay, so
    // A hears nothing on its endpoint for a while. That is the moment of
    // a switch, not a broken path: no copies within the first second.
    let mut p = with_fallbacks(108);
    let (peer_of_a, relay_b) = (p.nodes[B].peer, "127.0.0.1:40002".parse().expect("addr"));
    p.nodes[B].device.set_endpoint(peer_of_a, relay_b);
    assert_eq!(ping_pong(&mut p, 15), (15, 15));
    assert_eq!(p.nodes[A].device.stats().tx_copied_to_fallback, 0);
}

#[test]
fn the_first_packet_after_a_pause_is_not_copied() {
    // B's last act was a reply; seconds later it asks something itself.
    let mut p = with_fallbacks(107);
    for i in 0..20u32 {
        ping_pong(&mut p, 1);
        p.advance(Duration::from_secs(2));
        let _ = p.send(B, &payload(i));
        p.pump();
        let _ = p.send(A, &payload(i));
        p.pump();
        p.advance(Duration::from_secs(2));
    }
    for node in [A, B] {
        assert_eq!(p.nodes[node].device.stats().tx_copied_to_fallback, 0);
    }
}

#[test]
fn a_direct_path_that_breaks_under_a_stream_costs_at_most_one_packet() {
    let mut p = with_fallbacks(104);
    assert_eq!(ping_pong(&mut p, 20), (20, 20));
    // The path breaks: nothing addressed to either node's own address
    // arrives any more; the detours (the relay) still work.
    p.link.direct_broken = true;
    let (pings, answers) = ping_pong(&mut p, 100);
    assert!(pings >= 99, "{pings} of 100 pings arrived");
    assert_eq!(answers, pings, "every ping that arrived was answered");
    let copied = p.nodes[A].device.stats().tx_copied_to_fallback;
    assert!(copied >= 98, "copied {copied}");
    // The path heals: answers come direct again and the copies stop.
    p.link.direct_broken = false;
    ping_pong(&mut p, 5);
    let copied = p.nodes[A].device.stats().tx_copied_to_fallback;
    assert_eq!(ping_pong(&mut p, 50), (50, 50));
    assert_eq!(p.nodes[A].device.stats().tx_copied_to_fallback, copied);
}

#[test]
fn without_a_fallback_nothing_is_copied_and_a_broken_path_loses_the_stream() {
    let mut p = established(105);
    p.link.direct_broken = true;
    let (pings, _) = ping_pong(&mut p, 20);
    assert_eq!(pings, 0);
    assert_eq!(p.nodes[A].device.stats().tx_copied_to_fallback, 0);
}

#[test]
fn a_handshake_sent_to_a_dead_endpoint_is_sent_again_when_the_endpoint_moves() {
    let mut p = Pair::new(102);
    let (peer_of_b, b_addr) = (p.nodes[A].peer, p.nodes[B].addr);
    let nowhere: SocketAddr = "192.0.2.99:9".parse().expect("addr");
    p.nodes[A].device.set_endpoint(peer_of_b, nowhere);
    assert_eq!(p.send(A, b"first"), Ok(Encapsulated::Queued));
    p.pump();
    assert!(
        p.nodes[B].delivered.is_empty(),
        "the initiation went nowhere"
    );
    // The owner moves the peer (its path machine found a path): the
    // handshake goes again at once, not 5 s later.
    let now = p.now;
    p.nodes[A].device.move_endpoint(now, peer_of_b, b_addr);
    p.pump();
    assert_eq!(payloads(&p, B), vec![b"first".to_vec()]);
    assert_eq!(p.now, now, "no time passed");
    // With a session, a move sends nothing by itself.
    let sent = p.nodes[A].sent.len();
    p.nodes[A].device.move_endpoint(now, peer_of_b, nowhere);
    p.pump();
    assert_eq!(p.nodes[A].sent.len(), sent);
}

#[test]
fn wrong_peer_key_never_completes_and_gives_up() {
    let mut p = Pair::new(110);
    // B expects some other key for A.
    let peer = p.nodes[B].peer;
    p.nodes[B].device.remove_peer(peer);
    let stranger = PrivateKey::from_bytes([42; 32]).public_key();
    p.nodes[B].device.add_peer(stranger).expect("peer");
    assert_eq!(p.send(A, b"nope"), Ok(Encapsulated::Queued));
    p.advance(Duration::from_secs(120));
    assert!(p.nodes[B].delivered.is_empty());
    assert!(p.nodes[B]
        .errors
        .iter()
        .all(|e| *e == RecvError::UnknownPeer));
    let initiations = p.nodes[A]
        .sent
        .iter()
        .filter(|t| kind(t) == TransmitKind::Initiation)
        .count();
    assert_eq!(
        initiations, 19,
        "first try plus 18 retries over REKEY_ATTEMPT_TIME"
    );
    assert_eq!(
        p.count_events(A, |e| matches!(e, Event::HandshakeGaveUp { .. })),
        1
    );
}

#[test]
fn mismatched_preshared_keys_fail_matching_ones_work() {
    let mut p = Pair::new(120);
    let (pa, pb) = (p.nodes[A].peer, p.nodes[B].peer);
    p.nodes[A]
        .device
        .set_preshared_key(pa, PresharedKey::from_bytes([1; 32]));
    p.nodes[B]
        .device
        .set_preshared_key(pb, PresharedKey::from_bytes([2; 32]));
    p.send(A, b"psk").expect("send");
    p.pump();
    assert!(p.nodes[B].delivered.is_empty());
    assert!(p.nodes[A].errors.contains(&RecvError::HandshakeAuth));
    p.nodes[B]
        .device
        .set_preshared_key(pb, PresharedKey::from_bytes([1; 32]));
    p.advance(Duration::from_secs(6));
    assert_eq!(payloads(&p, B), vec![b"psk".to_vec()]);
}

#[test]
fn inbound_source_must_match_allowed_ips() {
    let mut p = established(130);
    // A's device routes by destination; the spoofed source is what B checks.
    let spoofed = ipv4_packet(
        Ipv4Addr::new(10, 0, 0, 99),
        Ipv4Addr::new(10, 0, 0, 2),
        b"spoof",
    );
    assert!(matches!(
        p.send_ip(A, &spoofed),
        Ok(Encapsulated::Send { .. })
    ));
    p.pump();
    assert_eq!(p.nodes[B].errors, vec![RecvError::ForbiddenSource]);
    assert_eq!(
        p.nodes[B].delivered.len(),
        1,
        "only the first, legitimate packet"
    );
    // And outbound: no route, not IP.
    let nowhere = ipv4_packet(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 9, 9, 9), b"?");
    assert_eq!(p.send_ip(A, &nowhere), Err(SendError::NoRoute));
    assert_eq!(p.send_ip(A, &[0x10; 30]), Err(SendError::NotIp));
    assert_eq!(p.send_ip(A, &[]), Err(SendError::NotIp));
    assert_eq!(p.nodes[A].device.stats().tx_no_route, 1);
}

#[test]
fn keepalive_after_receiving_and_persistent_keepalive() {
    let mut p = established(140);
    // B received data and sent nothing back: after KEEPALIVE_TIMEOUT it sends a keepalive.
    let before = p.nodes[A].keepalives;
    p.advance(Duration::from_secs(11));
    assert_eq!(p.nodes[A].keepalives, before + 1);
    // Persistent keepalive on A every 25 s, even when idle.
    let now = p.now;
    let peer = p.nodes[A].peer;
    p.nodes[A].device.set_persistent_keepalive(now, peer, 25);
    p.pump();
    let k0 = p.nodes[B].keepalives;
    p.advance(Duration::from_secs(100));
    let got = p.nodes[B].keepalives - k0;
    assert!((4..=5).contains(&got), "{got} keepalives in 100 s at 25 s");
}

#[test]
fn lossy_reordering_duplicating_link_still_delivers_intact_unique_packets() {
    let mut p = Pair::new(150);
    p.link = Impairments {
        loss: 20,
        duplicate: 10,
        reorder: true,
        ..Impairments::default()
    };
    let mut sent = Vec::new();
    for i in 0..300u32 {
        let from = (i % 2) as usize;
        let _ = p.send(from, &payload(i));
        sent.push((from, payload(i)));
        p.advance(Duration::from_millis(500));
    }
    for n in 0..2 {
        let got = payloads(&p, n);
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "no duplicate delivered to {n}");
        for g in &got {
            assert!(
                sent.iter().any(|(from, s)| *from != n && s == g),
                "corrupt packet at {n}"
            );
        }
        assert!(got.len() > 60, "node {n} got only {}", got.len());
    }
    assert!(p.count_events(A, |e| matches!(e, Event::HandshakeCompleted { .. })) >= 1);
}

#[test]
fn garbage_datagrams_are_counted_never_fatal() {
    let mut p = established(160);
    let mut x = 0x1234_5678_u64;
    for len in 0..400usize {
        let mut g = vec![0u8; len];
        for b in &mut g {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        if let Some(first) = g.first_mut() {
            *first = (len % 5) as u8; // hit every message type and a bad one
        }
        assert!(deliver_raw(&mut p, B, &g).is_err());
    }
    assert_eq!(p.nodes[B].device.stats().total_dropped(), 400);
    // The session is unharmed.
    p.send(A, b"still fine").expect("send");
    p.pump();
    assert_eq!(
        payloads(&p, B).last().expect("delivered"),
        &b"still fine".to_vec()
    );
}

#[test]
fn staged_queue_is_bounded() {
    let mut p = Pair::new(170);
    p.link.loss = 100;
    for i in 0..(crate::MAX_STAGED_PACKETS as u32 + 50) {
        assert_eq!(p.send(A, &payload(i)), Ok(Encapsulated::Queued));
    }
    assert_eq!(p.nodes[A].device.stats().staged_dropped, 50);
    p.pump(); // the first initiation is lost
    p.link.loss = 0;
    p.advance(Duration::from_secs(6));
    // The newest MAX_STAGED_PACKETS arrive, in order.
    let expected: Vec<Vec<u8>> = (50..crate::MAX_STAGED_PACKETS as u32 + 50)
        .map(payload)
        .collect();
    assert_same(&payloads(&p, B), &expected);
}

#[test]
fn changing_the_private_key_drops_sessions() {
    let mut p = established(180);
    let fresh = PrivateKey::from_bytes([77; 32]);
    p.nodes[A].device.set_private_key(Some(fresh));
    // B still knows A's old key, so A's new handshakes fail at B.
    p.send(A, b"x").expect("send");
    p.pump();
    assert_eq!(p.nodes[B].errors, vec![RecvError::UnknownPeer]);
    // Our own public key cannot be a peer.
    let own = p.nodes[A].device.public_key().expect("key");
    assert_eq!(p.nodes[A].device.add_peer(own), None);
    assert!(REJECT_AFTER_TIME > REKEY_AFTER_TIME);
}

#[test]
fn split_data_path_out_of_order_finish_races_and_rotation() {
    use crate::{Incoming, Prepared};
    let mut p = established(190);
    let now = p.now;
    let from = p.nodes[A].addr;
    // Two packets prepared under the "lock", sealed later in reverse order.
    let ip1 = ipv4_packet(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        b"one",
    );
    let ip2 = ipv4_packet(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        b"two",
    );
    let jobs: Vec<_> = [&ip1, &ip2]
        .iter()
        .map(|ip| match p.nodes[A].device.prepare_send(now, ip) {
            Ok(Prepared::Seal(job)) => job,
            other => panic!("{other:?}"),
        })
        .collect();
    let mut sealed = Vec::new();
    for (job, ip) in jobs.iter().zip([&ip1, &ip2]).rev() {
        let mut buf = vec![0u8; 256];
        buf[crate::DATA_HEADER_LEN..crate::DATA_HEADER_LEN + ip.len()].copy_from_slice(ip);
        let n = job.seal(&mut buf, ip.len()).expect("seal");
        buf.truncate(n);
        sealed.push(buf);
    }
    sealed.reverse(); // sealed[i] carries packet i again
                      // The same datagram prepared twice before either finishes: one wins.
    let b = &mut p.nodes[B].device;
    let mut d1 = sealed[0].clone();
    let mut d2 = sealed[0].clone();
    let Ok(Incoming::Open(j1)) = b.prepare_datagram(now, from, &d1) else {
        panic!("prepare 1")
    };
    let Ok(Incoming::Open(j2)) = b.prepare_datagram(now, from, &d2) else {
        panic!("prepare 2")
    };
    let o1 = j1.open(&mut d1);
    let o2 = j2.open(&mut d2);
    assert!(matches!(
        b.finish_datagram(now, from, &j1, &d1, o1),
        Ok(Received::Packet { .. })
    ));
    assert_eq!(
        b.finish_datagram(now, from, &j2, &d2, o2),
        Err(RecvError::Replayed)
    );
    // A tampered one fails in `open` and is counted by `finish`.
    let mut bad = sealed[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let Ok(Incoming::Open(j3)) = b.prepare_datagram(now, from, &bad) else {
        panic!("prepare 3")
    };
    let o3 = j3.open(&mut bad);
    assert_eq!(
        b.finish_datagram(now, from, &j3, &bad, o3),
        Err(RecvError::Decrypt)
    );
    assert_eq!(b.stats().rx_decrypt_failed, 1);
    // The other packet, untouched, still arrives.
    let mut good = sealed[1].clone();
    let Ok(Incoming::Open(j4)) = b.prepare_datagram(now, from, &good) else {
        panic!("prepare 4")
    };
    let o4 = j4.open(&mut good);
    let Ok(Received::Packet { range, .. }) = b.finish_datagram(now, from, &j4, &good, o4) else {
        panic!("finish 4")
    };
    assert_eq!(&good[range], &ip2[..]);
    // A job whose session was wiped meanwhile is dropped, not misapplied.
    let mut late = sealed[0].clone();
    let ip3 = ipv4_packet(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
        b"three",
    );
    let Ok(Prepared::Seal(job)) = p.nodes[A].device.prepare_send(now, &ip3) else {
        panic!("prepare send")
    };
    late.resize(256, 0);
    late[crate::DATA_HEADER_LEN..crate::DATA_HEADER_LEN + ip3.len()].copy_from_slice(&ip3);
    let n = job.seal(&mut late, ip3.len()).expect("seal");
    late.truncate(n);
    let b = &mut p.nodes[B].device;
    let Ok(Incoming::Open(j5)) = b.prepare_datagram(now, from, &late) else {
        panic!("prepare 5")
    };
    b.set_private_key(Some(PrivateKey::from_bytes([9; 32]))); // wipes every session
    let o5 = j5.open(&mut late);
    assert_eq!(
        b.finish_datagram(now, from, &j5, &late, o5),
        Err(RecvError::UnknownIndex)
    );
}

/// The last handshake initiation A sent (its retries included).
fn last_initiation(p: &Pair) -> Vec<u8> {
    p.nodes[A]
        .sent
        .iter()
        .rev()
        .find(|t| kind(t) == TransmitKind::Initiation)
        .expect("an initiation")
        .contents
        .clone()
}

#[test]
fn under_load_one_address_gets_twenty_handshake_messages_a_second() {
    // A gets its cookie, then its MAC2-carrying initiation is replayed
    // from its own address as fast as a flood would.
    let mut p = Pair::new(91);
    p.nodes[B].device.set_under_load(true);
    p.link.loss = 100;
    assert_eq!(p.send(A, b"x"), Ok(Encapsulated::Queued));
    let first = p.nodes[A].device.poll_transmit().expect("initiation");
    assert_eq!(
        deliver_raw(&mut p, B, &first.contents),
        Err(RecvError::CookieSent)
    );
    let cookie = p.nodes[B].device.poll_transmit().expect("cookie reply");
    deliver_raw(&mut p, A, &cookie.contents).expect("cookie taken");
    p.advance(Duration::from_secs(6)); // the retry, now with MAC2
    let retry = last_initiation(&p);
    let limited = |p: &Pair| p.nodes[B].device.stats().rx_rate_limited;
    let before = limited(&p);
    let mut passed = 0;
    for _ in 0..100 {
        if !matches!(deliver_raw(&mut p, B, &retry), Err(RecvError::RateLimited)) {
            passed += 1;
        }
    }
    assert_eq!(passed, 5, "the burst");
    assert_eq!(limited(&p) - before, 95);
    // A second later, twenty more are let through to the handshake.
    p.advance(Duration::from_secs(1));
    let passed = (0..100)
        .filter(|_| !matches!(deliver_raw(&mut p, B, &retry), Err(RecvError::RateLimited)))
        .count();
    assert_eq!(passed, 5, "refilled up to the burst, not beyond");
}

#[test]
fn an_initiation_is_read_outside_the_device_and_finished_in_it() {
    let mut p = Pair::new(92);
    p.link.loss = 100;
    assert_eq!(p.send(A, b"x"), Ok(Encapsulated::Queued));
    let init = p.nodes[A].device.poll_transmit().expect("initiation");
    let from = p.nodes[A].addr;
    let now = p.now;
    let b = &mut p.nodes[B].device;
    // The device hands the DH work out instead of doing it.
    let Ok(crate::Incoming::Initiation(job)) = b.prepare_datagram(now, from, &init.contents) else {
        panic!("not handed out");
    };
    let consumed = job.consume();
    assert_eq!(
        b.finish_initiation(now, from, consumed),
        Ok(Received::Handshake)
    );
    let response = b.poll_transmit().expect("response");
    assert_eq!(kind(&response), TransmitKind::Response);
    // Read under one key, finished under another: dropped.
    p.advance(Duration::from_secs(6));
    let init2 = last_initiation(&p);
    let now = p.now;
    let b = &mut p.nodes[B].device;
    let Ok(crate::Incoming::Initiation(job)) = b.prepare_datagram(now, from, &init2) else {
        panic!("not handed out");
    };
    let consumed = job.consume();
    b.set_private_key(Some(PrivateKey::from_bytes([0x77; 32])));
    assert_eq!(
        b.finish_initiation(now, from, consumed),
        Err(RecvError::NoPrivateKey)
    );
}
