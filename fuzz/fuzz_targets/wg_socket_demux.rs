//! The WireGuard socket's demultiplexing as the agent does it: arbitrary
//! datagrams from arbitrary senders are classified (each kind exclusive of
//! the others) and handed to the STUN side (with queries in flight) and
//! the path machine. Nothing panics; junk and answers to transactions we
//! never sent change no reflexive address, and the path machine neither
//! moves a path nor queues anything for a sender it does not know.
#![no_main]
use std::net::SocketAddr;

use agent::reflexive::Reflexive;
use agent::socket_demux::{classify, SocketDatagram};
use libfuzzer_sys::fuzz_target;
use proto_path::PathManager;
use zeroize::Zeroizing;

fuzz_target!(|data: &[u8]| {
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let (port, datagram) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (0, data),
    };
    let from = SocketAddr::from(([192, 168, 1, 1], port));
    let kind = classify(from, datagram);
    let wg = proto_wg::wire::is_wireguard(datagram);
    let stun = stun::wire::is_stun(datagram);
    let probe = proto_path::wire::is_probe(datagram);
    assert!(!(stun && probe), "STUN and probe framing overlap");
    assert!(!(wg && probe), "WireGuard and probe framing overlap");
    match kind {
        SocketDatagram::WireGuard => assert!(wg),
        SocketDatagram::Stun => assert!(stun && !wg),
        SocketDatagram::PortMapping => assert!(!wg && !stun && !probe && port == 5351),
        SocketDatagram::PathProbe => assert!(probe && !wg && !stun),
        SocketDatagram::Other => assert!(!wg && !stun && !probe),
    }

    // Queries in flight to two servers, one of them "from" this sender.
    let mut reflexive = Reflexive::new(now, 41641);
    let server: SocketAddr = from;
    reflexive.set_servers(now, vec![server, "203.0.113.10:3478".parse().expect("addr")]);
    let mut n = 0u8;
    reflexive.handle_timeout(now, &mut || {
        n += 1;
        Some([n; 12])
    });
    while reflexive.poll_transmit().is_some() {}
    let before = reflexive.report();
    reflexive.handle_input(now, from, datagram);
    // Only a genuine answer to the id we chose ([1; 12]) may teach an
    // address; the fuzzer can find it, anything else must not.
    if !datagram.get(8..20).is_some_and(|id| id == [1u8; 12]) {
        assert_eq!(reflexive.report().addresses, before.addresses);
    }

    let mut paths = PathManager::new(Zeroizing::new([3; 32]), [4; 32], [5; 32]);
    paths.handle_input(now, from, datagram);
    assert!(paths.poll_event().is_none(), "a stranger moved a path");
    assert!(paths.poll_transmit().is_none(), "a stranger got an answer");
});
