//! A whole IKE SA setup in memory: IKE_SA_INIT + IKE_AUTH with the first
//! Child SA, both sides' work, per Diffie-Hellman group and per auth
//! method (PSK; ECDSA P-256 + P-384 certificates; RSA 3072 + 2048). This
//! is the CPU cost behind "IKE_SA setups per second" on one core.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proto_ikev2::cert::{Certificate, TrustStore};
use proto_ikev2::crypto::sig::PrivateKey;
use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, EspProposal, Identity, IkeProposal, IkeSa, Phase, Timers};

/// The test PKI of proto-ikev2 (throwaway credentials).
fn pki(name: &str) -> String {
    let path = format!(
        "{}/../proto-ikev2/tests/data/pki/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).expect("test PKI")
}

/// PSK, or the named certificate of the test PKI.
fn credentials(auth: &str) -> Credentials {
    if auth == "psk" {
        return Credentials::Psk(b"bench-psk".to_vec().into());
    }
    Credentials::Certificate {
        cert: Arc::new(Certificate::from_pem(&pki(&format!("{auth}.pem"))).expect("cert")),
        key: Arc::new(PrivateKey::from_pem(&pki(&format!("{auth}.key"))).expect("key")),
        trust: Arc::new(TrustStore::new(vec![
            Certificate::from_pem(&pki("ca.pem")).expect("ca")
        ])),
        rsa_pss: false,
    }
}

fn config(ike: &str, local: &str, remote: &str, auth: &str) -> Arc<Config> {
    let net = |s: &str| TrafficSelector::subnet(s.parse().expect("ip"), 24);
    Arc::new(Config {
        local_id: Identity::parse(local),
        remote_id: Some(Identity::parse(remote)),
        credentials: credentials(auth),
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
        child_limits: Default::default(),
    })
}

/// One full setup; returns the established initiator.
fn setup(ia: &Arc<Config>, rb: &Arc<Config>, now: Instant, seed: u8) -> IkeSa {
    let a: SocketAddr = "10.0.0.1:500".parse().expect("a");
    let b: SocketAddr = "10.0.0.2:500".parse().expect("b");
    let mut init = IkeSa::initiate(now, ia.clone(), a, b, [seed; 32]);
    init.set_unix_time(UNIX_NOW);
    let first = init.poll_transmit().expect("IKE_SA_INIT");
    let mut resp =
        IkeSa::respond(now, rb.clone(), b, a, &first.contents, [seed ^ 0xff; 32]).expect("respond");
    resp.set_unix_time(UNIX_NOW);
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

/// Inside the test certificates' validity.
const UNIX_NOW: u64 = 1_800_000_000;

fn ike(c: &mut Criterion) {
    let mut group = c.benchmark_group("ike-sa-setup");
    group.sample_size(20);
    #[allow(clippy::disallowed_methods)] // a bench's clock origin
    let now = Instant::now();
    for (ike, auth_o, auth_s) in [
        ("aes256gcm16-prfsha256-ecp256", "psk", "psk"),
        ("aes128gcm16-prfsha256-x25519", "psk", "psk"),
        ("aes256gcm16-prfsha384-ecp384", "psk", "psk"),
        ("aes256-sha256-modp2048", "psk", "psk"),
        ("aes256gcm16-prfsha256-ecp256", "gw-o-p256", "gw-s-p384"),
        ("aes256gcm16-prfsha256-ecp256", "gw-o-rsa", "gw-s-rsa"),
    ] {
        let (o, s) = ("gw-o.interop", "gw-s.interop");
        let ia = config(ike, o, s, auth_o);
        let rb = config(ike, s, o, auth_s);
        assert_eq!(setup(&ia, &rb, now, 1).phase(), Phase::Established);
        let mut seed = 0u8;
        let name = if auth_o == "psk" {
            format!("{ike}/psk")
        } else {
            format!("{ike}/{auth_o}+{auth_s}")
        };
        group.bench_with_input(BenchmarkId::from_parameter(&name), &ike, |bench, _| {
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
