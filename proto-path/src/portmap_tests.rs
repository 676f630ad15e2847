//! The port-mapping client against fake routers in fake time: a PCP one,
//! a NAT-PMP-only one, a silent one and a refusing one; answers from
//! strangers and for other nonces.
#![allow(clippy::disallowed_methods)] // Instant::now() is only the fake clock's origin

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::portmap::client::{Status, RETRY_LATER};
use crate::portmap::{natpmp, pcp, Event, Mapping, PortMapper, Protocol};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);
const PORT: u16 = 41641;

fn gateway() -> SocketAddr {
    SocketAddr::from((GATEWAY, 5351))
}

fn mapper(now: Instant) -> PortMapper {
    PortMapper::new(now, GATEWAY, CLIENT, PORT, [7; 12])
}

fn sent(m: &mut PortMapper) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(t) = m.poll_transmit() {
        assert_eq!(t.destination, gateway());
        out.push(t.contents);
    }
    out
}

fn events(m: &mut PortMapper) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

/// What a PCP router answers a MAP request with (`result` 0: success).
fn pcp_answer(request: &[u8], result: u8, external_port: u16, lifetime: u32) -> Vec<u8> {
    let mut nonce = [0; 12];
    nonce.copy_from_slice(&request[24..36]);
    pcp::emit_answer(&pcp::MapAnswer {
        result,
        lifetime,
        epoch: 100,
        nonce,
        protocol: 17,
        internal_port: PORT,
        external_port,
        external: Some(PUBLIC),
    })
    .to_vec()
}

#[test]
fn a_pcp_router_maps_the_port_and_the_mapping_is_refreshed_at_half_its_lifetime() {
    let now = Instant::now();
    let mut m = mapper(now);
    m.handle_timeout(now);
    let requests = sent(&mut m);
    assert_eq!(requests.len(), 1);
    assert_eq!(&requests[0][..2], &[2, 1], "a PCP MAP request");
    m.handle_input(now, gateway(), &pcp_answer(&requests[0], 0, 50000, 3600));
    let want = Mapping {
        external: SocketAddrV4::new(PUBLIC, 50000),
        protocol: Protocol::Pcp,
        lifetime: Duration::from_secs(3600),
    };
    assert_eq!(events(&mut m), [Event::Mapped(want)]);
    assert_eq!(m.status(), Status::Mapped(want));
    assert_eq!(m.poll_timeout(), Some(now + Duration::from_secs(1800)));
    // The refresh repeats the nonce and asks for the port it has.
    let later = now + Duration::from_secs(1800);
    m.handle_timeout(later);
    let refresh = sent(&mut m);
    assert_eq!(&refresh[0][24..36], &[7; 12]);
    assert_eq!(&refresh[0][42..44], &50000u16.to_be_bytes());
    m.handle_input(later, gateway(), &pcp_answer(&refresh[0], 0, 50000, 3600));
    assert!(events(&mut m).is_empty(), "an unchanged mapping is quiet");
    // Released: a request with lifetime 0.
    m.release();
    let release = sent(&mut m);
    assert_eq!(&release[0][4..8], &[0, 0, 0, 0]);
    assert_eq!(m.mapping(), None);
}

#[test]
fn a_router_that_speaks_only_nat_pmp_is_asked_with_nat_pmp() {
    let now = Instant::now();
    let mut m = mapper(now);
    m.handle_timeout(now);
    sent(&mut m);
    // "Unsupported version", in NAT-PMP's own format.
    m.handle_input(
        now,
        gateway(),
        &natpmp::emit::refusal(1, natpmp::UNSUPPORTED_VERSION, 5),
    );
    let requests = sent(&mut m);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], natpmp::external_address_request());
    assert_eq!(requests[1], natpmp::map_request(PORT, PORT, 7200));
    m.handle_input(now, gateway(), &natpmp::emit::map_udp(6, PORT, 41641, 7200));
    assert!(events(&mut m).is_empty(), "the address is not known yet");
    m.handle_input(now, gateway(), &natpmp::emit::external_address(6, PUBLIC));
    assert_eq!(
        events(&mut m),
        [Event::Mapped(Mapping {
            external: SocketAddrV4::new(PUBLIC, 41641),
            protocol: Protocol::NatPmp,
            lifetime: Duration::from_secs(7200),
        })]
    );
}

#[test]
fn a_silent_router_is_asked_a_bounded_number_of_times_then_again_much_later() {
    let start = Instant::now();
    let mut m = mapper(start);
    let mut now = start;
    let mut datagrams = 0;
    while now < start + Duration::from_secs(60) {
        m.handle_timeout(now);
        datagrams += sent(&mut m).len();
        now = m
            .poll_timeout()
            .expect("a timer")
            .max(now + Duration::from_millis(1));
    }
    // Three PCP requests, three NAT-PMP rounds of two.
    assert_eq!(datagrams, 9);
    assert_eq!(m.status(), Status::Unavailable { refused: false });
    let next = m.poll_timeout().expect("next round");
    assert!(
        next - start >= RETRY_LATER,
        "next round {:?} after start",
        next - start
    );
}

#[test]
fn answers_from_strangers_or_for_other_requests_change_nothing() {
    let now = Instant::now();
    let mut m = mapper(now);
    m.handle_timeout(now);
    let request = sent(&mut m).remove(0);
    let good = pcp_answer(&request, 0, 50000, 3600);
    // Another host on the LAN, another port on the gateway.
    m.handle_input(now, "192.168.1.9:5351".parse().unwrap(), &good);
    m.handle_input(now, SocketAddr::from((GATEWAY, 5352)), &good);
    // Another nonce (an off-path guess), another internal port, junk.
    let mut other_nonce = good.clone();
    other_nonce[24] ^= 1;
    m.handle_input(now, gateway(), &other_nonce);
    let mut other_port = good.clone();
    other_port[40] ^= 1;
    m.handle_input(now, gateway(), &other_port);
    m.handle_input(now, gateway(), &good[..30]);
    m.handle_input(now, gateway(), b"");
    assert!(events(&mut m).is_empty());
    assert_eq!(m.mapping(), None);
    let c = m.counters();
    assert_eq!(
        (c.not_from_gateway, c.unexpected, c.malformed),
        (2, 2, 2),
        "{c:?}"
    );
    // The genuine answer still works.
    m.handle_input(now, gateway(), &good);
    assert!(m.mapping().is_some());
    // Once mapped, nothing is in flight: an answer now is unexpected.
    m.handle_input(now, gateway(), &good);
    assert_eq!(m.counters().unexpected, 3);
}

/// A mapper the PCP router gave a mapping of `lifetime` seconds at `now`.
fn mapped(now: Instant, lifetime: u32) -> PortMapper {
    let mut m = mapper(now);
    m.handle_timeout(now);
    let request = sent(&mut m).remove(0);
    m.handle_input(now, gateway(), &pcp_answer(&request, 0, 50000, lifetime));
    assert_eq!(events(&mut m).len(), 1, "mapped");
    m
}

#[test]
fn a_mapping_refused_at_its_refresh_is_lost() {
    let now = Instant::now();
    let mut m = mapped(now, 120);
    let later = now + Duration::from_secs(60);
    m.handle_timeout(later);
    let refresh = sent(&mut m).remove(0);
    // NOT_AUTHORIZED by PCP, then NAT-PMP refuses too.
    m.handle_input(later, gateway(), &pcp_answer(&refresh, 2, 0, 0));
    sent(&mut m);
    m.handle_input(later, gateway(), &natpmp::emit::refusal(1, 2, 7));
    assert_eq!(events(&mut m), [Event::Lost]);
    assert_eq!(m.status(), Status::Unavailable { refused: true });
}

#[test]
fn a_mapping_whose_refresh_goes_unanswered_is_lost() {
    let now = Instant::now();
    let mut m = mapped(now, 120);
    // The router goes silent: the refresh is never answered.
    let mut t = now;
    while t < now + Duration::from_secs(121) {
        t = m
            .poll_timeout()
            .expect("timer")
            .max(t + Duration::from_millis(1));
        m.handle_timeout(t);
        sent(&mut m);
    }
    assert_eq!(events(&mut m), [Event::Lost]);
    assert_eq!(m.mapping(), None);
}
