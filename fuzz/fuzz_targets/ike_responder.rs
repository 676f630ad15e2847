//! The responder fed arbitrary datagrams: as a first IKE_SA_INIT, and as
//! the next message to a half-open SA (with its SPIs written in, so the
//! input reaches past the SPI check). Never a panic; nothing forged
//! authenticates; an answer is never more than a small multiple of the
//! request (no amplification).
#![no_main]
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, EspProposal, Event, Identity, IkeProposal, IkeSa, Timers};

fn config() -> Arc<Config> {
    Arc::new(Config {
        local_id: Identity::parse("@responder"),
        remote_id: None,
        credentials: Credentials::Psk(b"fuzz".to_vec().into()),
        ike_proposals: vec![
            IkeProposal::parse("aes256gcm16-prfsha256-x25519").expect("proposal"),
            IkeProposal::parse("aes128-sha256-ecp256").expect("proposal"),
        ],
        esp_proposals: vec![EspProposal::parse("aes256gcm16").expect("proposal")],
        local_ts: vec![TrafficSelector::subnet("10.0.0.0".parse().expect("ip"), 8)],
        remote_ts: vec![TrafficSelector::subnet("10.0.0.0".parse().expect("ip"), 8)],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers::default(),
        child_limits: Default::default(),
    })
}

const A: &str = "192.0.2.1:500";
const B: &str = "192.0.2.2:500";

/// A valid IKE_SA_INIT request from our own initiator, made once.
fn init_request() -> &'static [u8] {
    static REQ: OnceLock<Vec<u8>> = OnceLock::new();
    REQ.get_or_init(|| {
        let now = Instant::now();
        let mut i = IkeSa::initiate(
            now,
            config(),
            A.parse().expect("a"),
            B.parse().expect("b"),
            [3; 32],
        );
        i.poll_transmit().expect("IKE_SA_INIT").contents
    })
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let (a, b): (SocketAddr, SocketAddr) = (A.parse().expect("a"), B.parse().expect("b"));
    match IkeSa::respond(now, config(), b, a, data, [1; 32]) {
        Ok(mut sa) => {
            while let Some(t) = sa.poll_transmit() {
                assert!(t.contents.len() <= data.len() + 1024, "amplification");
            }
        }
        Err(r) => {
            if let Some(t) = r.reply {
                assert!(t.contents.len() <= 64, "refusals are small");
            }
        }
    }

    let mut sa = IkeSa::respond(now, config(), b, a, init_request(), [2; 32]).expect("valid init");
    while sa.poll_transmit().is_some() {}
    let mut msg = data.to_vec();
    if msg.len() >= 16 {
        let (spi_i, spi_r) = sa.spis();
        msg[..8].copy_from_slice(&spi_i.to_be_bytes());
        msg[8..16].copy_from_slice(&spi_r.to_be_bytes());
    }
    sa.handle_input(now, a, b, &msg);
    sa.handle_timeout(now);
    while let Some(e) = sa.poll_event() {
        assert!(
            !matches!(e, Event::IkeSaUp { .. } | Event::ChildSaUp(_)),
            "forged IKE_AUTH accepted"
        );
    }
});
