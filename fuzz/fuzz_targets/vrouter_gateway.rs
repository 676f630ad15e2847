//! The vrouter's gateway fed arbitrary datagrams on UDP 500 and 4500, raw
//! ESP and tenants' packets, after one tunnel came up with a genuine site
//! (so real SPIs are there to be hit), with time moving: no panic, and the
//! status and metrics still render.
#![no_main]
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use vrouter::config::Settings;
use proto_ikev2::Transmit;
use vrouter::gateway::{Gateway, Output};

fn settings(listen: &str, tunnels: &str) -> Settings {
    let text = format!(
        "[vrouter]\nlisten = \"{listen}\"\ncookie_threshold = 2\nmax_half_open = 8\nmax_ike_sas = 16\n\
         [[tenant]]\nname = \"acme\"\ntun = \"vr-acme\"\ntable = 100\n\
         [[tenant]]\nname = \"globex\"\ntun = \"vr-globex\"\ntable = 101\n{tunnels}"
    );
    Settings::parse(&text).expect("settings")
}

fn tunnel(
    id: &str,
    tenant: &str,
    remote: &str,
    initiate: bool,
    local: &str,
    net: &str,
    lid: &str,
    rid: &str,
) -> String {
    format!(
        "[[tunnel]]\nid = \"{id}\"\ntenant = \"{tenant}\"\nremote = \"{remote}\"\nlocal_id = \"{lid}\"\nremote_id = \"{rid}\"\n\
         auth = {{ method = \"psk\", psk = \"psk-of-the-fuzzer\" }}\nlocal_subnets = [\"{local}\"]\nremote_subnets = [\"{net}\"]\n\
         initiate = {initiate}\nproposals = [\"aes128gcm16-prfsha256-x25519\"]\nesp_proposals = [\"aes128gcm16\"]\nmax_child_sas = 4\n"
    )
}

fn pump(gws: &mut [Gateway; 2], now: Instant) {
    for _ in 0..8 {
        for i in 0..2 {
            while let Some(o) = gws[i].poll_output() {
                if let Output::Udp(Transmit {
                    source,
                    destination,
                    contents,
                    ..
                }) = o
                {
                    gws[1 - i].handle_udp(now, source, destination, &contents);
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut now = Instant::now();
    let hub = settings(
        "192.0.2.10",
        &(tunnel(
            "a",
            "acme",
            "192.0.2.1",
            false,
            "10.88.2.0/24",
            "10.9.0.0/24",
            "@b",
            "@a",
        ) + &tunnel(
            "g",
            "globex",
            "0.0.0.0/0",
            false,
            "10.88.2.0/24",
            "10.9.0.0/24",
            "@b",
            "@g",
        )),
    );
    let site = settings(
        "192.0.2.1",
        &tunnel(
            "to-b",
            "acme",
            "192.0.2.10",
            true,
            "10.9.0.0/24",
            "10.88.2.0/24",
            "@a",
            "@b",
        ),
    );
    let mut gws = [Gateway::new(hub, [1; 32]), Gateway::new(site, [2; 32])];
    for g in &mut gws {
        g.start(now);
    }
    pump(&mut gws, now);
    let gw = &mut gws[0];
    let us: std::net::IpAddr = "192.0.2.10".parse().expect("us");
    // Chunks: [kind, source, time step, length, bytes...].
    let mut rest = data;
    while let [kind, source, step, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += Duration::from_millis(u64::from(*step) * 50);
        let from = SocketAddr::from(([192, 0, 2, source % 4], 500));
        match kind % 5 {
            0 => gw.handle_udp(now, from, SocketAddr::new(us, 500), bytes),
            1 => gw.handle_udp(
                now,
                SocketAddr::new(from.ip(), 4500),
                SocketAddr::new(us, 4500),
                bytes,
            ),
            2 => gw.handle_esp(bytes),
            3 => gw.handle_tun(usize::from(*source % 2), bytes),
            _ => gw.handle_timeout(now),
        }
        let mut outputs = 0;
        while gw.poll_output().is_some() {
            outputs += 1;
        }
        assert!(outputs <= 16, "{outputs} outputs for one input");
    }
    let _ = (gw.status(), gw.metrics());
});
