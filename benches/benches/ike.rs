//! A whole IKE SA setup in memory: IKE_SA_INIT + IKE_AUTH (PSK) with the
//! first Child SA, both sides' work, per Diffie-Hellman group. This is
//! the CPU cost behind "IKE_SA setups per second" on one core.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, EspProposal, Identity, IkeProposal, IkeSa, Phase, Timers};

fn config(ike: &str, local: &str, remote: &str) -> Arc<Config> {
    let net = |s: &str| TrafficSelector::subnet(s.parse().expect("ip"), 24);
    Arc::new(Config {
        local_id: Identity::parse(local),
        remote_id: Some(Identity::parse(remote)),
        credentials: Credentials::Psk(b"bench-psk".to_vec().into()),
        ike_proposals: vec![IkeProposal::parse(ike).expect("proposal")],
        esp_proposals: vec![EspProposal::parse("aes256gcm16").expect("proposal")],
        local_ts: vec![net(if local == "@a" {
            "10.1.0.0"
        } else {
            "10.2.0.0"
        })],
        remote_ts: vec![net(if local == "@a" {
            "10.2.0.0"
        } else {
            "10.1.0.0"
        })],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers: Timers::default(),
    })
}

/// One full setup; returns the established initiator.
fn setup(ia: &Arc<Config>, rb: &Arc<Config>, now: Instant, seed: u8) -> IkeSa {
    let a: SocketAddr = "10.0.0.1:500".parse().expect("a");
    let b: SocketAddr = "10.0.0.2:500".parse().expect("b");
    let mut init = IkeSa::initiate(now, ia.clone(), a, b, [seed; 32]);
    let first = init.poll_transmit().expect("IKE_SA_INIT");
    let mut resp =
        IkeSa::respond(now, rb.clone(), b, a, &first.contents, [seed ^ 0xff; 32]).expect("respond");
    loop {
        let mut moved = false;
        while let Some(t) = resp.poll_transmit() {
            init.handle_input(now, b, a, &t.contents);
            moved = true;
        }
        while let Some(t) = init.poll_transmit() {
            resp.handle_input(now, a, b, &t.contents);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    init
}

fn ike(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike-sa-setup-psk");
    group.sample_size(20);
    #[allow(clippy::disallowed_methods)] // a bench's clock origin
    let now = Instant::now();
    for ike in [
        "aes256gcm16-prfsha256-ecp256",
        "aes128gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha384-ecp384",
        "aes256-sha256-modp2048",
    ] {
        let ia = config(ike, "@a", "@b");
        let rb = config(ike, "@b", "@a");
        assert_eq!(setup(&ia, &rb, now, 1).phase(), Phase::Established);
        let mut seed = 0u8;
        group.bench_with_input(BenchmarkId::from_parameter(ike), &ike, |bench, _| {
            bench.iter(|| {
                seed = seed.wrapping_add(1);
                black_box(setup(&ia, &rb, now, seed))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ike);
criterion_main!(benches);
