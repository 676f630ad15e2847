//! CREATE_CHILD_SA in memory: Child SA rekeys (with and without PFS,
//! started by either side), IKE SA rekeys (either side), timers that
//! rekey on their own while traffic flows without a single packet lost,
//! simultaneous rekeys, and Child SA deletes.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

mod common;
use common::*;

use std::time::Duration;

use proto_ikev2::{Config, EspProposal, Phase};

fn with_esp(esp: &str) -> Config {
    let mut c = gcm();
    c.esp_proposals = vec![EspProposal::parse(esp).unwrap()];
    c
}

fn quiet_timers(c: &mut Config) {
    c.timers.child_rekey = None;
    c.timers.ike_rekey = None;
}

fn pair(esp: &str) -> Pair {
    let mut ca = with_esp(esp);
    quiet_timers(&mut ca);
    let cb = mirror(&ca);
    established_from(ca, cb)
}

fn traffic_both_ways(p: &mut Pair, tag: u8) {
    assert!(
        esp_delivers(&mut p.ea, &mut p.eb, tag),
        "A -> B lost ({tag})"
    );
    assert!(
        esp_delivers(&mut p.eb, &mut p.ea, tag),
        "B -> A lost ({tag})"
    );
}

#[test]
fn child_rekeys_from_either_side_with_and_without_pfs() {
    for esp in [
        "aes256gcm16",
        "aes256gcm16-ecp256",
        "aes128-sha256-x25519-esn",
    ] {
        for initiator_rekeys in [true, false] {
            let mut p = pair(esp);
            traffic_both_ways(&mut p, 1);
            let old_a = p.ea.child.as_ref().unwrap().spi_in;
            let old_b = p.eb.child.as_ref().unwrap().spi_in;
            let now = p.now;
            if initiator_rekeys {
                p.a.rekey_child(now, old_a);
            } else {
                p.b().rekey_child(now, old_b);
            }
            p.pump();
            assert_eq!((p.ea.rekeyed, p.eb.rekeyed), (1, 1), "{esp}");
            assert_eq!(
                (p.ea.deleted_children, p.eb.deleted_children),
                (1, 1),
                "{esp}"
            );
            let (ca, cb) = (p.ea.child.as_ref().unwrap(), p.eb.child.as_ref().unwrap());
            assert_eq!(ca.spi_out, cb.spi_in);
            assert_eq!(ca.spi_in, cb.spi_out);
            assert_ne!(ca.spi_in, old_a);
            assert_eq!(
                ca.suite.dh.is_some(),
                esp.contains("ecp256") || esp.contains("x25519")
            );
            assert_eq!(p.a.child_spis().len(), 1);
            assert_eq!(p.b().child_spis().len(), 1);
            assert!(!p.ea.inbound.contains_key(&old_a), "old SA removed");
            traffic_both_ways(&mut p, 2);
        }
    }
}

#[test]
fn ike_rekeys_from_either_side_and_the_new_sa_works() {
    for initiator_rekeys in [true, false] {
        let mut p = pair("aes256gcm16");
        let before = p.a.spis();
        let now = p.now;
        if initiator_rekeys {
            p.a.rekey_ike(now);
        } else {
            p.b().rekey_ike(now);
        }
        p.pump();
        assert_eq!((p.ea.ike_rekeyed, p.eb.ike_rekeyed), (1, 1));
        let after = p.a.spis();
        assert_ne!(after.0, before.0);
        assert_ne!(after.1, before.1);
        assert_eq!(p.b().spis(), after, "both sides agree on the new SPIs");
        assert!(p.ea.down.is_none() && p.eb.down.is_none());
        // The Child SA moved along, and the new IKE SA's keys agree:
        // a Child SA rekey and a liveness check run over it.
        traffic_both_ways(&mut p, 3);
        let spi = p.ea.child.as_ref().unwrap().spi_in;
        let now = p.now;
        p.a.rekey_child(now, spi);
        p.pump();
        assert_eq!(p.ea.rekeyed, 1);
        traffic_both_ways(&mut p, 4);
        p.run_timers(Duration::from_secs(70));
        assert_eq!(p.a.phase(), Phase::Established);
        assert!(p.ea.down.is_none());
    }
}

#[test]
fn timers_rekey_everything_while_traffic_flows_without_loss() {
    let mut ca = with_esp("aes128gcm16-x25519");
    ca.timers.child_rekey = Some(Duration::from_secs(10));
    ca.timers.ike_rekey = Some(Duration::from_secs(25));
    let mut cb = mirror(&ca);
    // The responder rekeys on its own clock too, a little later.
    cb.timers.child_rekey = Some(Duration::from_secs(14));
    cb.timers.ike_rekey = Some(Duration::from_secs(37));
    let mut p = established_from(ca, cb);
    for second in 0..120u32 {
        p.run_timers(Duration::from_secs(1));
        traffic_both_ways(&mut p, second as u8);
    }
    assert!(
        p.ea.rekeyed + p.eb.rekeyed >= 16,
        "{} {}",
        p.ea.rekeyed,
        p.eb.rekeyed
    );
    assert!(p.ea.ike_rekeyed >= 3, "{}", p.ea.ike_rekeyed);
    assert_eq!(p.a.child_spis().len(), 1, "old SAs all deleted");
    assert_eq!(p.b().child_spis().len(), 1);
    assert_eq!(p.ea.inbound.len(), 1);
    assert!(p.ea.down.is_none() && p.eb.down.is_none());
}

#[test]
fn simultaneous_rekeys_settle_on_one_child_sa() {
    let mut p = pair("aes256gcm16");
    let spi_a = p.ea.child.as_ref().unwrap().spi_in;
    let spi_b = p.eb.child.as_ref().unwrap().spi_in;
    let now = p.now;
    // Both start before either hears the other.
    p.a.rekey_child(now, spi_a);
    p.b().rekey_child(now, spi_b);
    p.run_timers(Duration::from_secs(20));
    assert!(p.ea.rekeyed >= 1 && p.eb.rekeyed >= 1);
    assert_eq!(p.a.child_spis().len(), 1, "{:?}", p.a.child_spis());
    assert_eq!(p.b().child_spis().len(), 1);
    let (a, b) = (p.a.child_spis()[0], p.b().child_spis()[0]);
    assert_eq!((a.0, a.1), (b.1, b.0));
    traffic_both_ways(&mut p, 9);
}

#[test]
fn child_sa_deletes_from_either_side() {
    for initiator_deletes in [true, false] {
        let mut p = pair("aes256gcm16");
        let now = p.now;
        if initiator_deletes {
            let spi = p.ea.child.as_ref().unwrap().spi_in;
            p.a.delete_child(now, spi);
        } else {
            let spi = p.eb.child.as_ref().unwrap().spi_in;
            p.b().delete_child(now, spi);
        }
        p.pump();
        assert_eq!((p.ea.deleted_children, p.eb.deleted_children), (1, 1));
        assert!(p.a.child_spis().is_empty() && p.b().child_spis().is_empty());
        assert!(p.ea.inbound.is_empty() && p.eb.inbound.is_empty());
        assert_eq!(p.a.phase(), Phase::Established, "the IKE SA stays");
    }
}
