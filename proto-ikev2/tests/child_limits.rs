//! A peer cannot make us hold Child SAs without bound: per IKE SA, and
//! per configuration across all its IKE SAs (a vrouter tunnel), the next
//! one is answered NO_ADDITIONAL_SAS; rekeys still go through at the
//! limit, and every place is given back when SAs go.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

mod common;
use common::*;

use proto_ikev2::wire::consts::notify;
use proto_ikev2::{ChildBudget, Config};

fn quiet(mut c: Config) -> Config {
    c.timers.child_rekey = None;
    c.timers.ike_rekey = None;
    c
}

#[test]
fn an_ike_sa_holds_no_more_child_sas_than_its_limit() {
    let ca = quiet(gcm());
    let mut cb = mirror(&ca);
    cb.child_limits.per_ike_sa = 3;
    let mut p = established_from(ca, cb);
    assert_eq!(p.b().child_spis().len(), 1);
    for _ in 0..4 {
        let now = p.now;
        p.a.create_child(now);
        p.pump();
    }
    assert_eq!(p.b().child_spis().len(), 3, "the limit held");
    assert_eq!(p.a.child_spis().len(), 3);
    assert_eq!(p.ea.child_failed, Some(notify::NO_ADDITIONAL_SAS));
    // A rekey at the limit still goes through (the old SA goes next).
    let (spi, _) = p.a.child_spis()[0];
    let now = p.now;
    p.a.rekey_child(now, spi);
    p.pump();
    assert_eq!(p.ea.rekeyed, 1);
    assert_eq!(p.b().child_spis().len(), 3);
    assert!(esp_delivers(&mut p.ea, &mut p.eb, 7));
}

#[test]
fn a_configuration_bounds_child_sas_across_its_ike_sas() {
    let budget = ChildBudget::new(3);
    let ca = quiet(gcm());
    let mut cb = mirror(&ca);
    cb.child_limits.per_config = Some(budget.clone());
    // Two IKE SAs of the same configuration (say, two peers of one tunnel).
    let mut one = established_from(ca.clone(), cb.clone());
    let mut two = established_from(ca, cb);
    assert_eq!(budget.in_use(), 2);
    for p in [&mut one, &mut two] {
        for _ in 0..2 {
            let now = p.now;
            p.a.create_child(now);
            p.pump();
        }
    }
    let held = one.b().child_spis().len() + two.b().child_spis().len();
    assert_eq!(held, 3, "three across both");
    assert_eq!(budget.in_use(), 3);
    assert_eq!(two.ea.child_failed, Some(notify::NO_ADDITIONAL_SAS));
    // Places come back when an IKE SA goes.
    let now = one.now;
    one.a.delete(now);
    one.pump();
    assert_eq!(budget.in_use(), two.b().child_spis().len());
    let now = two.now;
    two.a.create_child(now);
    two.pump();
    assert!(two.b().child_spis().len() >= 2, "room again");
}
