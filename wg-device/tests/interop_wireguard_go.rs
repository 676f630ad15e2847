//! cvlan-wg against wireguard-go, in network namespaces, configured only
//! through `wg`. Needs root + wireguard-go + wireguard-tools + iproute2:
//! ignored by default, run by CI with `--include-ignored`.

use testkit::host as lab;
use testkit::wg_lab::{Impl, Lab};

const CVLAN_WG: &str = env!("CARGO_BIN_EXE_cvlan-wg");

const TRANSFER: usize = 50 * 1024 * 1024;
const TRANSFER_V6: usize = 10 * 1024 * 1024;

/// `initiator` has the other's endpoint and sends first; the responder
/// learns the initiator's endpoint from the handshake.
fn interop(initiator: Impl, responder: Impl, port: u16) {
    lab::require(&["wg", "wireguard-go", "ip", "ping"]);
    let mut lab = Lab::new(CVLAN_WG);
    lab.start(0, initiator);
    lab.start(1, responder);
    lab.configure(0, true);
    lab.configure(1, false);
    let ping = lab
        .ping(0, 3)
        .unwrap_or_else(|e| panic!("ping failed:\n{e}"));
    assert!(ping.contains("3 received"), "{ping}");
    // Both directions now that the responder knows the endpoint.
    lab.ping(1, 2)
        .unwrap_or_else(|e| panic!("reverse ping failed:\n{e}"));
    let there = lab.tcp_transfer(0, TRANSFER, port);
    let back = lab.tcp_transfer(1, TRANSFER, port + 1);
    eprintln!("{initiator:?} -> {responder:?}: {there:.0} Mbit/s there, {back:.0} Mbit/s back (50 MiB each, checked)");
    // IPv6 inside the tunnel (TSO6/GRO for v6 on our side).
    let v6 = lab.sides[1].overlay6;
    lab.ping_addr(0, v6.into(), 2)
        .unwrap_or_else(|e| panic!("ping6 failed:\n{e}"));
    let there6 = lab.tcp_transfer_to(0, std::net::SocketAddr::from((v6, port + 2)), TRANSFER_V6);
    let back6 = lab.tcp_transfer_to(
        1,
        std::net::SocketAddr::from((lab.sides[0].overlay6, port + 3)),
        TRANSFER_V6,
    );
    eprintln!("{initiator:?} -> {responder:?} over IPv6: {there6:.0} / {back6:.0} Mbit/s (10 MiB each, checked)");
    // `wg show` reads our UAPI: a handshake happened and bytes moved.
    for i in 0..2 {
        let dump = lab.wg(i, &["show", &lab.sides[i].ifname, "dump"]);
        let peer_line = dump
            .lines()
            .nth(1)
            .unwrap_or_else(|| panic!("no peer in dump: {dump}"));
        let fields: Vec<&str> = peer_line.split('\t').collect();
        assert_eq!(fields[0], lab.sides[1 - i].public_b64, "{dump}");
        let handshake: u64 = fields[4].parse().expect("handshake time");
        let rx: u64 = fields[5].parse().expect("rx");
        let tx: u64 = fields[6].parse().expect("tx");
        assert!(handshake > 0, "no handshake on side {i}: {dump}");
        assert!(
            rx > TRANSFER as u64 && tx > TRANSFER as u64 / 100,
            "side {i}: rx {rx} tx {tx}"
        );
    }
}

#[test]
#[ignore = "needs root, wireguard-go, wireguard-tools, iproute2 (CI runs it)"]
fn cvlan_wg_initiates_to_wireguard_go() {
    interop(Impl::Cvlan, Impl::WireguardGo, 5201);
}

#[test]
#[ignore = "needs root, wireguard-go, wireguard-tools, iproute2 (CI runs it)"]
fn wireguard_go_initiates_to_cvlan_wg() {
    interop(Impl::WireguardGo, Impl::Cvlan, 5301);
}
