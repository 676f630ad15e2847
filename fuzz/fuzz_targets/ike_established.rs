//! An established IKE SA (with a Child SA) fed arbitrary payload chains as
//! the authenticated peer's requests: INFORMATIONAL, CREATE_CHILD_SA and
//! out-of-place IKE_AUTH. Never a panic; every request gets one answer;
//! the SA either stays up or reports why it went down; state stays
//! bounded (at most one Child SA per request).
#![no_main]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto_ikev2::wire::consts::exchange;
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, EspProposal, Identity, IkeProposal, IkeSa, Phase, Timers};

fn config(local: &str, remote: &str) -> Arc<Config> {
    let any = TrafficSelector::subnet("0.0.0.0".parse().expect("ip"), 0);
    Arc::new(Config {
        local_id: Identity::parse(local),
        remote_id: Some(Identity::parse(remote)),
        credentials: Credentials::Psk(b"fuzz".to_vec().into()),
        ike_proposals: vec![IkeProposal::parse("aes128gcm16-prfsha256-x25519").expect("ike")],
        esp_proposals: vec![
            EspProposal::parse("aes128gcm16").expect("esp"),
            EspProposal::parse("aes128gcm16-x25519").expect("esp"),
        ],
        local_ts: vec![any],
        remote_ts: vec![any],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers::default(),
        child_limits: Default::default(),
    })
}

/// A responder that completed IKE_AUTH with our own initiator.
fn established(now: Instant) -> IkeSa {
    let (a, b): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().expect("a"),
        "192.0.2.2:500".parse().expect("b"),
    );
    let mut i = IkeSa::initiate(now, config("@i", "@r"), a, b, [1; 32]);
    let first = i.poll_transmit().expect("init").contents;
    let mut r = IkeSa::respond(now, config("@r", "@i"), b, a, &first, [2; 32]).expect("respond");
    for _ in 0..4 {
        while let Some(t) = r.poll_transmit() {
            i.handle_input(now, b, a, &t.contents);
        }
        while let Some(t) = i.poll_transmit() {
            r.handle_input(now, a, b, &t.contents);
        }
    }
    assert_eq!(r.phase(), Phase::Established);
    while r.poll_event().is_some() {}
    r
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut sa = established(now);
    // Each chunk: [exchange selector, first payload type, length, bytes...].
    let mut rest = data;
    let mut requests = 0;
    while let [sel, first, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chain, next) = tail.split_at(n);
        rest = next;
        let ex = match sel % 3 {
            0 => exchange::INFORMATIONAL,
            1 => exchange::CREATE_CHILD_SA,
            _ => exchange::IKE_AUTH,
        };
        sa.fuzz_peer_request(now, ex, *first, chain);
        requests += 1;
        let mut answers = 0;
        while sa.poll_transmit().is_some() {
            answers += 1;
        }
        assert!(
            answers <= 1 || sa.phase() != Phase::Established,
            "{answers} answers to one request"
        );
        while sa.poll_event().is_some() {}
        // The per-IKE-SA bound; twice it while rekeys overlap.
        let bound = 2 * proto_ikev2::ChildLimits::default().per_ike_sa;
        assert!(
            sa.child_spis().len() <= bound.min(1 + requests),
            "Child SAs grew without bound"
        );
    }
    sa.handle_timeout(now);
});
