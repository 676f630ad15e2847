//! A device with an established session, fed arbitrary datagrams (split on
//! a one-byte length prefix), with time moving between them. Checks: no
//! panic, bounded queues, and the session still works afterwards.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use proto_wg::harness::Pair;

fuzz_target!(|data: &[u8]| {
    let mut pair = Pair::new(1);
    let _ = pair.send(0, b"hello");
    pair.pump();
    assert_eq!(pair.nodes[1].delivered.len(), 1);
    let src = pair.nodes[0].addr;
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        // Also feed the responder with each message type's first byte.
        for first in [None, Some(1u8), Some(2), Some(3), Some(4)] {
            let mut d = datagram.to_vec();
            if let (Some(f), Some(b)) = (first, d.first_mut()) {
                *b = f;
            }
            let _ = pair.deliver(1, src, d);
        }
        pair.now += Duration::from_millis(len as u64 * 10);
        rest = tail;
    }
    let dropped = pair.nodes[1].device.stats().total_dropped();
    assert!(dropped <= 5 * data.len() as u64 + 5);
    // Garbage never breaks a live session (none of it can authenticate).
    pair.advance(Duration::from_secs(1));
    let before = pair.nodes[1].delivered.len();
    let _ = pair.send(0, b"after");
    pair.pump();
    assert_eq!(pair.nodes[1].delivered.len(), before + 1);
});
