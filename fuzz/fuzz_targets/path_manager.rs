//! The path machine (proto-path) fed arbitrary datagrams from arbitrary
//! addresses, genuine probes (sealed with a peer's key, fuzzed contents),
//! map changes and time: no panic, bounded work per step, and no direct
//! path from a datagram nobody but the peer could have sealed.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto_path::wire::{Message, MAX_PROBE_LEN, PROBE_LEN};
use proto_path::{crypto, PathManager};
use libfuzzer_sys::fuzz_target;
use zeroize::Zeroizing;

fn public(k: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*k)).to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let ours = [1u8; 32];
    let mut m = PathManager::new(Zeroizing::new(ours), public(&ours), [9; 32]);
    let peers: Vec<[u8; 32]> = (2u8..5).map(|i| [i; 32]).collect();
    let relay: SocketAddr = "127.0.0.1:5000".parse().expect("relay");
    for p in &peers {
        m.set_peer(
            now,
            public(p),
            vec!["192.0.2.1:41641".parse().expect("ep")],
            Some(relay),
        );
    }
    // Chunks: [op, peer, a, b, length, bytes...].
    let mut rest = data;
    while let [op, peer, a, b, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        let secret = peers[usize::from(*peer) % peers.len()];
        let from = SocketAddr::from(([192, 0, 2, *a], u16::from(*b) + 1));
        match op % 5 {
            // Anything at all, as if on the WireGuard socket.
            0 => m.handle_input(now, from, bytes),
            // A genuine probe of the peer's, its kind and id fuzzed.
            1 => {
                let shared =
                    crypto::shared_key(&Zeroizing::new(secret), &public(&ours)).expect("shared");
                let tx = u64::from_le_bytes(
                    bytes
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or_default(),
                );
                // A call names endpoints from the rest of the bytes.
                let candidates = bytes
                    .get(8..)
                    .unwrap_or_default()
                    .chunks_exact(3)
                    .map(|c| SocketAddr::from(([192, 0, 2, c[0]], u16::from_be_bytes([c[1], c[2]]))))
                    .collect();
                let message = match a % 3 {
                    0 => Message::Ping { tx },
                    1 => Message::Pong { tx },
                    _ => Message::Call { tx, candidates },
                };
                let sealed = crypto::seal(&shared, &public(&secret), [*b; 12], &message);
                m.handle_input(now, from, &sealed);
            }
            // The map changes the peer's endpoints.
            2 => {
                let eps: Vec<SocketAddr> = bytes
                    .chunks_exact(3)
                    .take(16)
                    .map(|c| {
                        SocketAddr::from(([192, 0, 2, c[0]], u16::from_be_bytes([c[1], c[2]])))
                    })
                    .collect();
                m.set_peer(now, public(&secret), eps, (a & 1 == 0).then_some(relay));
            }
            3 if a & 1 == 0 => m.remove_peer(&public(&secret)),
            // Our own endpoints change.
            3 => m.set_local_candidates(
                now,
                bytes
                    .chunks_exact(2)
                    .map(|c| SocketAddr::from(([198, 51, 100, c[0]], u16::from(c[1]))))
                    .collect(),
            ),
            _ => {
                now += Duration::from_millis(u64::from(*a) * 100);
                m.handle_timeout(now);
            }
        }
        let mut actions = 0;
        while let Some(t) = m.poll_transmit() {
            actions += 1;
            assert!((PROBE_LEN..=MAX_PROBE_LEN).contains(&t.contents.len()));
        }
        while m.poll_event().is_some() {
            actions += 1;
        }
        // Every candidate of every peer (map, call, peer-reflexive), a
        // call and a pong each, and the endpoint changes.
        assert!(actions <= 3 * (16 + 16 + 4 + 2) + 8, "{actions} actions in one step");
    }
});
