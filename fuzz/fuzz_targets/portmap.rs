//! The port-mapping codecs (NAT-PMP, PCP, UPnP's SSDP, description and
//! SOAP parsers) and the PCP/NAT-PMP client fed arbitrary answers from
//! the gateway, while it asks by PCP and while it asks by NAT-PMP: no
//! panic, no more than a round's requests queued, a PCP mapping only from
//! an answer that repeats our nonce, and no UPnP location that points
//! anywhere but the sender.
#![no_main]
use std::net::{Ipv4Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use proto_path::portmap::{natpmp, pcp, upnp, Event, PortMapper, Protocol};

fuzz_target!(|data: &[u8]| {
    let _ = natpmp::parse(data);
    let _ = pcp::parse(data);
    let sender: SocketAddr = "192.168.1.1:1900".parse().expect("addr");
    if let Some(location) = upnp::parse_search_response(sender, data) {
        assert_eq!(std::net::IpAddr::V4(*location.addr.ip()), sender.ip());
        let text = String::from_utf8_lossy(data);
        if let Some((_, control)) = upnp::control_url(&location, &text) {
            let _ = upnp::add_port_mapping(&control, "s", 1, Ipv4Addr::LOCALHOST, 1, 1);
        }
    }
    if let Some(answer) = upnp::parse_soap(data) {
        let _ = upnp::external_ip(&answer);
    }
    let _ = upnp::Url::parse(&String::from_utf8_lossy(data));
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
