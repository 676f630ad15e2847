//! Relays and nodes over real TCP on loopback (no root): many nodes on one
//! relay and across two meshed relays exchange packets byte for byte,
//! departures are announced, a flood does not starve another pair, and
//! bad keys are refused.

// Test helpers panic on any failure: that is how a test reports it.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use proto_control::public_key;
use proto_relay::client::{ClientEvent, RelayClient};
use proto_relay::frame::{GoneReason, Key};
use proto_relay::server::{Limits, Role};
use relay::node::{self, RelayNode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};
use zeroize::Zeroizing;

/// A growing hello timestamp, as every real client sends.
fn stamp() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    node::hello_timestamp(&LAST)
}

struct Relay {
    addr: String,
    node: Arc<RelayNode>,
}

/// Starts relays that all mesh with each other.
async fn relays(n: u8) -> Vec<Relay> {
    let keys: Vec<[u8; 32]> = (0..n).map(|i| [0x70 + i; 32]).collect();
    let publics: HashSet<Key> = keys.iter().map(public_key).collect();
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let mut out = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let node = RelayNode::new(Zeroizing::new(keys[i]), publics.clone(), Limits::default());
        tokio::spawn(node::serve_tcp(l, node.clone(), None));
        for (j, addr) in addrs.iter().enumerate() {
            if j != i {
                tokio::spawn(node::mesh_with(
                    addr.clone(),
                    public_key(&keys[j]),
                    node.clone(),
                    None,
                ));
            }
        }
        out.push(Relay {
            addr: addrs[i].clone(),
            node,
        });
    }
    out
}

struct Node {
    key: Key,
    tx: mpsc::Sender<(Key, Vec<u8>)>,
    rx: mpsc::Receiver<ClientEvent>,
    task: JoinHandle<String>,
}

async fn join(relay: &Relay, secret: [u8; 32]) -> Node {
    let (tx, mut out_rx) = mpsc::channel(4096);
    let (ev_tx, mut rx) = mpsc::channel(4096);
    let (addr, relay_key) = (relay.addr.clone(), relay.node.public_key());
    let task = tokio::spawn(async move {
        agent::relay_client::run(
            &addr,
            None,
            relay_key,
            &Zeroizing::new(secret),
            stamp(),
            &mut out_rx,
            &ev_tx,
        )
        .await
    });
    let first = timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("connect in time");
    assert_eq!(first, Some(ClientEvent::Connected));
    Node {
        key: public_key(&secret),
        tx,
        rx,
        task,
    }
}

async fn next_packet(n: &mut Node) -> (Key, Vec<u8>) {
    loop {
        match timeout(Duration::from_secs(5), n.rx.recv())
            .await
            .expect("packet in time")
        {
            Some(ClientEvent::Packet { src, packet }) => return (src, packet),
            Some(_) => {}
            None => panic!("connection ended"),
        }
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn many_nodes_across_two_meshed_relays_exchange_packets() {
    let r = relays(2).await;
    wait_until("mesh links", || r.iter().all(|x| x.node.status().1 >= 1)).await;
    let mut nodes = Vec::new();
    for i in 0..20u8 {
        nodes.push(join(&r[usize::from(i % 2)], [i + 1; 32]).await);
    }
    wait_until("presence shared", || {
        r.iter().all(|x| x.node.status().2 == 10)
    })
    .await;
    // Every node sends to two others (one on each relay), distinct payloads.
    let n = nodes.len();
    let payload = |from: usize, to: usize| -> Vec<u8> {
        (0..1200).map(|k| (from * 31 + to * 7 + k) as u8).collect()
    };
    for i in 0..n {
        for to in [(i + 1) % n, (i + 2) % n] {
            nodes[i]
                .tx
                .send((nodes[to].key, payload(i, to)))
                .await
                .unwrap();
        }
    }
    for to in 0..n {
        let mut got = HashSet::new();
        for _ in 0..2 {
            let (src, packet) = next_packet(&mut nodes[to]).await;
            let from = nodes
                .iter()
                .position(|x| x.key == src)
                .expect("known sender");
            assert_eq!(packet, payload(from, to), "bytes from {from} to {to}");
            got.insert(from);
        }
        assert_eq!(got, HashSet::from([(to + n - 1) % n, (to + n - 2) % n]));
    }
    let forwarded: u64 = r.iter().map(|x| x.node.stats().packets_forwarded).sum();
    let crossed: u64 = r.iter().map(|x| x.node.stats().packets_to_mesh).sum();
    assert_eq!(forwarded, 40);
    assert_eq!(crossed, 20, "odd steps cross relays, even ones stay");

    // A node leaves: its peers on both relays are told.
    nodes[3].task.abort();
    let gone = nodes[3].key;
    for watcher in [2usize, 1] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ev = tokio::time::timeout_at(deadline, nodes[watcher].rx.recv())
                .await
                .expect("peer-gone in time");
            if ev
                == Some(ClientEvent::PeerGone {
                    key: gone,
                    reason: GoneReason::Disconnected,
                })
            {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_flood_does_not_stop_another_pair() {
    let r = relays(1).await;
    let flooder = join(&r[0], [1; 32]).await;
    let mut sink = join(&r[0], [2; 32]).await;
    let talker = join(&r[0], [3; 32]).await;
    let mut listener = join(&r[0], [4; 32]).await;
    let sink_key = sink.key;
    let flood = tokio::spawn(async move {
        let big = vec![0u8; 60_000];
        for _ in 0..20_000 {
            if flooder.tx.send((sink_key, big.clone())).await.is_err() {
                break;
            }
        }
        flooder
    });
    // The sink never reads fast enough (it does not read at all here).
    let _ = &mut sink;
    for i in 0..200u32 {
        talker
            .tx
            .send((listener.key, i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        if i % 20 == 0 {
            sleep(Duration::from_millis(5)).await;
        }
    }
    for i in 0..200u32 {
        let (src, packet) = next_packet(&mut listener).await;
        assert_eq!(
            (src, packet),
            (talker.key, i.to_be_bytes().to_vec()),
            "packet {i}"
        );
    }
    flood.abort();
}

#[tokio::test]
async fn wrong_keys_are_refused() {
    let r = relays(1).await;
    // A node that has the wrong key for the relay.
    let (_tx, mut out_rx) = mpsc::channel(1);
    let (ev_tx, _rx) = mpsc::channel(1);
    let why = agent::relay_client::run(
        &r[0].addr,
        None,
        [9; 32],
        &Zeroizing::new([1; 32]),
        stamp(),
        &mut out_rx,
        &ev_tx,
    )
    .await;
    assert!(why.contains("wrong relay key"), "{why}");
    // A relay that is not on the mesh list.
    let mut stream = tokio::net::TcpStream::connect(&r[0].addr).await.unwrap();
    let early = node::upgrade(&mut stream, &r[0].addr).await.unwrap();
    assert!(early.is_empty());
    let mut c = RelayClient::new(
        std::time::Instant::now(),
        Role::Mesh,
        &[0x33; 32],
        &r[0].node.public_key(),
        [1; 32],
        stamp(),
    )
    .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Some(b) = c.poll_transmit() {
        stream.write_all(&b).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        // Message 2 in, the handshake's confirmation out, as a real relay.
        c.handle_input(std::time::Instant::now(), &buf[..n])
            .unwrap();
        while let Some(b) = c.poll_transmit() {
            let _ = stream.write_all(&b).await;
        }
    }
    assert_eq!(
        r[0].node.counters.rejected_mesh_key.load(Ordering::Relaxed),
        1
    );
    assert_eq!(r[0].node.status(), (0, 0, 0));
    // Metrics say so.
    let text = r[0].node.metrics();
    assert!(
        text.contains("cvlan_relay_connections_rejected_total{reason=\"mesh_key\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn the_relay_answers_stun_with_the_address_it_sees() {
    let node = RelayNode::new(
        Zeroizing::new([0x71; 32]),
        HashSet::new(),
        Limits::default(),
    );
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    tokio::spawn(node::serve_stun(server, node.clone()));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut client = stun::client::BindingClient::new(stun::client::ClientConfig::default());
    let now = std::time::Instant::now();
    client
        .query(now, server_addr, stun::wire::TransactionId([7; 12]))
        .unwrap();
    let t = client.poll_transmit().unwrap();
    socket.send_to(&t.contents, t.destination).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    client
        .handle_input(std::time::Instant::now(), from, &buf[..n])
        .unwrap();
    let mapped = std::iter::from_fn(|| client.poll_event()).find_map(|e| match e {
        stun::client::Event::Mapped { reflexive, .. } => Some(reflexive),
        _ => None,
    });
    assert_eq!(mapped, Some(socket.local_addr().unwrap()));
    // Junk is ignored and counted.
    socket
        .send_to(b"not stun at all, not at all", server_addr)
        .await
        .unwrap();
    wait_until("junk counted", || {
        node.counters.stun_ignored.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(node.counters.stun_answered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn nodes_can_reach_a_relay_inside_tls() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transport/tests/data");
    let acceptor = relay::tls::acceptor(&data.join("relay.pem"), &data.join("relay.key")).unwrap();
    let connector = relay::tls::connector(Some(&data.join("ca.pem"))).unwrap();
    let node = RelayNode::new(
        Zeroizing::new([0x72; 32]),
        HashSet::new(),
        Limits::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tls://{}", listener.local_addr().unwrap());
    tokio::spawn(node::serve_tcp(listener, node.clone(), Some(acceptor)));

    let mut nodes = Vec::new();
    for secret in [[1u8; 32], [2u8; 32]] {
        let (tx, mut out_rx) = mpsc::channel(16);
        let (ev_tx, mut rx) = mpsc::channel(16);
        let (addr, key, connector) = (addr.clone(), node.public_key(), connector.clone());
        tokio::spawn(async move {
            agent::relay_client::run(
                &addr,
                Some(&connector),
                key,
                &Zeroizing::new(secret),
                stamp(),
                &mut out_rx,
                &ev_tx,
            )
            .await
        });
        assert_eq!(
            timeout(Duration::from_secs(5), rx.recv()).await.unwrap(),
            Some(ClientEvent::Connected)
        );
        nodes.push((public_key(&secret), tx, rx));
    }
    let to = nodes[1].0;
    nodes[0].1.send((to, b"inside tls".to_vec())).await.unwrap();
    let got = timeout(Duration::from_secs(5), nodes[1].2.recv())
        .await
        .unwrap();
    assert_eq!(
        got,
        Some(ClientEvent::Packet {
            src: nodes[0].0,
            packet: b"inside tls".to_vec()
        })
    );

    // Without a CA to check the certificate, a tls:// relay is refused up
    // front; plain TCP to a TLS relay gets nowhere.
    let (_tx, mut out_rx) = mpsc::channel(1);
    let (ev_tx, _rx) = mpsc::channel(1);
    let plain = addr.trim_start_matches("tls://").to_string();
    let mut failures = Vec::new();
    for target in [&addr, &plain] {
        let secret = Zeroizing::new([3; 32]);
        let why = agent::relay_client::run(
            target,
            None,
            node.public_key(),
            &secret,
            stamp(),
            &mut out_rx,
            &ev_tx,
        );
        failures.push(why.await);
    }
    assert!(failures[0].contains("needs TLS"), "{}", failures[0]);
    let why = &failures[1];
    assert!(!why.is_empty(), "plain TCP to a TLS relay must fail");
    assert_eq!(node.status().0, 2, "only the two TLS nodes are connected");
}

/// A TCP proxy in front of `upstream` for one connection that records
/// every byte the client sends (what a passive observer sees).
async fn recording_proxy(upstream: String) -> (String, Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let rec = recorded.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let up = async {
            let mut buf = vec![0u8; 65536];
            loop {
                let n = cr.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                rec.lock().unwrap().extend_from_slice(&buf[..n]);
                if sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let down = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::join!(up, down);
    });
    (addr, recorded)
}

#[tokio::test]
async fn a_replayed_first_handshake_message_does_not_displace_the_live_session() {
    use tokio::io::AsyncWriteExt;
    let r = relays(1).await;
    let (proxy, recorded) = recording_proxy(r[0].addr.clone()).await;
    // The victim connects through the observer's proxy.
    let via_proxy = Relay {
        addr: proxy,
        node: r[0].node.clone(),
    };
    let mut victim = join(&via_proxy, [5; 32]).await;
    let talker = join(&r[0], [6; 32]).await;
    wait_until("two clients", || r[0].node.status().0 == 2).await;
    let stream = recorded.lock().unwrap().clone();
    let head = proto_control::http::head_end(&stream).expect("upgrade head");
    let len = usize::from(u16::from_be_bytes([stream[head], stream[head + 1]]));
    let message_1 = &stream[head..head + 2 + len];

    // Message 1 alone, and everything the victim sent, replayed on new
    // connections that stay open.
    let mut replays = Vec::new();
    for bytes in [message_1, &stream[head..]] {
        let mut s = tokio::net::TcpStream::connect(&r[0].addr).await.unwrap();
        let early = node::upgrade(&mut s, &r[0].addr).await.unwrap();
        assert!(early.is_empty());
        s.write_all(bytes).await.unwrap();
        replays.push(s);
    }
    sleep(Duration::from_millis(500)).await;

    // The victim still gets what is sent to it.
    for i in 0..10u32 {
        talker
            .tx
            .send((victim.key, i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        let (src, packet) = next_packet(&mut victim).await;
        assert_eq!((src, packet), (talker.key, i.to_be_bytes().to_vec()));
    }
    assert_eq!(r[0].node.status().0, 2, "clients");
    assert!(
        !victim.task.is_finished(),
        "the victim's connection was closed"
    );
    assert_eq!(
        r[0].node
            .counters
            .rejected_handshake
            .load(Ordering::Relaxed),
        2,
        "both replays turned away"
    );
    drop(replays);
}

#[tokio::test]
async fn one_address_holds_only_its_share_of_connections() {
    use tokio::io::AsyncReadExt;
    let node = RelayNode::new(
        Zeroizing::new([0x73; 32]),
        HashSet::new(),
        Limits {
            connections_per_address: 3,
            ..Limits::default()
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(node::serve_tcp(listener, node.clone(), None));
    let relay = Relay {
        addr: addr.clone(),
        node: node.clone(),
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let _member = join(&relay, [1; 32]).await;
    // The fourth from this address is closed at once, unanswered.
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(
        node.counters.rejected_per_address.load(Ordering::Relaxed),
        1
    );
    assert!(node
        .metrics()
        .contains("cvlan_relay_connections_rejected_total{reason=\"per_address\"} 1"));
    // A place comes back when a connection goes.
    drop(held.pop());
    sleep(Duration::from_millis(100)).await;
    let _second = join(&relay, [2; 32]).await;
}
