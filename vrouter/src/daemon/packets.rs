//! The threads that move packets: UDP 500 (IKE), UDP 4500 (ESP in UDP
//! in batches, and IKE), each tenant's TUN device, raw ESP.

use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use netstack::raw_esp::RawEsp;
use netstack::tun::TunReader;
use netstack::udp::{RecvBatch, UdpSender};
use proto_esp::udp_encap::{classify, Udp4500};
use tracing::debug;

use super::Io;
use crate::datapath::{InboundPath, OutboundPath, HEADROOM, TAILROOM};

/// One slot of a TUN batch: the largest packet plus the room to seal it.
const SLOT: usize = HEADROOM + 1500 + TAILROOM;
/// Packets per TUN batch: with TSO, one read can become ~48 segments.
const TUN_SLOTS: usize = 160;
/// UDP messages per receive (each up to 64 KiB with GRO).
const UDP_BATCH: usize = 32;

/// What a receive gave, if anything: timeouts (our wake-ups) and
/// interruptions are quiet; other errors (ICMP errors surface as
/// ECONNREFUSED, a malformed raw packet as InvalidData) are logged at
/// debug and never fatal.
fn received<T>(what: &str, r: std::io::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        Err(e) => {
            debug!(error = %e, "{what}");
            None
        }
    }
}

/// Port 500 carries IKE only.
pub(super) fn ike_loop(io: &Io, sock: &UdpSocket, local: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some((n, from)) = received("UDP receive", sock.recv_from(&mut buf)) {
            let mut gw = io.lock();
            gw.handle_udp(Instant::now(), from, local, &buf[..n]);
            io.flush(&mut gw);
        }
    }
}

/// Port 4500: ESP in batches on the fast path, IKE and keepalives to the
/// gateway.
pub(super) fn nat_t_loop(io: &Io, local: SocketAddr) {
    let mut batch = RecvBatch::new(UDP_BATCH, 65_536);
    let mut gro_buf = vec![0u8; netstack::offload::VNET_HDR_LEN + 65_536];
    let mut esp: Vec<(usize, Range<usize>, Arc<InboundPath>)> = Vec::new();
    let mut control: Vec<(usize, Range<usize>)> = Vec::new();
    let mut esp_parts: Vec<(usize, Range<usize>)> = Vec::new();
    // Opened packets: message, range of the inner packet, tenant.
    let mut opened: Vec<(usize, Range<usize>, usize)> = Vec::new();
    loop {
        let Some(n) = received("UDP receive", batch.recv(&io.s4500)) else {
            continue;
        };
        // IKE first: a rekey answer installs the SA that ESP later in the
        // same batch may already use.
        for i in 0..n {
            // With UDP GRO one message can hold many datagrams.
            for part in batch.datagrams(i) {
                match classify(&batch.get(i)[part.clone()]) {
                    Udp4500::Esp(_) => esp_parts.push((i, part)),
                    Udp4500::Ike(_) => control.push((i, part)),
                    Udp4500::Keepalive | Udp4500::Invalid => {}
                }
            }
        }
        if !control.is_empty() {
            let now = Instant::now();
            let mut gw = io.lock();
            for (i, part) in control.drain(..) {
                let from = batch.get_mut(i).1;
                gw.handle_udp(now, from, local, &batch.get(i)[part]);
            }
            io.flush(&mut gw);
        }
        {
            let gw = io.read();
            for (i, part) in esp_parts.drain(..) {
                if let Some(path) = gw.inbound_path(&batch.get(i)[part.clone()]) {
                    esp.push((i, part, path));
                }
            }
        }
        for (i, part, path) in esp.drain(..) {
            let datagram = &mut batch.get_mut(i).0[part.clone()];
            if let Some(inner) = path.open(datagram) {
                let at = part.start + inner.start..part.start + inner.end;
                opened.push((i, at, path.tenant));
            }
        }
        // Runs of one tenant go to its TUN in order.
        let mut k = 0;
        while k < opened.len() {
            let tenant = opened[k].2;
            let run = opened[k..].iter().take_while(|o| o.2 == tenant).count();
            let packet = |j: usize| {
                let (i, r, _) = &opened[k + j];
                &batch.get(*i)[r.clone()]
            };
            if let Some(tun) = io.tuns.get(tenant) {
                if let (failed @ 1.., Some(e)) = tun.send_in_order(run, packet, &mut gro_buf) {
                    debug!(failed, error = %e, "TUN write failed");
                }
            }
            k += run;
        }
        opened.clear();
    }
}

/// A tenant's packets: read in batches, sealed in place, sent with GSO.
pub(super) fn tun_loop(io: &Io, tenant: usize) -> String {
    let tun = &io.tuns[tenant];
    // Zeroed slots are backed lazily by the OS: only touched pages cost.
    let mut bufs: Vec<Vec<u8>> = (0..TUN_SLOTS).map(|_| vec![0u8; SLOT]).collect();
    let mut lens = [0usize; TUN_SLOTS];
    let mut reader = TunReader::default();
    let mut routes: Vec<(usize, Arc<OutboundPath>)> = Vec::with_capacity(TUN_SLOTS);
    // Sealed packets: destination, slot, range in the slot.
    let mut sealed: Vec<(SocketAddr, usize, Range<usize>)> = Vec::with_capacity(TUN_SLOTS);
    let mut sender = UdpSender::new();
    let mut dropped_seen = 0;
    loop {
        let n = match tun.recv_batch(&mut reader, &mut bufs, HEADROOM, &mut lens) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return format!("TUN {}: {e}", tun.name()),
        };
        if reader.dropped > dropped_seen {
            debug!(total = reader.dropped, reason = ?reader.last_drop, "dropped unusable TUN read");
            dropped_seen = reader.dropped;
        }
        {
            let gw = io.read();
            for (i, buf) in bufs.iter().enumerate().take(n) {
                if let Some(path) = gw.route(tenant, &buf[HEADROOM..HEADROOM + lens[i]]) {
                    routes.push((i, path));
                }
            }
        }
        for (i, path) in routes.drain(..) {
            match path.seal(&mut bufs[i], lens[i]) {
                Ok(r) if path.encap => sealed.push((path.peer, i, r)),
                // Raw ESP is the legacy path without NAT: one by one.
                Ok(r) => io.send_raw(path.peer.ip(), &bufs[i][r]),
                Err(e) => debug!(error = %e, "dropped outbound packet"),
            }
        }
        // ESP always goes in UDP from port 4500 (NAT-T is always on).
        let result =
            netstack::udp::send_in_order(&mut sender, &io.s4500, &io.gso, sealed.len(), |k| {
                let (to, i, r) = &sealed[k];
                (*to, &bufs[*i][r.clone()])
            });
        if let Err(e) = result {
            debug!(error = %e, "UDP send failed");
        }
        sealed.clear();
    }
}

/// Raw ESP from peers without NAT (tunnels with `encap = false`).
pub(super) fn raw_loop(io: &Io, raw: &RawEsp) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Some((_, esp)) = received("raw ESP receive", raw.recv(&mut buf)) else {
            continue;
        };
        let path = io.read().inbound_path(&buf[esp.clone()]);
        let Some(path) = path else { continue };
        let packet = &mut buf[esp.clone()];
        if let Some(inner) = path.open(packet) {
            if let Some(tun) = io.tuns.get(path.tenant) {
                if let Err(e) = tun.send(&packet[inner]) {
                    debug!(error = %e, "TUN write failed");
                }
            }
        }
    }
}
