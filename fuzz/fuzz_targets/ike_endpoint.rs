//! The IKE Endpoint (demultiplexing by SPI, cookies, half-open bounds,
//! fragments) fed arbitrary datagrams from a handful of sources, on both
//! ports, with time moving; sometimes after a genuine IKE_SA_INIT, so real
//! SPIs are there to be hit. No panic, and every bound holds.
#![no_main]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{
    Config, Credentials, Endpoint, EndpointConfig, EspProposal, Identity, IkeProposal, Timers,
};

fn config(local: &str) -> Arc<Config> {
    let any = TrafficSelector::subnet("0.0.0.0".parse().expect("ip"), 0);
    Arc::new(Config {
        local_id: Identity::parse(local),
        remote_id: None,
        credentials: Credentials::Psk(b"fuzz-psk-1234".to_vec().into()),
        ike_proposals: vec![IkeProposal::parse("aes128gcm16-prfsha256-x25519").expect("ike")],
        esp_proposals: vec![EspProposal::parse("aes128gcm16").expect("esp")],
        local_ts: vec![any],
        remote_ts: vec![any],
        force_encap: false,
        fragment_size: Some(200),
        timers: Timers::default(),
        child_limits: Default::default(),
    })
}

const LIMITS: EndpointConfig = EndpointConfig {
    cookie_threshold: 2,
    max_half_open: 8,
    max_half_open_per_source: 3,
    max_sas: 16,
    max_fragment_bytes: 4096,
    cookie_rotation: Duration::from_secs(5),
};

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let gw_ip = "10.9.0.1".parse().expect("gw");
    let mut gw = Endpoint::new(LIMITS, [3; 32]);
    gw.add_responder(None, config("@gw"));
    if data.first().is_some_and(|b| b & 1 == 1) {
        // A real initiator's first message, answered: a half-open SA.
        let mut ini = Endpoint::new(EndpointConfig::default(), [4; 32]);
        let from: SocketAddr = "10.8.0.1:500".parse().expect("peer");
        ini.connect(now, config("@peer"), from, SocketAddr::new(gw_ip, 500));
        while let Some(t) = ini.poll_transmit() {
            gw.handle_input(now, t.source, t.destination, &t.contents);
        }
        while gw.poll_transmit().is_some() {}
    }
    // Chunks: [source, port and time step, length, bytes...].
    let mut rest = data.get(1..).unwrap_or_default();
    while let [source, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (msg, next) = tail.split_at(n);
        rest = next;
        let port = if step & 0x80 != 0 { 4500 } else { 500 };
        let from = SocketAddr::new([10, 8, 0, source % 6].into(), port);
        now += Duration::from_millis(u64::from(step & 0x7f) * 250);
        gw.handle_input(now, from, SocketAddr::new(gw_ip, port), msg);
        gw.handle_timeout(now);
        let mut answers = 0usize;
        while let Some(t) = gw.poll_transmit() {
            answers += 1;
            assert!(t.contents.len() <= 1500, "an oversized answer");
        }
        assert!(answers <= 4, "{answers} answers to one datagram");
        while gw.poll_event().is_some() {}
        while gw.poll_refusal().is_some() {}
        assert!(gw.half_open() <= LIMITS.max_half_open);
        assert!(gw.sas().count() <= LIMITS.max_sas);
        assert!(gw.fragment_bytes() <= LIMITS.max_fragment_bytes + 64 * 1024);
    }
});
