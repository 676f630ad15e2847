//! Endpoints with many SAs: concurrent initiators, cookies demanded under
//! load and honoured by our initiator, a spoofed IKE_SA_INIT flood held to
//! the half-open bound while real peers still get in, and the drops
//! counted by reason.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

mod common;
use common::shuttle;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{
    Config, Credentials, Endpoint, EndpointConfig, EspProposal, Event, Identity, IkeProposal,
    Phase, Timers,
};
use zeroize::Zeroizing;

const GW: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 500);

fn peer(n: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 8, 0, 0)) + n);
    SocketAddr::new(IpAddr::V4(ip), 500)
}

fn config(local: &str) -> Arc<Config> {
    Arc::new(Config {
        local_id: Identity::parse(local),
        remote_id: None,
        credentials: Credentials::Psk(Zeroizing::new(b"shared".to_vec())),
        ike_proposals: vec![IkeProposal::parse("aes128gcm16-prfsha256-x25519").unwrap()],
        esp_proposals: vec![EspProposal::parse("aes128gcm16").unwrap()],
        local_ts: vec![TrafficSelector::subnet("0.0.0.0".parse().unwrap(), 0)],
        remote_ts: vec![TrafficSelector::subnet("0.0.0.0".parse().unwrap(), 0)],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers::default(),
        child_limits: Default::default(),
    })
}

fn ups(ep: &mut Endpoint) -> usize {
    let mut n = 0;
    while let Some((_, e)) = ep.poll_event() {
        if matches!(e, Event::ChildSaUp(_)) {
            n += 1;
        }
    }
    n
}

#[allow(clippy::disallowed_methods)] // the virtual clock's origin
fn start() -> Instant {
    Instant::now()
}

#[test]
fn fifty_initiators_at_once() {
    let now = start();
    let mut gw = Endpoint::new(EndpointConfig::default(), [1; 32]);
    gw.add_responder(None, config("@gw"));
    let mut ini = Endpoint::new(EndpointConfig::default(), [2; 32]);
    let handles: Vec<_> = (1..=50)
        .map(|n| ini.connect(now, config(&format!("@peer{n}")), peer(n), GW))
        .collect();
    shuttle(now, &mut ini, &mut gw);
    for h in handles {
        assert_eq!(ini.sa(h).unwrap().phase(), Phase::Established);
    }
    assert_eq!(ups(&mut ini), 50);
    assert_eq!(ups(&mut gw), 50);
    assert_eq!(gw.sas().count(), 50);
    assert_eq!(gw.drops().cookies_sent, 0, "no load, no cookies");
}

#[test]
fn cookies_are_demanded_under_load_and_honoured() {
    let now = start();
    let mut gw = Endpoint::new(
        EndpointConfig {
            cookie_threshold: 0,
            ..EndpointConfig::default()
        },
        [3; 32],
    );
    gw.add_responder(None, config("@gw"));
    let mut ini = Endpoint::new(EndpointConfig::default(), [4; 32]);
    let h = ini.connect(now, config("@peer"), peer(1), GW);
    shuttle(now, &mut ini, &mut gw);
    assert_eq!(ini.sa(h).unwrap().phase(), Phase::Established);
    assert_eq!(gw.drops().cookies_sent, 1);
    assert_eq!(gw.drops().bad_cookie, 0);
}

#[test]
fn a_spoofed_flood_is_bounded_and_real_peers_still_connect() {
    let now = start();
    let limits = EndpointConfig {
        cookie_threshold: 20,
        max_half_open: 100,
        ..EndpointConfig::default()
    };
    let mut gw = Endpoint::new(limits, [5; 32]);
    gw.add_responder(None, config("@gw"));
    // IKE_SA_INIT requests from 1000 addresses that never answer (the
    // flood's own copies of real requests, replayed from other sources).
    let mut flood = Endpoint::new(EndpointConfig::default(), [6; 32]);
    for n in 1..=1000 {
        flood.connect(now, config("@spoof"), peer(1000 + n), GW);
    }
    let mut answered = 0;
    while let Some(t) = flood.poll_transmit() {
        gw.handle_input(now, t.source, t.destination, &t.contents);
        while gw.poll_transmit().is_some() {
            answered += 1;
        }
    }
    assert_eq!(
        gw.sas().count(),
        20,
        "half-open SAs stop at the cookie threshold"
    );
    assert_eq!(gw.drops().cookies_sent, 980);
    assert_eq!(answered, 1000, "every request got one small answer");

    // A real initiator follows the cookie and gets in.
    let mut ini = Endpoint::new(EndpointConfig::default(), [7; 32]);
    let h = ini.connect(now, config("@real"), peer(1), GW);
    shuttle(now, &mut ini, &mut gw);
    assert_eq!(ini.sa(h).unwrap().phase(), Phase::Established);

    // A forged cookie is dropped.
    let mut forger = Endpoint::new(EndpointConfig::default(), [8; 32]);
    forger.connect(now, config("@forger"), peer(2), GW);
    let t = forger.poll_transmit().unwrap();
    gw.handle_input(now, t.source, t.destination, &t.contents);
    let cookie_reply = gw.poll_transmit().unwrap();
    // Answer from another address with the cookie meant for peer(2).
    forger.handle_input(
        now,
        cookie_reply.source,
        cookie_reply.destination,
        &cookie_reply.contents,
    );
    let mut retry = forger.poll_transmit().unwrap();
    retry.source = peer(3);
    gw.handle_input(now, retry.source, retry.destination, &retry.contents);
    assert_eq!(gw.drops().bad_cookie, 1);

    // Half-open SAs expire and the endpoint forgets them.
    gw.handle_timeout(now + Duration::from_secs(31));
    gw.handle_timeout(now + Duration::from_secs(60));
    assert_eq!(gw.sas().count(), 1, "only the real peer's SA is left");
}

#[test]
fn the_hard_half_open_limit_drops_even_with_cookies_off() {
    let now = start();
    let mut gw = Endpoint::new(
        EndpointConfig {
            cookie_threshold: usize::MAX,
            max_half_open: 10,
            ..EndpointConfig::default()
        },
        [9; 32],
    );
    gw.add_responder(None, config("@gw"));
    let mut flood = Endpoint::new(EndpointConfig::default(), [10; 32]);
    for n in 1..=50 {
        flood.connect(now, config("@spoof"), peer(n), GW);
    }
    while let Some(t) = flood.poll_transmit() {
        gw.handle_input(now, t.source, t.destination, &t.contents);
    }
    assert_eq!(gw.sas().count(), 10);
    assert_eq!(gw.drops().half_open_limit, 40);
}

#[test]
fn strangers_and_unknown_spis_are_counted() {
    let now = start();
    let mut gw = Endpoint::new(EndpointConfig::default(), [11; 32]);
    let only = (IpAddr::V4(Ipv4Addr::new(10, 8, 0, 0)), 30);
    gw.add_responder(Some(only), config("@gw"));
    let mut ini = Endpoint::new(EndpointConfig::default(), [12; 32]);
    let inside = ini.connect(now, config("@in"), peer(1), GW);
    let outside = ini.connect(now, config("@out"), peer(9), GW);
    shuttle(now, &mut ini, &mut gw);
    assert_eq!(ini.sa(inside).unwrap().phase(), Phase::Established);
    assert_eq!(ini.sa(outside).unwrap().phase(), Phase::Connecting);
    assert_eq!(gw.drops().no_config, 1);
    let mut junk = vec![0u8; 40];
    junk[0] = 1;
    junk[17] = 0x20;
    junk[18] = 37;
    junk[24..28].copy_from_slice(&40u32.to_be_bytes());
    gw.handle_input(now, peer(1), GW, &junk);
    gw.handle_input(now, peer(1), GW, &junk[..10]);
    assert_eq!(gw.drops().unknown_spi, 1);
    assert_eq!(gw.drops().malformed, 1);
}

#[test]
fn refusals_are_kept_for_the_log_and_bounded() {
    let now = start();
    let mut gw = Endpoint::new(EndpointConfig::default(), [13; 32]);
    let mut only_chacha = (*config("@gw")).clone();
    only_chacha.ike_proposals =
        vec![IkeProposal::parse("chacha20poly1305-prfsha512-ecp384").unwrap()];
    gw.add_responder(None, Arc::new(only_chacha));
    let mut ini = Endpoint::new(EndpointConfig::default(), [14; 32]);
    for n in 1..=100 {
        ini.connect(now, config("@peer"), peer(n), GW);
    }
    shuttle(now, &mut ini, &mut gw);
    let first = gw.poll_refusal().unwrap();
    assert_eq!(first.notify, Some(14));
    assert_eq!(first.reason, "no IKE proposal in common");
    assert_eq!(
        first.peer,
        peer(37),
        "the oldest were dropped: 64 kept of 100"
    );
    assert_eq!(std::iter::from_fn(|| gw.poll_refusal()).count(), 63);
}

#[test]
fn one_address_holds_only_its_share_of_half_open_sas() {
    let mut now = start();
    let mut gw = Endpoint::new(EndpointConfig::default(), [15; 32]);
    gw.add_responder(None, config("@gw"));
    // One host (one address) opens twenty IKE SAs and never finishes.
    let mut host = Endpoint::new(EndpointConfig::default(), [16; 32]);
    for _ in 0..20 {
        host.connect(now, config("@greedy"), peer(1), GW);
    }
    while let Some(t) = host.poll_transmit() {
        gw.handle_input(now, t.source, t.destination, &t.contents);
    }
    assert_eq!(gw.half_open(), 5, "strongSwan's block_threshold");
    assert_eq!(gw.drops().half_open_per_source, 15);
    // Another host is not affected, and its finished SA counts as none.
    let mut other = Endpoint::new(EndpointConfig::default(), [17; 32]);
    let h = other.connect(now, config("@other"), peer(2), GW);
    shuttle(now, &mut other, &mut gw);
    assert_eq!(other.sa(h).unwrap().phase(), Phase::Established);
    assert_eq!(gw.half_open(), 5);
    // Once the greedy host's SAs expire, its address may start again.
    now += Duration::from_secs(31);
    gw.handle_timeout(now);
    assert_eq!(gw.half_open(), 0);
    let mut again = Endpoint::new(EndpointConfig::default(), [18; 32]);
    let h = again.connect(now, config("@greedy"), peer(1), GW);
    shuttle(now, &mut again, &mut gw);
    assert_eq!(again.sa(h).unwrap().phase(), Phase::Established);
}

#[test]
fn fragments_waiting_over_all_sas_stay_within_their_bound() {
    let now = start();
    let budget = 1000;
    let mut gw = Endpoint::new(
        EndpointConfig {
            max_fragment_bytes: budget,
            ..EndpointConfig::default()
        },
        [19; 32],
    );
    gw.add_responder(None, config("@gw"));
    // Fifty initiators whose IKE_AUTH goes out in small fragments.
    let mut ini = Endpoint::new(EndpointConfig::default(), [20; 32]);
    let mut small = (*config("@peer")).clone();
    small.fragment_size = Some(160);
    let small = Arc::new(small);
    for n in 1..=50 {
        ini.connect(now, small.clone(), peer(n), GW);
    }
    // IKE_SA_INIT both ways.
    while let Some(t) = ini.poll_transmit() {
        gw.handle_input(now, t.source, t.destination, &t.contents);
    }
    while let Some(t) = gw.poll_transmit() {
        ini.handle_input(now, t.source, t.destination, &t.contents);
    }
    // Only the first fragment of each IKE_AUTH arrives.
    let mut seen = std::collections::HashSet::new();
    let mut delivered = 0;
    while let Some(t) = ini.poll_transmit() {
        if seen.insert(t.source) {
            delivered += 1;
            gw.handle_input(now, t.source, t.destination, &t.contents);
            assert!(gw.fragment_bytes() <= budget, "{}", gw.fragment_bytes());
        }
    }
    assert_eq!(delivered, 50);
    assert!(gw.fragment_bytes() > budget / 2, "fragments are kept");
    assert!(gw.drops().fragment_budget > 0);
    assert_eq!(ups(&mut gw), 0);
}
