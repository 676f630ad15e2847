//! `--verify-clients`: a relay following a real controller in-process
//! serves only registered node keys, drops a node the moment it is
//! removed, serves one as soon as it registers, and keeps the list for
//! its next start.

#![allow(clippy::unwrap_used)] // a test panics to report a failure

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::registry::{NewAuthKey, Registry};
use controller::server::{lock, serve_with, ServeOptions, SharedRegistry};
use proto_control::messages::{ClientHello, RelayInfo, PROTOCOL_VERSION};
use proto_control::public_key;
use proto_relay::client::ClientEvent;
use proto_relay::frame::Key;
use proto_relay::server::Limits;
use relay::admission::{self, ControllerFeed};
use relay::node::{self, RelayNode};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};
use zeroize::Zeroizing;

const CONTROLLER: [u8; 32] = [0x42; 32];
const RELAY: [u8; 32] = [0x71; 32];

fn register(reg: &SharedRegistry, auth: &str, n: u8) {
    let hello = ClientHello {
        protocol_version: PROTOCOL_VERSION,
        node_key: public_key(&[n; 32]).to_vec(),
        hostname: format!("node{n}"),
        auth_key: auth.into(),
        ..ClientHello::default()
    };
    lock(reg).connect([0x10 + n; 32], &hello, 1).unwrap();
}

/// Connects a node with `secret`; the first event, or the reason it ended.
async fn try_join(
    addr: &str,
    relay: Key,
    secret: [u8; 32],
) -> (Result<ClientEvent, String>, mpsc::Receiver<ClientEvent>) {
    let (_tx, mut out_rx) = mpsc::channel(16);
    let (ev_tx, mut rx) = mpsc::channel(16);
    let addr = addr.to_string();
    let task = tokio::spawn(async move {
        let stamp = node::hello_timestamp(&std::sync::atomic::AtomicU64::new(0));
        let why = agent::relay_client::run(
            &addr,
            None,
            relay,
            &Zeroizing::new(secret),
            stamp,
            &mut out_rx,
            &ev_tx,
        )
        .await;
        drop(_tx);
        why
    });
    let first = tokio::select! {
        ev = rx.recv() => ev.ok_or_else(|| "closed".to_string()),
        why = task => Err(why.unwrap()),
    };
    (first, rx)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_verifying_relay_serves_exactly_the_registered_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = Registry::open(&dir.path().join("c.redb"), None).unwrap();
    let spec = NewAuthKey {
        reusable: true,
        ..Default::default()
    };
    let auth = reg.create_auth_key(&spec, 1).unwrap().1.to_string();
    let registry = Arc::new(Mutex::new(reg));
    register(&registry, &auth, 1);

    // The controller knows the relay by its key.
    let ctl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ctl_addr = ctl.local_addr().unwrap().to_string();
    let relays = vec![RelayInfo {
        address: "127.0.0.1:1".into(),
        public_key: public_key(&RELAY).to_vec(),
        stun: "127.0.0.1:1".into(),
    }];
    tokio::spawn(serve_with(
        ctl,
        registry.clone(),
        Arc::new(Zeroizing::new(CONTROLLER)),
        ServeOptions {
            relays: Arc::new(relays),
            ..ServeOptions::default()
        },
    ));

    let relay = RelayNode::new(Zeroizing::new(RELAY), Default::default(), Limits::default());
    relay.verify_clients(None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(node::serve_tcp(listener, relay.clone(), None));
    let cache = dir.path().join("relay.allowed-nodes");
    let feed = ControllerFeed {
        controller: ctl_addr,
        controller_key: public_key(&CONTROLLER),
        relay_key: Arc::new(Zeroizing::new(RELAY)),
        cache: cache.clone(),
    };
    tokio::spawn(admission::follow(feed, relay.clone()));
    let (one, two) = (public_key(&[1; 32]), public_key(&[2; 32]));
    wait_until("the list", || relay.admits(&one)).await;
    assert!(!relay.admits(&two));

    // Registered: served. Not registered: refused and counted.
    let (first, mut one_events) = try_join(&addr, relay.public_key(), [1; 32]).await;
    assert_eq!(first, Ok(ClientEvent::Connected));
    let (first, _) = try_join(&addr, relay.public_key(), [2; 32]).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(
        relay.counters.rejected_unknown_key.load(Ordering::Relaxed),
        1
    );

    // Node 1 removed: its relay connection goes within moments.
    lock(&registry).remove_node("node1").unwrap();
    let gone = timeout(Duration::from_secs(3), async {
        while one_events.recv().await.is_some() {}
    })
    .await;
    assert!(gone.is_ok(), "a removed node kept its relay connection");
    assert!(!relay.admits(&one));

    // Node 2 registers: served at once.
    register(&registry, &auth, 2);
    wait_until("node 2 on the list", || relay.admits(&two)).await;
    let (first, _) = try_join(&addr, relay.public_key(), [2; 32]).await;
    assert_eq!(first, Ok(ClientEvent::Connected));

    // The list is kept for the next start.
    let saved = admission::load_cache(&cache).unwrap();
    assert_eq!(saved, [two].into_iter().collect());
}

#[tokio::test]
async fn a_key_that_is_not_a_relay_of_the_network_gets_no_list() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(&dir.path().join("c.redb"), None).unwrap();
    let registry = Arc::new(Mutex::new(reg));
    let ctl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ctl_addr = ctl.local_addr().unwrap().to_string();
    tokio::spawn(serve_with(
        ctl,
        registry,
        Arc::new(Zeroizing::new(CONTROLLER)),
        ServeOptions::default(),
    ));
    let relay = RelayNode::new(Zeroizing::new(RELAY), Default::default(), Limits::default());
    relay.verify_clients(None);
    let feed = ControllerFeed {
        controller: ctl_addr,
        controller_key: public_key(&CONTROLLER),
        relay_key: Arc::new(Zeroizing::new(RELAY)),
        cache: dir.path().join("x"),
    };
    tokio::spawn(admission::follow(feed, relay.clone()));
    sleep(Duration::from_millis(500)).await;
    // Fail closed: no list, nobody served.
    assert!(!relay.admits(&public_key(&[1; 32])));
    assert!(!dir.path().join("x").exists());
}
