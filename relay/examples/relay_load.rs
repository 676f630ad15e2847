//! Load generator for a running `cvlan-relay`: N nodes in pairs, each
//! sending fixed-size packets to its partner with at most WINDOW packets
//! in flight (so the relay is measured at saturation, not the generator
//! drowning it), for a fixed time. Prints packets/s and Mbit/s delivered.
//!
//! `relay_load ADDR RELAY_PUBKEY CLIENTS SECONDS [PACKET_BYTES]`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_relay::client::ClientEvent;
use tokio::sync::{mpsc, Notify};

/// Packets a sender may have in flight to its partner.
const WINDOW: u64 = 128;
use zeroize::Zeroizing;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: relay_load ADDR RELAY_PUBKEY CLIENTS SECONDS [PACKET_BYTES]";
    let [_, addr, key, clients, secs, rest @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let relay_key = cvlan_core::Key32::parse(key)
        .map_err(|_| "bad relay key".to_string())?
        .0;
    let clients: usize = clients.parse().map_err(|_| usage.to_string())?;
    let secs: u64 = secs.parse().map_err(|_| usage.to_string())?;
    let size: usize = rest
        .first()
        .map_or(Ok(1200), |s| s.parse())
        .map_err(|_| usage.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(
        addr.clone(),
        relay_key,
        clients.max(2) & !1,
        secs,
        size,
    ))
}

async fn run(
    addr: String,
    relay_key: [u8; 32],
    clients: usize,
    secs: u64,
    size: usize,
) -> Result<(), String> {
    let received = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let secret = |i: usize| {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        k
    };
    let mut senders = Vec::new();
    // Per node: packets it has received, and a wake-up for its partner.
    let got: Vec<Arc<(AtomicU64, Notify)>> = (0..clients)
        .map(|_| Arc::new((AtomicU64::new(0), Notify::new())))
        .collect();
    for (i, mine) in got.iter().enumerate() {
        let (tx, mut out_rx) = mpsc::channel::<([u8; 32], Vec<u8>)>(256);
        let (ev_tx, mut ev_rx) = mpsc::channel(1024);
        let addr = addr.clone();
        let sk = Zeroizing::new(secret(i));
        tokio::spawn(async move {
            let stamp = relay::node::hello_timestamp(&std::sync::atomic::AtomicU64::new(0));
            agent::relay_client::run(&addr, None, relay_key, &sk, stamp, &mut out_rx, &ev_tx).await
        });
        match tokio::time::timeout(Duration::from_secs(10), ev_rx.recv()).await {
            Ok(Some(ClientEvent::Connected)) => {}
            other => return Err(format!("client {i} did not connect: {other:?}")),
        }
        let (received, counting, mine) = (received.clone(), counting.clone(), mine.clone());
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                if matches!(ev, ClientEvent::Packet { .. }) {
                    mine.0.fetch_add(1, Ordering::Relaxed);
                    mine.1.notify_one();
                    if counting.load(Ordering::Relaxed) {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        senders.push(tx);
    }
    for (i, tx) in senders.into_iter().enumerate() {
        let partner = proto_control::public_key(&secret(i ^ 1));
        let stop = stop.clone();
        let theirs = got[i ^ 1].clone();
        tokio::spawn(async move {
            let packet = vec![0xa5u8; size];
            // Packets counted as lost are written off so the window reopens.
            let (mut sent, mut written_off) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let arrived = theirs.0.load(Ordering::Relaxed) + written_off;
                if sent - arrived.min(sent) >= WINDOW {
                    if tokio::time::timeout(Duration::from_millis(100), theirs.1.notified())
                        .await
                        .is_err()
                    {
                        written_off = sent - theirs.0.load(Ordering::Relaxed);
                    }
                    continue;
                }
                if tx.send((partner, packet.clone())).await.is_err() {
                    break;
                }
                sent += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // warm up
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let n = received.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let pps = n as f64 / elapsed;
    println!(
        "clients={clients} packet={size}B delivered={n} pps={pps:.0} mbit_per_s={:.0}",
        pps * size as f64 * 8.0 / 1e6
    );
    Ok(())
}
