//! The port-mapping codecs (NAT-PMP, PCP) and the client fed arbitrary
//! answers from the gateway, while it asks by PCP and while it asks by
//! NAT-PMP: no panic, no more than a round's requests queued, and a PCP
//! mapping only from an answer that repeats our nonce.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use proto_path::portmap::{natpmp, pcp, Event, PortMapper, Protocol};

fuzz_target!(|data: &[u8]| {
    let _ = natpmp::parse(data);
    let _ = pcp::parse(data);
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let gateway = Ipv4Addr::new(192, 168, 1, 1);
    let from = SocketAddr::from((gateway, 5351));
    for nat_pmp in [false, true] {
        let mut m = PortMapper::new(now, gateway, Ipv4Addr::new(192, 168, 1, 10), 41641, [7; 12]);
        m.handle_timeout(now);
        if nat_pmp {
            m.handle_input(now, from, &natpmp::emit::refusal(1, natpmp::UNSUPPORTED_VERSION, 1));
        }
        while m.poll_transmit().is_some() {}
        // The input in pieces, as several answers.
        for chunk in data.chunks(60) {
            m.handle_input(now, from, chunk);
            let mut queued = 0;
            while m.poll_transmit().is_some() {
                queued += 1;
            }
            assert!(queued <= 4, "{queued} requests queued");
        }
        while let Some(e) = m.poll_event() {
            if let Event::Mapped(mapping) = e {
                if mapping.protocol == Protocol::Pcp {
                    assert!(data.chunks(60).any(|c| c.get(24..36) == Some(&[7u8; 12][..])));
                }
            }
        }
        m.handle_timeout(now + std::time::Duration::from_secs(10_000));
    }
});
