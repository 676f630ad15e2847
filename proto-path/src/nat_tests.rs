//! NAT traversal in fake time: two nodes behind NATs of each kind, the
//! relay carrying their calls, bursts, peer-reflexive candidates, and
//! the bounds that hold when nothing works or a replay tries to make it
//! work harder.
#![allow(clippy::disallowed_methods)] // Instant::now() is only the fake clock's origin

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::crypto;
use crate::harness::{public, NatKind, Pair, A_NAT_IP, A_SECRET, B_NAT_IP, B_SECRET, RELAY};
use crate::paths::*;
use crate::wire::Message;

fn a_key() -> [u8; 32] {
    public(&A_SECRET)
}

fn b_key() -> [u8; 32] {
    public(&B_SECRET)
}

/// Runs the pair until both sides are direct or `limit` passes; how long
/// it took.
fn until_direct(pair: &mut Pair, start: Instant, limit: Duration) -> Option<Duration> {
    let mut now = start;
    while now - start <= limit {
        pair.step(now);
        let a = matches!(pair.a.path(&b_key()), Some(Path::Direct(_)));
        let b = matches!(pair.b.path(&a_key()), Some(Path::Direct(_)));
        if a && b {
            return Some(now - start);
        }
        now = pair.next_due(now).min(now + Duration::from_millis(50));
        if now == start {
            now += Duration::from_millis(1);
        }
    }
    None
}

#[test]
fn port_restricted_nats_on_both_sides_go_direct_within_the_first_burst() {
    let now = Instant::now();
    let mut pair = Pair::behind(now, NatKind::PortRestricted, NatKind::PortRestricted);
    assert_eq!(
        pair.first,
        (Some(RELAY), Some(RELAY)),
        "traffic starts on the relay"
    );
    let took = until_direct(&mut pair, now, Duration::from_secs(30)).expect("never direct");
    assert!(took < Duration::from_secs(1), "direct after {took:?}");
    let winner = pair.a.winner(&b_key()).expect("a's winner");
    assert_eq!(winner.addr, SocketAddr::new(B_NAT_IP.into(), 41641));
    assert_eq!(
        winner.source,
        Source::Map,
        "b's reflexive address from the map"
    );
    assert!(pair.a.counters().calls_sent >= 1, "a called b");
}

#[test]
fn a_symmetric_nat_facing_a_cone_goes_direct_through_the_peer_reflexive_address() {
    for (nat_a, nat_b) in [
        (NatKind::Symmetric, NatKind::FullCone),
        (NatKind::Symmetric, NatKind::Open),
        (NatKind::AddressRestricted, NatKind::Symmetric),
    ] {
        let now = Instant::now();
        let mut pair = Pair::behind(now, nat_a, nat_b);
        let took = until_direct(&mut pair, now, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{nat_a:?}+{nat_b:?}: never direct"));
        assert!(
            took < Duration::from_secs(2),
            "{nat_a:?}+{nat_b:?}: {took:?}"
        );
        // The cone side reaches the symmetric side only where its pings
        // came from: an address no map and no STUN query named.
        let (cone_side, sym_ip) = if nat_a == NatKind::Symmetric {
            (pair.b.winner(&a_key()), A_NAT_IP)
        } else {
            (pair.a.winner(&b_key()), B_NAT_IP)
        };
        let w = cone_side.expect("winner");
        assert_eq!(w.source, Source::Seen, "{nat_a:?}+{nat_b:?}: {w:?}");
        assert_eq!(w.addr.ip(), std::net::IpAddr::V4(sym_ip));
    }
}

#[test]
fn a_random_port_symmetric_nat_facing_a_port_restricted_one_stays_on_the_relay() {
    // As in the lab: the symmetric side's probes come from a port the
    // other side never sent to, and the other way round; guessing ports
    // cannot find a random one, and its probes stay within their budget.
    let now = Instant::now();
    let mut pair = Pair::behind(now, NatKind::SymmetricRandom, NatKind::PortRestricted);
    assert!(until_direct(&mut pair, now, Duration::from_secs(60)).is_none());
    assert_eq!(pair.a.path(&b_key()), Some(Path::Relay));
    assert_eq!(pair.b.path(&a_key()), Some(Path::Relay));
    let c = pair.b.counters();
    assert_eq!(c.guesses_answered, 0);
    let bursts = c.calls_sent + c.calls_received;
    assert!(
        c.guesses_sent <= u64::from(PORT_GUESSES) * bursts,
        "{} guesses in {bursts} bursts",
        c.guesses_sent
    );
}

#[test]
fn a_symmetric_nat_that_hands_out_ports_in_order_is_met_at_a_guessed_port() {
    // The symmetric side's mapping toward B is one of the next ports
    // after those its STUN servers saw: B's guesses open B's NAT for it
    // and reach it.
    let now = Instant::now();
    let mut pair = Pair::behind(now, NatKind::Symmetric, NatKind::PortRestricted);
    let took = until_direct(&mut pair, now, Duration::from_secs(10)).expect("direct");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let winner = pair.b.winner(&a_key()).expect("a winner");
    assert_eq!(winner.source, Source::Guessed, "{winner:?}");
    let c = pair.b.counters();
    assert_eq!(c.guesses_answered, 1);
    assert!(c.guesses_sent <= u64::from(PORT_GUESSES) * 2, "{c:?}");
}

#[test]
fn symmetric_nats_on_both_sides_stay_on_the_relay_and_call_ever_less_often() {
    let start = Instant::now();
    let mut pair = Pair::behind(start, NatKind::SymmetricRandom, NatKind::SymmetricRandom);
    assert!(until_direct(&mut pair, start, Duration::from_secs(600)).is_none());
    assert!(pair.a_endpoints.is_empty(), "never left the relay");
    // Ten minutes: calls at 5, 10, 20, 40, 80 s, then every 2 min, from
    // each side, plus a call back now and then.
    let calls = pair.a.counters().calls_sent;
    assert!((6..=20).contains(&calls), "{calls} calls in ten minutes");
    // Each call bursts for 3 s at 5 probes a second over two endpoints,
    // and the backoff holds the rest down: far below a steady 2 s rate.
    let sent = pair.sent.0;
    assert!(sent < 1500, "{sent} probes in ten minutes");
}

#[test]
fn direct_again_after_both_nats_forget_their_mappings() {
    let mut now = Instant::now();
    let mut pair = Pair::behind(now, NatKind::PortRestricted, NatKind::PortRestricted);
    until_direct(&mut pair, now, Duration::from_secs(5)).expect("direct");
    // conntrack -F on both routers.
    pair.nat_a.forget();
    pair.nat_b.forget();
    let cut = now;
    let mut relayed = false;
    while now - cut < Duration::from_secs(30) {
        now += Duration::from_millis(100);
        pair.step(now);
        relayed |= pair.a_endpoints.last() == Some(&RELAY);
    }
    // The path probes go on every 2 s from both sides: the first one
    // after the flush opens the NAT the other's then passes.
    assert!(matches!(pair.a.path(&b_key()), Some(Path::Direct(_))));
    assert!(matches!(pair.b.path(&a_key()), Some(Path::Direct(_))));
    assert!(!relayed, "the probes held the path: {:?}", pair.a_endpoints);
}

#[test]
fn a_replayed_call_starts_no_second_burst_and_pings_from_many_places_are_bounded() {
    let now = Instant::now();
    let mut pair = Pair::behind(now, NatKind::Symmetric, NatKind::Symmetric);
    // A never calls (it names no endpoints): its bursts are B's calls'.
    pair.a.set_local_candidates(now, vec![]);
    // B's genuine call to A, captured from the relay.
    pair.b.handle_timeout(now);
    let call = std::iter::from_fn(|| pair.b.poll_transmit())
        .find(|t| t.destination == RELAY)
        .expect("b calls a")
        .contents;
    let mut probes_after_call = |at: Instant| {
        pair.a.handle_input(at, RELAY, &call);
        pair.a.handle_timeout(at);
        let n = std::iter::from_fn(|| pair.a.poll_transmit()).count();
        // Let whatever burst began run out.
        for ms in (200..=BURST_DURATION.as_millis() as u64).step_by(200) {
            pair.a.handle_timeout(at + Duration::from_millis(ms));
            while pair.a.poll_transmit().is_some() {}
        }
        n
    };
    assert!(probes_after_call(now) > 0, "the first call starts a burst");
    let replay = now + BURST_DURATION + Duration::from_millis(500);
    assert_eq!(probes_after_call(replay), 0, "a replay within the cooldown");
    assert!(
        probes_after_call(now + BURST_COOLDOWN * 2) > 0,
        "a call after it"
    );
    let later = now + BURST_COOLDOWN * 3;

    // A genuine ping of B's replayed from a hundred addresses: at most
    // MAX_SEEN peer-reflexive candidates.
    let others = pair
        .a
        .candidates(&b_key())
        .iter()
        .filter(|(_, s)| *s != Source::Seen)
        .count();
    let ba = crypto::shared_key(&Zeroizing::new(B_SECRET), &a_key()).unwrap();
    let ping = crypto::seal(&ba, &b_key(), [3; 12], &Message::Ping { tx: 1 });
    for i in 0..100u16 {
        let from = SocketAddr::from(([192, 0, 2, 7], 10_000 + i));
        pair.a.handle_input(later, from, &ping);
    }
    let seen = pair
        .a
        .candidates(&b_key())
        .iter()
        .filter(|(_, s)| *s == Source::Seen)
        .count();
    assert_eq!(seen, MAX_SEEN);
    assert!(pair.a.candidates(&b_key()).len() <= others + MAX_SEEN);
    assert_eq!(pair.a.counters().seen_learnt, 100);
    assert!(pair.a.poll_event().is_none(), "pings alone move no traffic");
}
