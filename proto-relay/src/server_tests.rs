//! The forwarding core with fake time: routing, peer-gone, mesh presence
//! and forwarding (without loops), and every bound.

#![allow(clippy::disallowed_methods)] // Instant::now() is only the fake clock's origin

use std::time::{Duration, Instant};

use crate::frame::{Frame, Key};
use crate::server::{ConnId, Limits, RelayServer, Role, ServerError};

const A: Key = [0xa; 32];
const B: Key = [0xb; 32];
const C: Key = [0xc; 32];

fn send(dst: Key, packet: &[u8]) -> Vec<u8> {
    Frame::SendPacket { dst, packet }.to_vec().unwrap()
}

/// Everything queued for `id`, decoded into owned descriptions.
fn drain(s: &mut RelayServer, id: u64) -> Vec<String> {
    std::iter::from_fn(|| s.poll_send(ConnId(id)))
        .map(|b| match Frame::decode(&b).unwrap() {
            Frame::RecvPacket { src, packet } => {
                format!("from {:x}: {}", src[0], String::from_utf8_lossy(packet))
            }
            Frame::PeerGone { key, reason } => format!("gone {:x} {reason:?}", key[0]),
            Frame::PeerPresent(k) => format!("present {:x}", k[0]),
            Frame::PeerAbsent(k) => format!("absent {:x}", k[0]),
            Frame::ForwardPacket { src, dst, packet } => {
                format!(
                    "forward {:x}->{:x}: {}",
                    src[0],
                    dst[0],
                    String::from_utf8_lossy(packet)
                )
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn packets_go_to_the_destination_key_and_its_departure_is_announced() {
    let t = Instant::now();
    let mut s = RelayServer::new(Limits::default());
    s.connect(t, ConnId(1), A, Role::Client);
    s.connect(t, ConnId(2), B, Role::Client);
    s.handle_frame(t, ConnId(1), &send(B, b"hello")).unwrap();
    assert_eq!(s.poll_wake(), Some(ConnId(2)));
    assert_eq!(drain(&mut s, 2), ["from a: hello"]);
    assert!(drain(&mut s, 1).is_empty());
    // To a key nobody has: dropped, counted, and the sender told.
    s.handle_frame(t, ConnId(1), &send(C, b"x")).unwrap();
    assert_eq!(drain(&mut s, 1), ["gone c NotHere"]);
    assert_eq!(s.stats().drops.unknown_destination, 1);
    // B leaves: A, who sent to it, hears of it.
    s.disconnect(ConnId(2));
    assert_eq!(drain(&mut s, 1), ["gone b Disconnected"]);
    assert_eq!(s.clients(), 1);
    assert_eq!(s.stats().packets_forwarded, 1);
}

#[test]
fn ping_keepalive_and_wrong_frames() {
    let t = Instant::now();
    let mut s = RelayServer::new(Limits::default());
    s.connect(t, ConnId(1), A, Role::Client);
    s.handle_frame(t, ConnId(1), &Frame::Ping([7; 8]).to_vec().unwrap())
        .unwrap();
    s.handle_frame(t, ConnId(1), &Frame::KeepAlive.to_vec().unwrap())
        .unwrap();
    assert_eq!(drain(&mut s, 1), [format!("{:?}", Frame::Pong([7; 8]))]);
    // A client may not speak for the mesh, nor send garbage.
    let forged = Frame::ForwardPacket {
        src: B,
        dst: A,
        packet: b"x",
    }
    .to_vec()
    .unwrap();
    assert_eq!(
        s.handle_frame(t, ConnId(1), &forged),
        Err(ServerError::WrongRole)
    );
    assert!(s.handle_frame(t, ConnId(1), &[0xee, 1, 2]).is_err());
    assert_eq!(
        s.handle_frame(t, ConnId(9), &[0x03]),
        Err(ServerError::UnknownConn)
    );
    assert_eq!(s.stats().drops.protocol_violation, 2);
}

#[test]
fn a_reconnecting_key_takes_over_and_the_old_connection_is_closed() {
    let t = Instant::now();
    let mut s = RelayServer::new(Limits::default());
    s.connect(t, ConnId(1), A, Role::Client);
    s.connect(t, ConnId(2), B, Role::Client);
    assert_eq!(s.connect(t, ConnId(3), A, Role::Client), Some(ConnId(1)));
    s.handle_frame(t, ConnId(2), &send(A, b"new")).unwrap();
    assert_eq!(drain(&mut s, 3), ["from b: new"]);
    s.disconnect(ConnId(1)); // the IO layer closing the replaced one
    assert_eq!(
        s.clients(),
        2,
        "the replaced connection does not take the key away"
    );
}

#[test]
fn a_slow_reader_loses_only_its_own_oldest_packets() {
    let t = Instant::now();
    let limits = Limits {
        queue_frames: 4,
        ..Limits::default()
    };
    let mut s = RelayServer::new(limits);
    s.connect(t, ConnId(1), A, Role::Client);
    s.connect(t, ConnId(2), B, Role::Client);
    s.connect(t, ConnId(3), C, Role::Client);
    for i in 0..10 {
        s.handle_frame(t, ConnId(1), &send(B, format!("{i}").as_bytes()))
            .unwrap();
    }
    s.handle_frame(t, ConnId(1), &send(C, b"for c")).unwrap();
    assert_eq!(
        drain(&mut s, 2),
        ["from a: 6", "from a: 7", "from a: 8", "from a: 9"]
    );
    assert_eq!(drain(&mut s, 3), ["from a: for c"], "C is not affected");
    assert_eq!(s.stats().drops.queue_full, 6);
}

#[test]
fn a_flooding_client_is_rate_limited_and_recovers_with_time() {
    let mut t = Instant::now();
    let limits = Limits {
        rate_bytes_per_sec: 1000,
        burst_bytes: 2000,
        ..Limits::default()
    };
    let mut s = RelayServer::new(limits);
    s.connect(t, ConnId(1), A, Role::Client);
    s.connect(t, ConnId(2), B, Role::Client);
    s.connect(t, ConnId(3), C, Role::Client);
    let kb = [0u8; 1000];
    for _ in 0..5 {
        s.handle_frame(t, ConnId(1), &send(B, &kb)).unwrap();
    }
    assert_eq!(
        s.stats().drops.rate_limited,
        3,
        "burst of 2 KB, then limited"
    );
    // Another client's traffic is untouched.
    s.handle_frame(t, ConnId(3), &send(B, &kb)).unwrap();
    assert_eq!(s.stats().packets_forwarded, 3);
    t += Duration::from_secs(1);
    s.handle_frame(t, ConnId(1), &send(B, &kb)).unwrap();
    assert_eq!(s.stats().packets_forwarded, 4, "refilled after a second");
}

#[test]
fn meshed_relays_share_presence_and_forward_exactly_once() {
    let t = Instant::now();
    // Two relays, each with one client, linked both ways (conn 10 on each
    // side is the link to the other relay).
    let mut r1 = RelayServer::new(Limits::default());
    let mut r2 = RelayServer::new(Limits::default());
    r1.connect(t, ConnId(1), A, Role::Client);
    r2.connect(t, ConnId(1), B, Role::Client);
    r1.connect(t, ConnId(10), [0xee; 32], Role::Mesh);
    r2.connect(t, ConnId(10), [0xef; 32], Role::Mesh);
    // Move the presence announcements across the links.
    let pump = |from: &mut RelayServer, to: &mut RelayServer| {
        while let Some(f) = from.poll_send(ConnId(10)) {
            to.handle_frame(t, ConnId(10), &f).unwrap();
        }
    };
    pump(&mut r1, &mut r2);
    pump(&mut r2, &mut r1);
    assert_eq!((r1.remote_keys(), r2.remote_keys()), (1, 1));

    r1.handle_frame(t, ConnId(1), &send(B, b"across")).unwrap();
    assert_eq!(drain(&mut r1, 10), ["forward a->b: across"]);
    let fwd = Frame::ForwardPacket {
        src: A,
        dst: B,
        packet: b"across",
    }
    .to_vec()
    .unwrap();
    r2.handle_frame(t, ConnId(10), &fwd).unwrap();
    assert_eq!(drain(&mut r2, 1), ["from a: across"]);
    // A forwarded packet for a key that is not local is dropped, never sent
    // back over the mesh (no loops, even if presence is stale).
    let stray = Frame::ForwardPacket {
        src: B,
        dst: A,
        packet: b"loop?",
    }
    .to_vec()
    .unwrap();
    r2.handle_frame(t, ConnId(10), &stray).unwrap();
    assert!(drain(&mut r2, 10).is_empty());
    assert_eq!(r2.stats().drops.unknown_destination, 1);

    // B leaves relay 2: relay 1 learns it, and A (who sent to B) is told.
    r2.disconnect(ConnId(1));
    assert_eq!(drain(&mut r2, 10), ["absent b"]);
    r1.handle_frame(t, ConnId(10), &Frame::PeerAbsent(B).to_vec().unwrap())
        .unwrap();
    assert_eq!(drain(&mut r1, 1), ["gone b Disconnected"]);
    assert_eq!(r1.remote_keys(), 0);
    // A mesh link that drops takes its keys with it.
    r1.handle_frame(t, ConnId(10), &Frame::PeerPresent(C).to_vec().unwrap())
        .unwrap();
    r1.disconnect(ConnId(10));
    assert_eq!(r1.remote_keys(), 0);
    // A mesh peer may not send as a client.
    assert_eq!(
        r2.handle_frame(t, ConnId(10), &send(A, b"x")),
        Err(ServerError::WrongRole)
    );
}

#[test]
fn the_remote_key_table_is_bounded() {
    let t = Instant::now();
    let mut s = RelayServer::new(Limits {
        remote_keys: 3,
        ..Limits::default()
    });
    s.connect(t, ConnId(10), [0xee; 32], Role::Mesh);
    for i in 0..10u8 {
        s.handle_frame(
            t,
            ConnId(10),
            &Frame::PeerPresent([i; 32]).to_vec().unwrap(),
        )
        .unwrap();
    }
    assert_eq!(s.remote_keys(), 3);
    assert_eq!(s.stats().drops.remote_table_full, 7);
}

#[test]
fn slow_readers_together_cannot_queue_more_than_the_budget() {
    let t = Instant::now();
    let limits = Limits {
        queue_budget_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut s = RelayServer::new(limits);
    s.connect(t, ConnId(0), A, Role::Client);
    // Forty readers that never read, each under its own 512 KiB bound.
    for i in 1..=40u64 {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&i.to_be_bytes());
        s.connect(t, ConnId(i), key, Role::Client);
        for _ in 0..10 {
            s.handle_frame(t, ConnId(0), &send(key, &[0u8; 1000]))
                .unwrap();
        }
    }
    assert!(s.queued_bytes() <= 64 << 10, "{}", s.queued_bytes());
    assert!(s.stats().drops.memory_budget > 0);
    // What is sent and who goes give their bytes back.
    let before = s.queued_bytes();
    assert!(!drain(&mut s, 1).is_empty());
    s.disconnect(ConnId(2));
    assert!(s.queued_bytes() < before);
    for i in 3..=40 {
        s.disconnect(ConnId(i));
    }
    s.disconnect(ConnId(1));
    assert!(s.queued_bytes() > 0, "the sender was told who went");
    s.disconnect(ConnId(0));
    assert_eq!(s.queued_bytes(), 0, "nothing leaked in the accounting");
}
