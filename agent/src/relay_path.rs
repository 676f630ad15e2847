//! The relay path (tokio): one connection to the home relay, and for each
//! peer a proxy socket on 127.0.0.1 that the WireGuard device uses as the
//! peer's endpoint while traffic goes through the relay. Datagrams the
//! device sends to a proxy go to the relay addressed to that peer's key;
//! packets the relay delivers from a key go to the device from that
//! peer's proxy. The device's own roaming then follows whichever path
//! last carried an authenticated packet.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use proto_control::messages::{key32, RelayInfo};
use proto_relay::client::ClientEvent;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};
use zeroize::Zeroizing;

use crate::settings::HelloClock;
use proto_path::Key;

/// Packets waiting for the relay connection at most; beyond, dropped.
const TO_RELAY_QUEUE: usize = 1024;

#[derive(Debug)]
struct Proxy {
    socket: Arc<UdpSocket>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
pub struct RelayCounters {
    pub connected: AtomicBool,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Debug)]
pub struct RelayLink {
    pub address: String,
    to_relay: mpsc::Sender<(Key, Vec<u8>)>,
    proxies: Arc<Mutex<HashMap<Key, Proxy>>>,
    device: SocketAddr,
    pub counters: Arc<RelayCounters>,
    task: JoinHandle<()>,
}

fn lock(m: &Mutex<HashMap<Key, Proxy>>) -> MutexGuard<'_, HashMap<Key, Proxy>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RelayLink {
    /// Connects (and keeps reconnecting) to `relay` as the holder of
    /// `node_key`; the device listens on UDP `device_port`.
    pub fn start(
        relay: &RelayInfo,
        node_key: Zeroizing<[u8; 32]>,
        device_port: u16,
        tls: Option<tokio_rustls::TlsConnector>,
        clock: HelloClock,
    ) -> Option<Self> {
        let relay_key = key32(&relay.public_key)?;
        let (to_relay, mut outgoing) = mpsc::channel::<(Key, Vec<u8>)>(TO_RELAY_QUEUE);
        let proxies: Arc<Mutex<HashMap<Key, Proxy>>> = Arc::default();
        let counters = Arc::new(RelayCounters::default());
        let device = SocketAddr::from((Ipv4Addr::LOCALHOST, device_port));
        let address = relay.address.clone();
        let task = {
            let (proxies, counters, address) = (proxies.clone(), counters.clone(), address.clone());
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(500);
                loop {
                    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
                    let dispatch = {
                        let (proxies, counters) = (proxies.clone(), counters.clone());
                        tokio::spawn(async move {
                            while let Some(ev) = ev_rx.recv().await {
                                deliver(&proxies, &counters, device, ev).await;
                            }
                        })
                    };
                    let started = Instant::now();
                    let why = crate::relay_client::run(
                        &address,
                        tls.as_ref(),
                        relay_key,
                        &node_key,
                        clock.next(),
                        &mut outgoing,
                        &ev_tx,
                    )
                    .await;
                    counters.connected.store(false, Ordering::Relaxed);
                    dispatch.abort();
                    info!(relay = %address, reason = %why, "relay connection ended");
                    if started.elapsed() > Duration::from_secs(30) {
                        delay = Duration::from_millis(500);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            })
        };
        Some(Self {
            address,
            to_relay,
            proxies,
            device,
            counters,
            task,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed)
    }

    /// The proxy address for `peer`, if it has one.
    pub fn proxy_of(&self, peer: &Key) -> Option<SocketAddr> {
        lock(&self.proxies).get(peer)?.socket.local_addr().ok()
    }

    /// The proxy address for `peer` (created on first use).
    pub fn proxy_for(&self, peer: Key) -> std::io::Result<SocketAddr> {
        let mut proxies = lock(&self.proxies);
        if let Some(p) = proxies.get(&peer) {
            return p.socket.local_addr();
        }
        let std_socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let addr = socket.local_addr()?;
        let task = {
            let (socket, to_relay, counters, device) = (
                socket.clone(),
                self.to_relay.clone(),
                self.counters.clone(),
                self.device,
            );
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    if from != device {
                        continue; // only the local device talks to a proxy
                    }
                    match to_relay.try_send((peer, buf[..n].to_vec())) {
                        Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
                        Err(_) => counters.dropped.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        };
        proxies.insert(peer, Proxy { socket, task });
        Ok(addr)
    }

    pub fn remove_peer(&self, peer: &Key) {
        if let Some(p) = lock(&self.proxies).remove(peer) {
            p.task.abort();
        }
    }
}

impl Drop for RelayLink {
    fn drop(&mut self) {
        self.task.abort();
        for (_, p) in lock(&self.proxies).drain() {
            p.task.abort();
        }
    }
}

async fn deliver(
    proxies: &Mutex<HashMap<Key, Proxy>>,
    counters: &RelayCounters,
    device: SocketAddr,
    ev: ClientEvent,
) {
    match ev {
        ClientEvent::Connected => {
            counters.connected.store(true, Ordering::Relaxed);
            info!("relay connected");
        }
        ClientEvent::Packet { src, packet } => {
            let socket = lock(proxies).get(&src).map(|p| p.socket.clone());
            match socket {
                Some(s) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    let _ = s.send_to(&packet, device).await;
                }
                None => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        ClientEvent::PeerGone { key, reason } => {
            debug!(peer = %hex::encode(key), ?reason, "relay: peer not there")
        }
        _ => {}
    }
}

/// The relay with the lowest STUN round trip (the first if none answers
/// within a second).
pub async fn choose_home(relays: &[RelayInfo]) -> Option<usize> {
    if relays.len() <= 1 {
        return if relays.is_empty() { None } else { Some(0) };
    }
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    let mut client = stun::client::BindingClient::new(stun::client::ClientConfig::default());
    let mut servers = Vec::new();
    for (i, r) in relays.iter().enumerate() {
        let Ok(Some(addr)) = tokio::net::lookup_host(&r.stun).await.map(|mut a| a.next()) else {
            continue;
        };
        let mut id = [0u8; 12];
        if cvlan_core::seed::fill(&mut id).is_err() {
            return Some(0);
        }
        if client
            .query(Instant::now(), addr, stun::wire::TransactionId(id))
            .is_ok()
        {
            servers.push((addr, i));
        }
    }
    while let Some(t) = client.poll_transmit() {
        let _ = socket.send_to(&t.contents, t.destination).await;
    }
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Ok((n, from))) =
        tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
    {
        if client
            .handle_input(Instant::now(), from, &buf[..n])
            .is_err()
        {
            continue;
        }
        while let Some(ev) = client.poll_event() {
            if let stun::client::Event::Mapped { server, .. } = ev {
                // The first answer is the nearest relay.
                return servers.iter().find(|(a, _)| *a == server).map(|&(_, i)| i);
            }
        }
    }
    Some(0)
}
