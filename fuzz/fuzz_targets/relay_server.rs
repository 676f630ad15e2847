//! The relay's frame decoder and forwarding core fed arbitrary frames from
//! several connections (clients and mesh links), with time moving: no
//! panic, and the bounds hold (queues, remote table).
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proto_relay::frame::Frame;
use proto_relay::server::{ConnId, Limits, RelayServer, Role};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        queue_frames: 8,
        queue_bytes: 4096,
        remote_keys: 16,
        ..Limits::default()
    };
    let mut s = RelayServer::new(limits);
    let mut now = Instant::now();
    for i in 0..4u8 {
        s.connect(now, ConnId(u64::from(i)), [i; 32], Role::Client);
    }
    s.connect(now, ConnId(9), [9; 32], Role::Mesh);
    // Each chunk: [connection selector, time step, frame bytes...]; 0xfe
    // separates chunks. Selector 0x80+ disconnects or reconnects.
    for chunk in data.split(|&b| b == 0xfe) {
        let [sel, step, frame @ ..] = chunk else {
            continue;
        };
        now += Duration::from_millis(u64::from(*step));
        let _ = Frame::decode(frame);
        let id = ConnId(u64::from(sel % 10));
        match sel {
            0x80..=0xbf => s.disconnect(id),
            0xc0..=0xff => {
                let _ = s.connect(
                    now,
                    id,
                    [sel % 5; 32],
                    if sel % 10 == 9 {
                        Role::Mesh
                    } else {
                        Role::Client
                    },
                );
            }
            _ => {
                let _ = s.handle_frame(now, id, frame);
            }
        }
        while s.poll_wake().is_some() {}
        if sel & 1 == 1 {
            while s.poll_send(id).is_some() {}
        }
        assert!(s.remote_keys() <= 16);
    }
});
