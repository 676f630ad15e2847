//! The path machine in fake time: direct when probes answer, back to the
//! relay when they stop, backoff for endpoints that never answer, and
//! nothing moved by strangers or forgeries.
#![allow(clippy::disallowed_methods)] // Instant::now() is only the fake clock's origin

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::crypto;
use crate::harness::{public, Pair, A_ADDR, B_ADDR, RELAY};
use crate::paths::*;
use crate::wire::Message;

#[test]
fn traffic_moves_direct_when_probes_answer_and_back_to_the_relay_when_they_stop() {
    let mut now = Instant::now();
    let mut pair = Pair::new(now);
    let relay = RELAY;
    pair.link_up = false;
    for _ in 0..5 {
        pair.step(now);
        now += PROBE_INTERVAL;
    }
    assert!(
        pair.a_endpoints.is_empty(),
        "no direct path proven: stays on the relay"
    );
    assert_eq!(pair.a.path(&public(&[2; 32])), Some(Path::Relay));

    // The link comes back: the next probe (backed off by now) finds it.
    pair.link_up = true;
    let back = now;
    while pair.a_endpoints.is_empty() {
        now = pair.next_due(now);
        assert!(now - back <= MAX_PROBE_INTERVAL, "not found again");
        pair.step(now);
    }
    assert_eq!(pair.a_endpoints, [B_ADDR]);
    assert_eq!(pair.b_endpoints, [A_ADDR]);

    // The direct path dies: after the timeout, back to the relay.
    pair.link_up = false;
    let cut = now;
    while now < cut + DIRECT_TIMEOUT + PROBE_INTERVAL {
        now += PROBE_INTERVAL;
        pair.step(now);
    }
    assert_eq!(pair.a_endpoints.last(), Some(&relay));
    // And direct again when it comes back, sooner: it answered before.
    pair.link_up = true;
    let back = now;
    while pair.a_endpoints.last() != Some(&B_ADDR) {
        now = pair.next_due(now);
        assert!(now - back <= MAX_RETRY_INTERVAL, "not found again");
        pair.step(now);
    }
}

#[test]
fn an_endpoint_that_never_answers_is_probed_ever_less_often() {
    // A peer that advertises someone else's addresses: nothing there
    // answers. Ten minutes of probing each of them:
    let mut now = Instant::now();
    let start = now;
    let mut m = PathManager::new(Zeroizing::new([1; 32]), public(&[1; 32]), [4; 32]);
    let victims: Vec<SocketAddr> = (1..=3)
        .map(|i| format!("198.51.100.{i}:443").parse().unwrap())
        .collect();
    m.set_peer(now, public(&[2; 32]), victims.clone(), None);
    let mut sent = std::collections::HashMap::<SocketAddr, usize>::new();
    while now - start < Duration::from_secs(600) {
        m.handle_timeout(now);
        while let Some(t) = m.poll_transmit() {
            *sent.entry(t.destination).or_default() += 1;
        }
        now = m.poll_timeout().unwrap().max(now);
    }
    for v in &victims {
        let n = sent[v];
        // 300 each at a steady 2 s; backed off: the first few, then one
        // a minute.
        assert!((10..=20).contains(&n), "{v}: {n} probes");
    }
    // Whatever was due at the end goes out; then the peer shows up at
    // one of them: its ping ends that backoff.
    m.handle_timeout(now);
    while m.poll_transmit().is_some() {}
    let theirs = crypto::shared_key(&Zeroizing::new([2; 32]), &public(&[1; 32])).unwrap();
    let ping = crypto::seal(
        &theirs,
        &public(&[2; 32]),
        [7; 12],
        &Message::Ping { tx: 99 },
    );
    m.handle_input(now, victims[0], &ping);
    let _ = m.poll_transmit(); // our pong
    m.handle_timeout(now);
    let probed: Vec<SocketAddr> = std::iter::from_fn(|| m.poll_transmit())
        .map(|t| t.destination)
        .collect();
    assert!(m.poll_event().is_none(), "a ping alone moves no traffic");
    assert_eq!(probed, [victims[0]], "probed again at once, the others not");
}

#[test]
fn strangers_forged_and_unsolicited_probes_change_nothing() {
    let now = Instant::now();
    let mut pair = Pair::new(now);
    let stranger_key = Zeroizing::new([9u8; 32]);
    let shared = crypto::shared_key(&stranger_key, &public(&[1; 32])).unwrap();
    let ping = crypto::seal(
        &shared,
        &public(&[9; 32]),
        [0; 12],
        &Message::Ping { tx: 1 },
    );
    pair.a
        .handle_input(now, "10.9.9.9:1".parse().unwrap(), &ping);
    assert!(pair.a.poll_transmit().is_none(), "strangers get no answer");
    // A pong nobody asked for, from B's real key but an unprobed address.
    let ab = crypto::shared_key(&Zeroizing::new([2u8; 32]), &public(&[1; 32])).unwrap();
    let pong = crypto::seal(
        &ab,
        &public(&[2; 32]),
        [0; 12],
        &Message::Pong { tx: 12345 },
    );
    pair.a
        .handle_input(now, "10.6.6.6:1".parse().unwrap(), &pong);
    assert!(pair.a.poll_transmit().is_none());
    assert!(pair.a.poll_event().is_none());
    assert_eq!(pair.a.path(&public(&[2; 32])), Some(Path::Relay));
}

#[test]
fn without_a_relay_the_first_endpoint_is_used_at_once() {
    let now = Instant::now();
    let mut m = PathManager::new(Zeroizing::new([1; 32]), public(&[1; 32]), [3; 32]);
    let e = m.set_peer(now, public(&[2; 32]), vec![B_ADDR], None);
    assert_eq!(e, Some(B_ADDR));
    assert!(matches!(m.path(&public(&[2; 32])), Some(Path::Unproven(_))));
}

#[test]
fn a_debug_ping_is_answered_through_the_relay_and_directly_and_only_direct_proves_a_path() {
    let mut now = Instant::now();
    let mut pair = Pair::new(now);
    let b = public(&[2; 32]);
    pair.link_up = false;
    pair.step(now);
    let pongs = |pair: &mut Pair| -> Vec<(SocketAddr, bool, Duration)> {
        let mut got: Vec<_> = std::mem::take(&mut pair.a_events)
            .into_iter()
            .filter_map(|e| match e {
                Event::DebugPong {
                    from,
                    via_relay,
                    rtt,
                    ..
                } => Some((from, via_relay, rtt)),
                _ => None,
            })
            .collect();
        got.sort();
        got
    };
    // No direct link: only the relay answers, and that proves nothing.
    assert_eq!(pair.a.debug_ping(now, &b), 2, "the candidate and the relay");
    now += Duration::from_millis(5);
    pair.step(now);
    assert_eq!(pongs(&mut pair), [(RELAY, true, Duration::from_millis(5))]);
    assert_eq!(pair.a.path(&b), Some(Path::Relay));
    assert_eq!(pair.a.counters().unsolicited_pongs, 0);
    // The link is up: both answer, and the direct answer is the path.
    pair.link_up = true;
    pair.a.debug_ping(now, &b);
    now += Duration::from_millis(3);
    pair.step(now);
    let mut want = vec![
        (RELAY, true, Duration::from_millis(3)),
        (B_ADDR, false, Duration::from_millis(3)),
    ];
    want.sort();
    assert_eq!(pongs(&mut pair), want);
    assert_eq!(pair.a.path(&b), Some(Path::Direct(B_ADDR)));
    // A key that is no peer gets nothing sent.
    assert_eq!(pair.a.debug_ping(now, &public(&[9; 32])), 0);
}
