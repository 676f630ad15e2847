//! Our IKEv2 and ESP against strongSwan's charon (5.9, kernel-libipsec
//! for userspace ESP, which only speaks ESP-in-UDP on 4500), each test in
//! its own pair of network namespaces with its own charon: we initiate
//! with every proposal set the vrouter must speak, charon initiates to
//! us, both sides rekey Child and IKE SAs while a ping runs and loses
//! nothing, a wrong PSK is refused, and a dead peer is found by liveness
//! checks. Every case pings through ESP and checks the echo replies.
//!
//! Needs root and the Debian packages strongswan-charon,
//! strongswan-swanctl, libstrongswan-standard-plugins,
//! libstrongswan-extra-plugins and libcharon-extra-plugins
//! (kernel-libipsec): ignored by default, run by CI (`.ci/install-deps`
//! installs them).
// Interop tests are where real sockets, clocks and threads belong.
#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

mod interop;
use interop::driver::{self, Outcome, Plan};
use testkit::strongswan::*;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_ikev2::wire::TrafficSelector;
use proto_ikev2::{Config, Credentials, DownReason, EspProposal, Identity, IkeProposal, Timers};

/// Starts our side in the lab's namespace.
fn spawn_ours(lab: &Lab, plan: Plan) -> std::thread::JoinHandle<Outcome> {
    let ns = lab.ours.clone();
    std::thread::spawn(move || {
        netstack::netns::enter(&ns).unwrap();
        driver::run(&plan).unwrap()
    })
}

/// Runs our side in the lab's namespace.
fn run(lab: &Lab, plan: Plan) -> Outcome {
    spawn_ours(lab, plan).join().unwrap()
}

/// Our side answers while strongSwan initiates (which must succeed).
fn answer_strongswan(lab: &Lab, mut plan: Plan) -> Outcome {
    plan.respond = true;
    let ours = spawn_ours(lab, plan);
    std::thread::sleep(Duration::from_millis(300));
    let initiated = lab.initiate();
    assert!(
        initiated.contains("initiate completed successfully"),
        "{initiated}"
    );
    ours.join().unwrap()
}

/// Our certificate credentials from the test PKI.
fn cert_creds(name: &str, rsa_pss: bool) -> Credentials {
    use proto_ikev2::cert::{Certificate, TrustStore};
    use proto_ikev2::crypto::sig::PrivateKey;
    let read = |f: String| std::fs::read_to_string(f).unwrap();
    Credentials::Certificate {
        cert: Arc::new(Certificate::from_pem(&read(pki(&format!("{name}.pem")))).unwrap()),
        key: Arc::new(PrivateKey::from_pem(&read(pki(&format!("{name}.key")))).unwrap()),
        trust: Arc::new(TrustStore::new(vec![Certificate::from_pem(&read(pki(
            "ca.pem",
        )))
        .unwrap()])),
        rsa_pss,
    }
}

fn config(ike: &str, esp: &str, psk: &str, timers: Timers) -> Arc<Config> {
    let net = |a: &str| TrafficSelector::subnet(a.parse().unwrap(), 24);
    Arc::new(Config {
        local_id: Identity::parse("gw-o.interop"),
        remote_id: Some(Identity::parse("gw-s.interop")),
        credentials: Credentials::Psk(psk.as_bytes().to_vec().into()),
        ike_proposals: vec![IkeProposal::parse(ike).unwrap()],
        esp_proposals: vec![EspProposal::parse(esp).unwrap()],
        local_ts: vec![net("10.88.2.0")],
        remote_ts: vec![net("10.88.1.0")],
        force_encap: false,
        fragment_size: Some(proto_ikev2::DEFAULT_FRAGMENT_SIZE),
        timers,
        child_limits: Default::default(),
    })
}

fn plan(config: Arc<Config>, count: u16, timeout: u64) -> Plan {
    Plan {
        local: US,
        remote: THEM,
        config,
        respond: false,
        ping: (OUR_HOST, THEIR_HOST),
        count,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(timeout),
        delete_at_end: true,
        seed: [NEXT.fetch_add(1, Ordering::Relaxed) as u8 ^ 0x5a; 32],
    }
}

fn no_rekeys() -> Timers {
    Timers {
        child_rekey: None,
        ike_rekey: None,
        ..Timers::default()
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn we_initiate_with_every_proposal_and_ping_through_esp() {
    let lab = Lab::new(&Charon::default());
    for (ike, esp) in [
        ("aes256gcm16-prfsha256-ecp256", "aes256gcm16"),
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
        ("aes256-sha256-modp2048", "aes256-sha256"),
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
    ] {
        let out = run(&lab, plan(config(ike, esp, PSK, no_rekeys()), 5, 20));
        assert!(out.established, "{ike}: {:?}\n{}", out.log, lab.log());
        assert_eq!(out.replies, 5, "{ike}/{esp}: {:?}", out.log);
        assert!(
            out.deleted,
            "{ike}: our delete was answered: {:?}",
            out.down
        );
        let sas = lab.swanctl(&["--list-sas"]);
        assert!(
            !sas.contains("ESTABLISHED"),
            "strongSwan still holds an SA:\n{sas}"
        );
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn strongswan_initiates_and_we_respond() {
    let lab = Lab::new(&Charon::default());
    let p = plan(
        config(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            PSK,
            no_rekeys(),
        ),
        5,
        20,
    );
    let out = answer_strongswan(&lab, p);
    assert_eq!(out.replies, 5, "{:?}", out.log);
    assert!(out.deleted, "{:?}", out.down);
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn rekeys_from_both_sides_lose_no_ping() {
    // strongSwan rekeys its Child SA every 5 s and the IKE SA every 9 s;
    // we rekey the Child SA every 4 s and the IKE SA every 7 s.
    let lab = Lab::new(&Charon {
        rekey_child: "5s",
        life_child: "30s",
        rekey_ike: "9s",
        ..Charon::default()
    });
    let timers = Timers {
        child_rekey: Some(Duration::from_secs(4)),
        ike_rekey: Some(Duration::from_secs(7)),
        ..Timers::default()
    };
    let out = run(
        &lab,
        plan(
            config(
                "aes128gcm16-prfsha256-x25519",
                "aes128gcm16-x25519",
                PSK,
                timers,
            ),
            200,
            40,
        ),
    );
    assert_eq!(
        out.replies,
        200,
        "pings lost across rekeys: {:?}\n{}",
        out.log,
        lab.log()
    );
    assert!(
        out.child_rekeys >= 4,
        "{} Child SA rekeys",
        out.child_rekeys
    );
    assert!(out.ike_rekeys >= 2, "{} IKE SA rekeys", out.ike_rekeys);
    let log = lab.log();
    assert!(log.contains("rekeyed"), "strongSwan saw no rekey:\n{log}");
    eprintln!(
        "200/200 echo replies across {} Child SA and {} IKE SA rekeys",
        out.child_rekeys, out.ike_rekeys
    );
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn a_wrong_psk_is_refused_on_both_sides() {
    let lab = Lab::new(&Charon::default());
    let out = run(
        &lab,
        plan(
            config(
                "aes256gcm16-prfsha256-ecp256",
                "aes256gcm16",
                "not-the-psk",
                no_rekeys(),
            ),
            1,
            15,
        ),
    );
    assert!(!out.established);
    assert!(
        matches!(out.down, Some(DownReason::AuthenticationFailed(_))),
        "{:?}",
        out.down
    );
    let log = lab.log();
    assert!(
        log.contains("MAC mismatched") && log.contains("N(AUTH_FAILED)"),
        "strongSwan should refuse our AUTH:\n{log}"
    );
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn liveness_checks_find_a_dead_peer() {
    let mut lab = Lab::new(&Charon::default());
    let timers = Timers {
        dpd: Some(Duration::from_secs(2)),
        retransmit: Duration::from_millis(500),
        retransmit_tries: 2,
        ..no_rekeys()
    };
    let mut p = plan(
        config("aes256gcm16-prfsha256-ecp256", "aes256gcm16", PSK, timers),
        3,
        30,
    );
    p.delete_at_end = false;
    let out = run(&lab, p.clone());
    assert_eq!(out.replies, 3);
    // Up again, then charon dies: our liveness checks must notice.
    p.count = u16::MAX;
    p.seed[0] ^= 1;
    let ours = spawn_ours(&lab, p);
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    lab.kill_charon();
    let out = ours.join().unwrap();
    assert!(out.established);
    assert_eq!(out.down, Some(DownReason::NoResponse), "{:?}", out.log);
    assert!(
        killed.elapsed() < Duration::from_secs(12),
        "{:?}",
        killed.elapsed()
    );
}

fn with_cert(c: &Config, name: &str, rsa_pss: bool) -> Arc<Config> {
    Arc::new(Config {
        credentials: cert_creds(name, rsa_pss),
        ..c.clone()
    })
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn certificates_ecdsa_and_rsa_both_ways() {
    for (ours, theirs, pss) in [
        ("gw-o-p256", "gw-s-p384", false),
        ("gw-o-rsa", "gw-s-rsa", false),
        ("gw-o-rsa", "gw-s-p384", true),
    ] {
        let lab = Lab::new(&Charon {
            cert: Some(theirs),
            ..Charon::default()
        });
        let psk_config = config(
            "aes256gcm16-prfsha256-ecp256",
            "aes256gcm16",
            PSK,
            no_rekeys(),
        );
        let cfg = with_cert(&psk_config, ours, pss);
        let out = run(&lab, plan(cfg.clone(), 3, 20));
        assert!(
            out.established,
            "{ours} -> {theirs}: {:?}\n{}",
            out.log,
            lab.log()
        );
        assert_eq!(out.replies, 3, "{ours} -> {theirs}: {:?}", out.log);
        assert!(out.deleted);
        let log = lab.log();
        assert!(
            log.contains("authentication of 'gw-o.interop' with"),
            "{log}"
        );
        // And strongSwan initiating with its certificate.
        let out = answer_strongswan(&lab, plan(cfg, 3, 20));
        assert_eq!(out.replies, 3, "{theirs} -> {ours}: {:?}", out.log);
    }
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn strongswan_refuses_our_expired_certificate() {
    let lab = Lab::new(&Charon {
        cert: Some("gw-s-p384"),
        ..Charon::default()
    });
    let psk_config = config(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        PSK,
        no_rekeys(),
    );
    let out = run(
        &lab,
        plan(with_cert(&psk_config, "gw-o-expired", false), 1, 15),
    );
    assert!(!out.established);
    assert!(
        matches!(&out.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("refused")),
        "{:?}",
        out.down
    );
    let log = lab.log();
    assert!(log.contains("N(AUTH_FAILED)"), "{log}");
}

#[test]
#[ignore = "needs root and strongSwan (CI installs it)"]
fn rsa_certificates_in_fragments_both_ways() {
    let lab = Lab::new(&Charon {
        cert: Some("gw-s-rsa"),
        fragment_size: 600,
        ..Charon::default()
    });
    let psk_config = config(
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
        PSK,
        no_rekeys(),
    );
    let cfg = Arc::new(Config {
        fragment_size: Some(500),
        ..(*with_cert(&psk_config, "gw-o-rsa", false)).clone()
    });
    let out = run(&lab, plan(cfg, 3, 20));
    assert_eq!(out.replies, 3, "{:?}\n{}", out.log, lab.log());
    let log = lab.log();
    assert!(
        log.contains("received fragment #1"),
        "strongSwan reassembled ours:\n{log}"
    );
    assert!(
        log.contains("splitting IKE message"),
        "strongSwan fragmented its own:\n{log}"
    );
}
