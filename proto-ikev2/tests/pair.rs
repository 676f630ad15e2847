//! Our initiator against our responder in memory, with a virtual clock, a
//! link that can drop or tamper, and an optional NAT in between: every
//! IKE/ESP transform combination, wrong keys and identities, proposals in
//! common or not, a DH group guessed wrong, NAT traversal, loss,
//! liveness checks and deletes. Each established pair then passes ESP
//! packets both ways through proto-esp with the keys IKE agreed.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

mod common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use proto_ikev2::{Credentials, DownReason, EspProposal, Identity, IkeProposal, Phase};
use zeroize::Zeroizing;

#[test]
fn every_transform_combination_establishes_and_carries_esp() {
    let cases = [
        ("aes256gcm16-prfsha256-ecp256", "aes256gcm16"),
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("chacha20poly1305-prfsha256-x25519", "chacha20poly1305"),
        ("aes256-sha256-modp2048", "aes256-sha256"),
        ("aes128-sha384-prfsha384-ecp384", "aes128-sha384-esn"),
        ("aes256-sha512-ecp256", "aes256-sha512"),
        ("aes256gcm16-prfsha512-ecp384", "aes256gcm16-esn"),
    ];
    for (ike, esp) in cases {
        let p = established(ike, esp);
        let (id, nat_l, nat_r) = p.ea.up.clone().unwrap();
        assert_eq!(id, Identity::parse("@gw.example"));
        assert!(!nat_l && !nat_r);
        assert_eq!(p.eb.up.as_ref().unwrap().0, Identity::parse("10.0.0.1"));
        let (ca, cb) = (p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
        assert_eq!(ca.local_ts, vec![subnet("10.1.0.0/16")]);
        assert_eq!(ca.remote_ts, vec![subnet("10.2.0.0/16")]);
        assert_eq!(cb.local_ts, ca.remote_ts);
        assert!(!ca.encap);
        esp_round_trip(ca, cb);
        // Four datagrams: two exchanges, nothing retransmitted.
        assert_eq!(p.datagrams, 4, "{ike}");
    }
}

#[test]
fn wrong_psk_fails_on_both_sides() {
    let ca = config(
        "10.0.0.1",
        "@gw.example",
        "right",
        "aes256gcm16-prfsha256-ecp256",
        "aes256gcm16",
    );
    let mut cb = mirror(&ca);
    cb.credentials = Credentials::Psk(Zeroizing::new(b"wrong".to_vec()));
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert!(
        matches!(&p.eb.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("does not verify")),
        "{:?}",
        p.eb.down
    );
    assert!(
        matches!(&p.ea.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("refused")),
        "{:?}",
        p.ea.down
    );
    assert!(p.ea.child.is_none() && p.eb.child.is_none());
}

#[test]
fn wrong_identity_is_named_in_the_reason() {
    let ca = gcm();
    let mut cb = mirror(&ca);
    cb.remote_id = Some(Identity::parse("10.0.0.99"));
    let mut p = Pair::new(ca.clone(), cb);
    p.pump();
    assert!(
        matches!(&p.eb.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("10.0.0.1") && w.contains("10.0.0.99")),
        "{:?}",
        p.eb.down
    );
    // The initiator expecting another responder identity refuses too.
    let mut ca2 = ca.clone();
    ca2.remote_id = Some(Identity::parse("@other.example"));
    let mut p = Pair::new(ca2, mirror(&ca));
    p.pump();
    assert!(
        matches!(&p.ea.down, Some(DownReason::AuthenticationFailed(w)) if w.contains("@gw.example")),
        "{:?}",
        p.ea.down
    );
}

#[test]
fn no_proposal_in_common_is_refused_with_the_notify() {
    let ca = gcm();
    let mut cb = mirror(&ca);
    cb.ike_proposals = vec![IkeProposal::parse("chacha20poly1305-prfsha512-x25519").unwrap()];
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert_eq!(p.refusals, vec![Some(14)]);
    assert_eq!(p.ea.down, Some(DownReason::PeerRefused(14)));
}

#[test]
fn child_proposal_mismatch_keeps_the_ike_sa() {
    let ca = gcm();
    let mut cb = mirror(&ca);
    cb.esp_proposals = vec![EspProposal::parse("chacha20poly1305").unwrap()];
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert!(p.ea.up.is_some() && p.eb.up.is_some());
    assert_eq!(p.ea.child_failed, Some(14));
    assert_eq!(p.eb.child_failed, Some(14));
}

#[test]
fn traffic_selectors_are_narrowed_and_disjoint_ones_refused() {
    let ca = gcm();
    let mut cb = mirror(&ca);
    cb.remote_ts = vec![subnet("10.1.2.0/24")];
    let mut p = Pair::new(ca.clone(), cb);
    p.pump();
    let child = p.ea.child.as_ref().unwrap();
    assert_eq!(child.local_ts, vec![subnet("10.1.2.0/24")]);
    assert_eq!(
        p.eb.child.as_ref().unwrap().remote_ts,
        vec![subnet("10.1.2.0/24")]
    );

    let mut cb = mirror(&ca);
    cb.remote_ts = vec![subnet("192.168.0.0/24")];
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert_eq!(p.ea.child_failed, Some(38), "TS_UNACCEPTABLE");
}

#[test]
fn a_wrong_dh_guess_is_corrected_by_invalid_ke_payload() {
    let ca = config(
        "10.0.0.1",
        "@gw.example",
        "k",
        "aes256gcm16-prfsha256-ecp256-x25519",
        "aes256gcm16",
    );
    let mut cb = mirror(&ca);
    cb.ike_proposals = vec![IkeProposal::parse("aes256gcm16-prfsha256-x25519").unwrap()];
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert_eq!(p.refusals, vec![Some(17)], "INVALID_KE_PAYLOAD first");
    assert_eq!(p.a.phase(), Phase::Established);
    assert_eq!(
        p.a.suite().unwrap().dh,
        proto_ikev2::crypto::DhGroup::Curve25519
    );
    esp_round_trip(p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
}

#[test]
fn a_nat_is_detected_and_both_sides_float_to_4500() {
    let ca = config(
        "10.0.0.1",
        "@gw.example",
        "k",
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16",
    );
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb).with_nat();
    p.pump();
    assert_eq!(p.a.phase(), Phase::Established);
    let (_, nat_local, nat_remote) = p.ea.up.clone().unwrap();
    assert!(nat_local && !nat_remote, "the initiator is behind the NAT");
    let (_, b_nat_local, b_nat_remote) = p.eb.up.clone().unwrap();
    assert!(!b_nat_local && b_nat_remote);
    assert_eq!(p.a.local().port(), 4500);
    assert_eq!(
        p.b().remote(),
        SocketAddr::new(NAT_IP.into(), nat_port(4500))
    );
    let (ca, cb) = (p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
    assert!(ca.encap && cb.encap);
    esp_round_trip(ca, cb);
}

#[test]
fn forced_encapsulation_floats_without_a_nat() {
    let mut ca = gcm();
    ca.force_encap = true;
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb);
    p.pump();
    assert_eq!(p.a.phase(), Phase::Established);
    assert_eq!(p.a.remote().port(), 4500);
    assert!(p.ea.child.as_ref().unwrap().encap && p.eb.child.as_ref().unwrap().encap);
}

#[test]
fn loss_is_repaired_by_retransmission() {
    // Drop every other datagram in each direction for the first eight.
    let ca = config(
        "10.0.0.1",
        "@gw.example",
        "k",
        "aes256-sha256-modp2048",
        "aes256-sha256",
    );
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb);
    let mut n = 0;
    p.filter = Box::new(move |_, _| {
        n += 1;
        n > 8 || n % 2 == 0
    });
    p.run_timers(Duration::from_secs(60));
    assert_eq!(p.a.phase(), Phase::Established, "{:?}", p.ea.down);
    assert_eq!(p.b().phase(), Phase::Established);
    assert!(p.datagrams > 4);
    esp_round_trip(p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
}

#[test]
fn tampered_messages_are_dropped_and_the_retransmission_wins() {
    let ca = config(
        "10.0.0.1",
        "@gw.example",
        "k",
        "chacha20poly1305-prfsha256-x25519",
        "chacha20poly1305",
    );
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb);
    let mut n = 0;
    p.filter = Box::new(move |from_a, bytes| {
        // Flip a bit in the first IKE_AUTH request (A's second datagram).
        if from_a {
            n += 1;
            if n == 2 {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x40;
            }
        }
        true
    });
    p.run_timers(Duration::from_secs(30));
    assert_eq!(p.a.phase(), Phase::Established, "{:?}", p.ea.down);
    assert!(p.eb.down.is_none());
}

#[test]
fn a_silent_peer_is_declared_dead() {
    let mut p = established_from(gcm(), mirror(&gcm()));
    let sent_before = p.datagrams;
    p.filter = Box::new(|from_a, _| from_a); // B's answers are lost
                                             // DPD after 30 s idle, then 5 retransmissions at 4, 8, 16, 32, 64 s.
    p.run_timers(Duration::from_secs(30 + 2 + 4 + 8 + 16 + 32 + 64 + 5));
    assert_eq!(p.ea.down, Some(DownReason::NoResponse));
    assert_eq!(p.ea.deleted_children, 1, "the Child SA goes with it");
    assert!(p.datagrams > sent_before + 5);
}

#[test]
fn liveness_checks_keep_a_quiet_pair_up() {
    let mut p = established_from(gcm(), mirror(&gcm()));
    p.run_timers(Duration::from_secs(300));
    assert!(p.ea.down.is_none() && p.eb.down.is_none());
    assert_eq!(p.a.phase(), Phase::Established);
    assert!(
        p.datagrams >= 4 + 2 * 9,
        "DPD exchanges every 30 s: {}",
        p.datagrams
    );
}

#[test]
fn delete_from_either_side_ends_both() {
    for initiator_deletes in [true, false] {
        let ca = gcm();
        let cb = mirror(&ca);
        let mut p = established_from(ca, cb);
        let now = p.now;
        if initiator_deletes {
            p.a.delete(now);
        } else {
            p.b().delete(now);
        }
        p.pump();
        let (us, them) = if initiator_deletes {
            (&p.ea, &p.eb)
        } else {
            (&p.eb, &p.ea)
        };
        assert_eq!(us.down, Some(DownReason::Deleted));
        assert_eq!(them.down, Some(DownReason::DeletedByPeer));
        assert_eq!(us.deleted_children, 1);
        assert_eq!(them.deleted_children, 1);
        assert_eq!(p.a.phase(), Phase::Closed);
        assert_eq!(p.b().phase(), Phase::Closed);
    }
}

#[test]
fn a_half_open_responder_expires() {
    let ca = gcm();
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb);
    let mut n = 0;
    p.filter = Box::new(move |from_a, _| {
        // Only IKE_SA_INIT reaches B; A never hears back after that.
        n += 1;
        from_a && n == 1
    });
    p.run_timers(Duration::from_secs(31));
    assert_eq!(p.eb.down, Some(DownReason::HalfOpenExpired));
}

#[test]
fn garbage_never_disturbs_an_established_sa() {
    let mut p = established_from(gcm(), mirror(&gcm()));
    let (spi_i, spi_r) = p.a.spis();
    let mut seed = 7u64;
    for len in 0..600usize {
        let mut m: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        // Half of them carry the right SPIs and a plausible header.
        if len >= 28 && len % 2 == 0 {
            m[..8].copy_from_slice(&spi_i.to_be_bytes());
            m[8..16].copy_from_slice(&spi_r.to_be_bytes());
            m[17] = 0x20;
            m[24..28].copy_from_slice(&(len as u32).to_be_bytes());
        }
        let now = p.now;
        p.a.handle_input(now, B, A, &m);
        p.b().handle_input(now, A, B, &m);
    }
    p.pump();
    assert!(p.ea.down.is_none() && p.eb.down.is_none());
    assert_eq!(p.a.phase(), Phase::Established);
    // Still working: a liveness exchange completes.
    p.run_timers(Duration::from_secs(40));
    assert_eq!(p.a.phase(), Phase::Established);
}

#[test]
fn an_unknown_critical_payload_is_refused_with_its_type() {
    use proto_ikev2::wire::{Message, Writer};
    let now = p_now();
    let cfg = std::sync::Arc::new(gcm());
    let mut i = proto_ikev2::IkeSa::initiate(now, cfg.clone(), A, B, [5; 32]);
    let first = i.poll_transmit().unwrap().contents;
    let m = Message::parse(&first).unwrap();
    let mut w = Writer::message(m.header);
    for p in &m.payloads {
        w.push(p);
    }
    w.push_raw(200, true, b"from the future");
    let with_critical = w.finish();
    let r = proto_ikev2::IkeSa::respond(
        now,
        std::sync::Arc::new(mirror(&gcm())),
        B,
        A,
        &with_critical,
        [6; 32],
    )
    .unwrap_err();
    assert_eq!(r.notify, Some(1), "UNSUPPORTED_CRITICAL_PAYLOAD");
    let reply = r.reply.unwrap().contents;
    let m = Message::parse(&reply).unwrap();
    let n = m.notifies(1).next().unwrap();
    assert_eq!(n.data, &[200]);
    // The same payload marked non-critical is skipped (RFC 7296 §2.5).
    let mut w = Writer::message(Message::parse(&first).unwrap().header);
    for p in &Message::parse(&first).unwrap().payloads {
        w.push(p);
    }
    w.push_raw(200, false, b"from the future");
    let skipped = w.finish();
    assert!(proto_ikev2::IkeSa::respond(
        now,
        std::sync::Arc::new(mirror(&gcm())),
        B,
        A,
        &skipped,
        [6; 32]
    )
    .is_ok());
}

#[allow(clippy::disallowed_methods)] // a clock origin for a test without the pair
fn p_now() -> std::time::Instant {
    std::time::Instant::now()
}

#[test]
fn duplicates_get_the_same_answer_and_stale_ids_none() {
    let mut p = established_from(gcm(), mirror(&gcm()));
    // A liveness check from A, delivered by hand.
    let later = p.now + Duration::from_secs(31);
    p.a.handle_timeout(later);
    let request = p.a.poll_transmit().unwrap();
    let mut answers = Vec::new();
    for _ in 0..3 {
        p.b().handle_input(
            later,
            request.source,
            request.destination,
            &request.contents,
        );
        answers.push(p.b().poll_transmit().unwrap().contents);
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "a retransmission gets the same bytes"
    );
    // A request whose message id is out of the window: no answer.
    let mut stale = request.contents.clone();
    stale[20..24].copy_from_slice(&7u32.to_be_bytes());
    p.b()
        .handle_input(later, request.source, request.destination, &stale);
    assert!(p.b().poll_transmit().is_none());
    // A response for a request A never sent: ignored; the real one completes.
    let mut wrong = answers[0].clone();
    wrong[20..24].copy_from_slice(&9u32.to_be_bytes());
    p.a.handle_input(later, B, A, &wrong);
    assert!(p.a.poll_timeout().is_some());
    p.a.handle_input(later, B, A, &answers[0]);
    p.now = later;
    p.run_timers(Duration::from_secs(10));
    assert_eq!(p.a.phase(), Phase::Established);
    assert!(p.ea.down.is_none());
}

#[test]
fn the_side_behind_a_nat_sends_keepalives() {
    let mut ca = gcm();
    ca.timers.dpd = None;
    let cb = mirror(&ca);
    let mut p = Pair::new(ca, cb).with_nat();
    let counts = std::rc::Rc::new(std::cell::RefCell::new((0usize, 0usize)));
    let seen = counts.clone();
    p.filter = Box::new(move |from_a, bytes| {
        if bytes[..] == [0xff] {
            let mut c = seen.borrow_mut();
            if from_a {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        true
    });
    p.pump();
    assert_eq!(p.a.phase(), Phase::Established);
    p.run_timers(Duration::from_secs(61));
    assert_eq!(
        *counts.borrow(),
        (3, 0),
        "every 20 s from the NATed side only"
    );
    assert_eq!(p.a.phase(), Phase::Established);
}

#[test]
fn negotiated_selectors_drive_the_spd() {
    use proto_esp::spd::Spd;
    let mut cb = mirror(&gcm());
    cb.remote_ts = vec![subnet("10.1.2.0/24")];
    let p = established_from(gcm(), cb);
    let (ca, cbs) = (p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
    let packet = |src: [u8; 4], dst: [u8; 4]| {
        let mut ip = vec![0u8; 28];
        ip[0] = 0x45;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        ip
    };
    let mut spd_a = Spd::default();
    spd_a.push(ca.policy(ca.spi_out));
    assert_eq!(
        spd_a.outbound(&packet([10, 1, 2, 5], [10, 2, 0, 7])),
        Some(&ca.spi_out)
    );
    assert_eq!(
        spd_a.outbound(&packet([10, 1, 3, 5], [10, 2, 0, 7])),
        None,
        "narrowed away"
    );
    let mut spd_b = Spd::default();
    spd_b.push(cbs.policy(cbs.spi_in));
    assert!(spd_b.inbound_allowed(&cbs.spi_in, &packet([10, 1, 2, 5], [10, 2, 0, 7])));
    assert!(!spd_b.inbound_allowed(&cbs.spi_in, &packet([10, 1, 9, 5], [10, 2, 0, 7])));
}

/// Every IKE suite issue 6 lists (ENCR x INTEG x PRF x DH: 108), each with
/// one of the 18 ESP suites in turn so that every ESP suite is used too.
#[test]
fn the_whole_transform_matrix() {
    let aead = ["aes128gcm16", "aes256gcm16", "chacha20poly1305"];
    let cbc = ["aes128", "aes256"];
    let integ = ["sha256", "sha384", "sha512"];
    let prf = ["prfsha256", "prfsha384", "prfsha512"];
    let dh = ["ecp256", "ecp384", "x25519", "modp2048"];
    let mut ike = Vec::new();
    for d in dh {
        for f in prf {
            for e in aead {
                ike.push(format!("{e}-{f}-{d}"));
            }
            for e in cbc {
                for i in integ {
                    ike.push(format!("{e}-{i}-{f}-{d}"));
                }
            }
        }
    }
    let mut esp = Vec::new();
    for n in ["noesn", "esn"] {
        for e in aead {
            esp.push(format!("{e}-{n}"));
        }
        for e in cbc {
            for i in integ {
                esp.push(format!("{e}-{i}-{n}"));
            }
        }
    }
    assert_eq!((ike.len(), esp.len()), (108, 18));
    for (n, ike) in ike.iter().enumerate() {
        let esp = &esp[n % esp.len()];
        let p = established(ike, esp);
        esp_round_trip(p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
    }
}
