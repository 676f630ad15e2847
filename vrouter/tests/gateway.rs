//! Gateways in memory: a tunnel comes up and carries packets between
//! tenants' TUN devices both ways; two tenants whose peers use the same
//! subnets each get only their own traffic; a packet no policy covers,
//! or one a peer sends from outside its selectors, is dropped and counted.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

use std::time::Instant;

use proto_ikev2::Transmit;
use vrouter::config::Settings;
use vrouter::gateway::{Gateway, Output};

fn settings(listen: &str, tenants: &[&str], tunnels: &str) -> Settings {
    let mut text = format!("[vrouter]\nlisten = \"{listen}\"\n");
    // Each tenant its own routing table: two may route the same subnets.
    for (table, t) in (100..).zip(tenants) {
        text += &format!("[[tenant]]\nname = \"{t}\"\ntun = \"vr-{t}\"\ntable = {table}\n");
    }
    Settings::parse(&(text + tunnels)).unwrap()
}

#[allow(clippy::too_many_arguments)] // the fields of one [[tunnel]] table
fn tunnel(
    id: &str,
    tenant: &str,
    remote: &str,
    initiate: bool,
    local: &str,
    remote_net: &str,
    lid: &str,
    rid: &str,
) -> String {
    format!(
        "[[tunnel]]\nid = \"{id}\"\ntenant = \"{tenant}\"\nremote = \"{remote}\"\nlocal_id = \"{lid}\"\nremote_id = \"{rid}\"\n\
         auth = {{ method = \"psk\", psk = \"psk-of-{id}\" }}\nlocal_subnets = [\"{local}\"]\nremote_subnets = [\"{remote_net}\"]\ninitiate = {initiate}\n"
    )
}

/// B's (192.0.2.10, 10.88.2.0/24) tunnel `id` for `tenant`, answering the
/// site at `peer` (identity `peer_id`, subnet `peer_net`).
fn b_side(id: &str, tenant: &str, peer: &str, peer_net: &str, peer_id: &str) -> String {
    tunnel(
        id,
        tenant,
        peer,
        false,
        "10.88.2.0/24",
        peer_net,
        "@b",
        peer_id,
    )
}

/// B with tenant acme (site @a1 at 192.0.2.1, 10.9.0.0/24) and tenant
/// globex (site @a2 at `globex_peer`, `globex_net`).
fn b_with_two_tenants(globex_peer: &str, globex_net: &str) -> Settings {
    settings(
        "192.0.2.10",
        &["acme", "globex"],
        &(b_side("acme-1", "acme", "192.0.2.1", "10.9.0.0/24", "@a1")
            + &b_side("globex-1", "globex", globex_peer, globex_net, "@a2")),
    )
}

/// A site gateway at `me` (identity `id`, subnet `net`) that initiates to
/// B (192.0.2.10, 10.88.2.0/24) with the PSK of B's tunnel `of`.
fn site(me: &str, id: &str, of: &str, net: &str) -> Settings {
    settings(
        me,
        &["site"],
        &tunnel(
            "to-b",
            "site",
            "192.0.2.10",
            true,
            net,
            "10.88.2.0/24",
            id,
            "@b",
        )
        .replace("psk-of-to-b", &format!("psk-of-{of}")),
    )
}

/// An IPv4 UDP packet.
fn packet(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[3] = 40;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[28..].fill(tag);
    p
}

struct Net {
    now: Instant,
    gws: Vec<Gateway>,
    /// TUN packets each gateway emitted: (gateway, tenant, packet).
    tun: Vec<(usize, usize, Vec<u8>)>,
    /// How many ESP packets went in UDP, and how many raw.
    esp_in_udp: usize,
    esp_raw: usize,
}

impl Net {
    /// Gateway `i` seeded with `[i + 1; 32]`, not started.
    fn new(settings: Vec<Settings>) -> Self {
        let gws = (1u8..)
            .zip(settings)
            .map(|(seed, s)| Gateway::new(s, [seed; 32]));
        Net {
            now: now(),
            gws: gws.collect(),
            tun: vec![],
            esp_in_udp: 0,
            esp_raw: 0,
        }
    }

    /// All started and pumped until quiet.
    fn started(settings: Vec<Settings>) -> Self {
        let mut net = Self::new(settings);
        for g in &mut net.gws {
            g.start(net.now);
        }
        net.pump();
        net
    }

    /// The gateway listening on `addr`.
    fn at(&self, addr: std::net::IpAddr) -> usize {
        self.gws.iter().position(|g| g.listen() == addr).unwrap()
    }

    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.gws.len() {
                while let Some(o) = self.gws[i].poll_output() {
                    moved = true;
                    match o {
                        Output::Tun { tenant, packet } => self.tun.push((i, tenant, packet)),
                        Output::Udp(Transmit {
                            source,
                            destination,
                            contents,
                            ..
                        }) => {
                            let to = self.at(destination.ip());
                            // ESP in UDP starts with a non-zero SPI.
                            let esp = destination.port() == 4500 && contents[..4] != [0; 4];
                            self.esp_in_udp += usize::from(esp && contents.len() > 1);
                            self.gws[to].handle_udp(self.now, source, destination, &contents);
                        }
                        Output::Esp {
                            destination,
                            contents,
                        } => {
                            let to = self.at(destination);
                            self.esp_raw += 1;
                            self.gws[to].handle_esp(&contents);
                        }
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }
}

/// B (gateway 0) answers from each tenant: acme's answer reaches only
/// site 1, globex's only site 2.
fn b_answers_reach_only_their_own_sites(net: &mut Net) {
    net.tun.clear();
    net.gws[0].handle_tun(0, &packet([10, 88, 2, 7], [10, 9, 0, 5], 3));
    net.gws[0].handle_tun(1, &packet([10, 88, 2, 7], [10, 9, 0, 5], 4));
    net.pump();
    net.tun.sort();
    assert_eq!(
        net.tun,
        vec![
            (1, 0, packet([10, 88, 2, 7], [10, 9, 0, 5], 3)),
            (2, 0, packet([10, 88, 2, 7], [10, 9, 0, 5], 4))
        ]
    );
    net.tun.clear();
}

#[allow(clippy::disallowed_methods)] // a test's clock origin
fn now() -> Instant {
    Instant::now()
}

#[test]
fn tenants_with_the_same_subnets_stay_apart() {
    // B serves two tenants; their sites (A1, A2) both use 10.9.0.0/24.
    let b = b_with_two_tenants("192.0.2.2", "10.9.0.0/24");
    let a1 = site("192.0.2.1", "@a1", "acme-1", "10.9.0.0/24");
    let a2 = site("192.0.2.2", "@a2", "globex-1", "10.9.0.0/24");
    let mut net = Net::started(vec![b, a1, a2]);
    assert!(
        net.gws[0].stats().iter().all(|s| s.up && s.child_sas == 1),
        "{}",
        net.gws[0].status()
    );

    // Each site sends to the same address behind B: each lands in its tenant.
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 1));
    net.gws[2].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 2));
    net.pump();
    net.tun.sort();
    assert_eq!(
        net.tun,
        vec![
            (0, 0, packet([10, 9, 0, 5], [10, 88, 2, 7], 1)),
            (0, 1, packet([10, 9, 0, 5], [10, 88, 2, 7], 2))
        ]
    );
    net.tun.clear();

    b_answers_reach_only_their_own_sites(&mut net);

    // Nothing covers this destination: dropped and counted.
    net.gws[0].handle_tun(0, &packet([10, 88, 2, 7], [172, 16, 0, 1], 5));
    assert_eq!(net.gws[0].drops().no_policy, 1);
    assert!(net.gws[0]
        .metrics()
        .contains("cvlan_vrouter_packets_dropped_total{reason=\"no_policy\"} 1\n"));
    // A site sending from outside its selectors gets nowhere.
    net.gws[1].handle_tun(0, &packet([10, 7, 0, 5], [10, 88, 2, 7], 6));
    net.pump();
    assert!(net.tun.is_empty());
    assert_eq!(net.gws[1].drops().no_policy, 1);

    let m = net.gws[0].metrics();
    assert!(
        m.contains("cvlan_vrouter_tunnels_active{tenant=\"acme\",type=\"ipsec\"} 1"),
        "{m}"
    );
    assert!(m.contains("cvlan_vrouter_child_sa_active 2"), "{m}");
    assert!(
        m.contains("cvlan_vrouter_bytes_in_total{tunnel=\"acme-1\"} 40"),
        "{m}"
    );
}

#[test]
fn a_reload_leaves_unchanged_tunnels_alone() {
    let acme = b_side("acme-1", "acme", "192.0.2.1", "10.9.0.0/24", "@a1");
    let globex = b_side("globex-1", "globex", "192.0.2.2", "10.9.0.0/24", "@a2");
    let initech = b_side("initech-1", "globex", "192.0.2.3", "10.7.0.0/24", "@a3");
    let b = settings("192.0.2.10", &["acme", "globex"], &(acme.clone() + &globex));
    let mut net = Net::new(vec![
        b,
        site("192.0.2.1", "@a1", "acme-1", "10.9.0.0/24"),
        site("192.0.2.2", "@a2", "globex-1", "10.9.0.0/24"),
        site("192.0.2.3", "@a3", "initech-1", "10.7.0.0/24"),
    ]);
    for g in &mut net.gws[..3] {
        g.start(net.now);
    }
    net.pump();
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 1));
    net.pump();
    assert_eq!(net.tun.len(), 1);
    net.tun.clear();

    // globex-1 goes, initech-1 comes, acme-1 stays as it was.
    let report = net.gws[0]
        .reload(
            net.now,
            settings(
                "192.0.2.10",
                &["acme", "globex"],
                &(acme.clone() + &initech),
            ),
        )
        .unwrap();
    assert_eq!(report, "reloaded: 1 kept, 1 removed or changed, 1 added\n");
    net.gws[3].start(net.now);
    net.pump();
    assert!(net.gws[1].stats()[0].up, "acme's peer never noticed");
    assert!(
        !net.gws[2].stats()[0].up,
        "globex's peer was told its tunnel went"
    );
    assert!(net.gws[3].stats()[0].up, "the new tunnel came up");
    let acme_stats = net.gws[0].stats()[0];
    assert!(
        acme_stats.up && acme_stats.packets_in == 1,
        "counters carried over: {acme_stats:?}"
    );
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 2));
    net.gws[3].handle_tun(0, &packet([10, 7, 0, 5], [10, 88, 2, 7], 3));
    net.pump();
    net.tun.sort();
    assert_eq!(
        net.tun,
        vec![
            (0, 0, packet([10, 9, 0, 5], [10, 88, 2, 7], 2)),
            (0, 1, packet([10, 7, 0, 5], [10, 88, 2, 7], 3))
        ]
    );

    // A changed tunnel (new PSK) is dropped and re-made; tenants are fixed.
    let changed = acme.replace("psk-of-acme-1", "a-new-psk-for-acme");
    let report = net.gws[0]
        .reload(
            net.now,
            settings("192.0.2.10", &["acme", "globex"], &(changed + &initech)),
        )
        .unwrap();
    assert_eq!(report, "reloaded: 1 kept, 1 removed or changed, 1 added\n");
    let e = net.gws[0]
        .reload(net.now, settings("192.0.2.10", &["acme"], &acme))
        .unwrap_err();
    assert!(e.contains("tenants changed"), "{e}");
}

#[test]
fn a_tunnel_taken_down_is_deleted_refused_and_comes_back_up() {
    // A initiates to B; B's operator takes the tunnel down, then up.
    let b = settings(
        "192.0.2.10",
        &["acme"],
        &b_side("site-a", "acme", "192.0.2.1", "10.9.0.0/24", "@a"),
    );
    let a = site("192.0.2.1", "@a", "site-a", "10.9.0.0/24");
    let mut net = Net::started(vec![b, a]);
    assert!(net.gws.iter().all(|g| g.stats()[0].up));
    let crosses = |net: &mut Net, tag: u8| {
        net.tun.clear();
        net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], tag));
        net.pump();
        net.tun.iter().any(|(g, _, p)| *g == 0 && p[28] == tag)
    };
    assert!(crosses(&mut net, 1));

    assert_eq!(
        net.gws[0].down(net.now, "nope"),
        Err("no tunnel \"nope\" in the configuration".into())
    );
    let said = net.gws[0].down(net.now, "site-a").unwrap();
    assert_eq!(said, "site-a: down (1 IKE SA deleted)\n");
    net.pump();
    assert!(!net.gws[1].stats()[0].up, "the peer was told");
    assert_eq!(net.gws[1].stats()[0].child_sas, 0);
    assert!(net.gws[0].status().contains("admin-down"));
    assert!(!crosses(&mut net, 2), "nothing crosses a tunnel taken down");

    // The peer tries again (its retry timer) and is not answered.
    net.now += std::time::Duration::from_secs(6);
    for g in &mut net.gws {
        g.handle_timeout(net.now);
    }
    net.pump();
    assert!(!net.gws[0].stats()[0].up && !net.gws[1].stats()[0].up);

    assert_eq!(net.gws[0].up(net.now, "site-a").unwrap(), "site-a: up\n");
    // We respond on this tunnel: it comes back when the peer retries.
    net.now += std::time::Duration::from_secs(6);
    for g in &mut net.gws {
        g.handle_timeout(net.now);
    }
    net.pump();
    for _ in 0..40 {
        if net.gws.iter().all(|g| g.stats()[0].up) {
            break;
        }
        net.now += std::time::Duration::from_secs(1);
        for g in &mut net.gws {
            g.handle_timeout(net.now);
        }
        net.pump();
    }
    assert!(net.gws.iter().all(|g| g.stats()[0].up), "back up");
    assert!(crosses(&mut net, 3));
}

#[test]
fn two_tunnels_from_one_peer_address_are_told_apart_by_identity() {
    // One site address (say, one NAT) reaches B as @a1 for tenant acme and
    // as @a2 for tenant globex; B picks each tunnel by that identity.
    let b = b_with_two_tenants("192.0.2.1", "10.7.0.0/24");
    let two = |id: &str, local_id: &str, net: &str, of: &str| {
        tunnel(
            id,
            "site",
            "192.0.2.10",
            true,
            net,
            "10.88.2.0/24",
            local_id,
            "@b",
        )
        .replace(&format!("psk-of-{id}"), &format!("psk-of-{of}"))
    };
    let a = settings(
        "192.0.2.1",
        &["site"],
        &(two("one", "@a1", "10.9.0.0/24", "acme-1")
            + &two("two", "@a2", "10.7.0.0/24", "globex-1")),
    );
    let mut net = Net::started(vec![b, a]);
    for g in &net.gws {
        assert!(
            g.stats().iter().all(|s| s.up && s.child_sas == 1),
            "{}",
            g.status()
        );
    }
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 1));
    net.gws[1].handle_tun(0, &packet([10, 7, 0, 5], [10, 88, 2, 7], 2));
    net.pump();
    let got: Vec<(usize, u8)> = net
        .tun
        .iter()
        .filter(|(g, _, _)| *g == 0)
        .map(|(_, tenant, p)| (*tenant, p[28]))
        .collect();
    assert_eq!(
        got,
        vec![(0, 1), (1, 2)],
        "acme got @a1's packet, globex @a2's"
    );
}

#[test]
fn without_encap_and_without_a_nat_esp_goes_raw() {
    let raw = |s: String| s.replace("initiate =", "encap = false\ninitiate =");
    let b = settings(
        "192.0.2.10",
        &["acme"],
        &raw(b_side("site-a", "acme", "192.0.2.1", "10.9.0.0/24", "@a")),
    );
    let a = settings(
        "192.0.2.1",
        &["site"],
        &raw(tunnel(
            "to-b",
            "site",
            "192.0.2.10",
            true,
            "10.9.0.0/24",
            "10.88.2.0/24",
            "@a",
            "@b",
        ))
        .replace("psk-of-to-b", "psk-of-site-a"),
    );
    let mut net = Net::started(vec![b, a]);
    assert!(net.gws.iter().all(|g| g.stats()[0].up));
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 1));
    net.gws[0].handle_tun(0, &packet([10, 88, 2, 7], [10, 9, 0, 5], 2));
    net.pump();
    let mut got: Vec<(usize, u8)> = net.tun.iter().map(|(g, _, p)| (*g, p[28])).collect();
    got.sort_unstable();
    assert_eq!(got, vec![(0, 1), (1, 2)]);
    assert_eq!((net.esp_raw, net.esp_in_udp), (2, 0), "both ways raw ESP");

    // The default (encap) sends the same packets in UDP 4500.
    let mut net = Net::started(vec![
        b_with_two_tenants("192.0.2.2", "10.9.0.0/24"),
        site("192.0.2.1", "@a1", "acme-1", "10.9.0.0/24"),
    ]);
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], 3));
    net.pump();
    assert_eq!(net.tun.len(), 1);
    assert_eq!((net.esp_raw, net.esp_in_udp), (0, 1));
}

#[test]
fn two_peers_choosing_the_same_spi_each_keep_their_own_traffic() {
    // The SPI of an SA is chosen by its receiver: two sites may well pick
    // the same one for what B sends them. Here both are made to.
    let b = b_with_two_tenants("192.0.2.2", "10.9.0.0/24");
    let a1 = site("192.0.2.1", "@a1", "acme-1", "10.9.0.0/24");
    let a2 = site("192.0.2.2", "@a2", "globex-1", "10.9.0.0/24");
    let mut net = Net::new(vec![b, a1, a2]);
    for g in &mut net.gws[1..] {
        g.set_spi_table(proto_ikev2::SpiTable::with_range(0x5000, 0x5000));
    }
    for g in &mut net.gws {
        g.start(net.now);
    }
    net.pump();
    assert!(
        net.gws[0].stats().iter().all(|s| s.up && s.child_sas == 1),
        "{}",
        net.gws[0].status()
    );
    b_answers_reach_only_their_own_sites(&mut net);
}

#[test]
fn a_new_inbound_spi_never_takes_another_tunnels() {
    // B draws its inbound SPIs from four values for three tunnels (of two
    // tenants) and their rekeys: every SA still gets one of its own, and
    // with none free a rekey waits instead of reusing one.
    let b = settings(
        "192.0.2.10",
        &["acme", "globex"],
        &(b_side("acme-1", "acme", "192.0.2.1", "10.9.0.0/24", "@a1")
            + &b_side("globex-1", "globex", "192.0.2.2", "10.9.0.0/24", "@a2")
            + &b_side("globex-2", "globex", "192.0.2.3", "10.7.0.0/24", "@a3")),
    );
    let mut net = Net::new(vec![
        b,
        site("192.0.2.1", "@a1", "acme-1", "10.9.0.0/24"),
        site("192.0.2.2", "@a2", "globex-1", "10.9.0.0/24"),
        site("192.0.2.3", "@a3", "globex-2", "10.7.0.0/24"),
    ]);
    net.gws[0].set_spi_table(proto_ikev2::SpiTable::with_range(0x7000, 0x7003));
    for g in &mut net.gws {
        g.start(net.now);
    }
    net.pump();
    assert!(net.gws[0].stats().iter().all(|s| s.up && s.child_sas == 1));
    let spis = |net: &Net| {
        let mut v: Vec<u32> = net.gws[0].inbound_spis();
        v.sort_unstable();
        v
    };
    assert_eq!(spis(&net).len(), 3);
    // The sites rekey their Child SAs (B answers with a new inbound SPI).
    for _ in 0..3 {
        for g in &mut net.gws[1..] {
            g.rekey_all(net.now);
        }
        net.pump();
        let now = spis(&net);
        let mut unique = now.clone();
        unique.dedup();
        assert_eq!(now, unique, "an SPI given twice");
        assert!(now.iter().all(|s| (0x7000..=0x7003).contains(s)));
        // Every site still reaches its own tenant.
        net.tun.clear();
        for (i, src) in [
            (1usize, [10, 9, 0, 5]),
            (2, [10, 9, 0, 5]),
            (3, [10, 7, 0, 5]),
        ] {
            net.gws[i].handle_tun(0, &packet(src, [10, 88, 2, 7], i as u8));
        }
        net.pump();
        net.tun.sort();
        assert_eq!(
            net.tun,
            vec![
                (0, 0, packet([10, 9, 0, 5], [10, 88, 2, 7], 1)),
                (0, 1, packet([10, 7, 0, 5], [10, 88, 2, 7], 3)),
                (0, 1, packet([10, 9, 0, 5], [10, 88, 2, 7], 2))
            ]
        );
    }
}

/// B's tunnel for site A requiring `b_esp`, the site offering `a_esp`.
fn pfs_net(b_esp: &str, a_esp: &str) -> Net {
    let b = settings(
        "192.0.2.10",
        &["acme"],
        &(b_side("site-a", "acme", "192.0.2.1", "10.9.0.0/24", "@a")
            + &format!("esp_proposals = [\"{b_esp}\"]\n")),
    );
    let a = site("192.0.2.1", "@a", "site-a", "10.9.0.0/24");
    let mut a = a;
    a.tunnels[0] = {
        let text = tunnel(
            "to-b",
            "site",
            "192.0.2.10",
            true,
            "10.9.0.0/24",
            "10.88.2.0/24",
            "@a",
            "@b",
        )
        .replace("psk-of-to-b", "psk-of-site-a")
            + &format!("esp_proposals = [\"{a_esp}\"]\n");
        settings("192.0.2.1", &["site"], &text).tunnels.remove(0)
    };
    Net::started(vec![b, a])
}

fn crosses(net: &mut Net, tag: u8) -> bool {
    net.tun.clear();
    net.gws[1].handle_tun(0, &packet([10, 9, 0, 5], [10, 88, 2, 7], tag));
    net.gws[0].handle_tun(0, &packet([10, 88, 2, 7], [10, 9, 0, 5], tag));
    net.pump();
    net.tun.len() == 2
}

#[test]
fn a_rekey_without_the_required_key_exchange_is_refused_and_the_old_sa_carries_on() {
    let mut net = pfs_net("aes256gcm16-ecp256", "aes256gcm16");
    assert!(net
        .gws
        .iter()
        .all(|g| g.stats()[0].up && g.stats()[0].child_sas == 1));
    let before = net.gws[0].inbound_spis();
    // The site rekeys without PFS: B refuses, nothing changes on B.
    net.gws[1].rekey_all(net.now);
    net.pump();
    assert_eq!(
        net.gws[0].inbound_spis(),
        before,
        "a rekey without PFS was installed"
    );
    let m = net.gws[0].metrics();
    assert!(
        m.contains("cvlan_vrouter_peer_requests_refused_total{tunnel=\"site-a\"} 1"),
        "{m}"
    );
    assert!(crosses(&mut net, 1), "the old SA stopped carrying traffic");
    // With PFS on both sides the same rekey goes through.
    let mut net = pfs_net("aes256gcm16-ecp256", "aes256gcm16-ecp256");
    let before = net.gws[0].inbound_spis();
    net.gws[1].rekey_all(net.now);
    net.pump();
    assert_ne!(
        net.gws[0].inbound_spis(),
        before,
        "the PFS rekey was not taken"
    );
    assert!(crosses(&mut net, 2));
    assert!(net.gws[0]
        .metrics()
        .contains("cvlan_vrouter_peer_requests_refused_total{tunnel=\"site-a\"} 0"));
}

#[test]
fn a_peer_that_comes_back_without_a_delete_leaves_one_ike_sa() {
    // A's IKE SA is up; A restarts (a new gateway, same settings) and
    // initiates again without deleting anything, as libreswan does.
    let b = settings(
        "192.0.2.10",
        &["acme"],
        &b_side("site-a", "acme", "192.0.2.1", "10.9.0.0/24", "@a"),
    );
    let mut net = Net::started(vec![b, site("192.0.2.1", "@a", "site-a", "10.9.0.0/24")]);
    let established = |net: &Net| net.gws[0].status().matches("Established").count();
    assert_eq!(established(&net), 1);
    for round in 0..3u8 {
        net.gws[1] = Gateway::new(
            site("192.0.2.1", "@a", "site-a", "10.9.0.0/24"),
            [50 + round; 32],
        );
        net.gws[1].start(net.now);
        net.pump();
        assert_eq!(
            established(&net),
            1,
            "round {round}:\n{}",
            net.gws[0].status()
        );
        assert!(crosses(&mut net, round), "round {round}");
        let status = net.gws[0].status();
        assert!(status.contains(" up "), "{status}");
    }
}

#[test]
fn an_authenticated_tunnel_without_child_sa_is_degraded_not_up() {
    // The site's selectors are outside B's policy: the IKE SA comes up,
    // its Child SA is refused.
    let b = settings(
        "192.0.2.10",
        &["acme"],
        &b_side("site-a", "acme", "192.0.2.1", "10.9.0.0/24", "@a"),
    );
    let a = site("192.0.2.1", "@a", "site-a", "172.16.0.0/24");
    let net = Net::started(vec![b, a]);
    let status = net.gws[0].status();
    assert!(
        status.contains("degraded") && status.contains("child SAs 0"),
        "{status}"
    );
    assert!(!status.contains(" up "), "{status}");
}
