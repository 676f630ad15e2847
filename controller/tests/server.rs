//! The controller's network side in-process, against hand-driven clients:
//! malformed input, silence and a client that stops reading each cost only
//! that one connection; other nodes keep getting their deltas and the
//! database keeps everything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::registry::{NewAuthKey, Registry};
use controller::server::{lock, serve_with, Limits, ServeOptions, SharedRegistry};
use prost::Message;
use proto_control::http;
use proto_control::messages::{
    decode_server, ClientBody, ClientHello, ClientMessage, Endpoint, MapUpdate, NatKind,
    ServerBody, UpdateEndpoints, PROTOCOL_VERSION,
};
use proto_control::{public_key, Channel, ChannelEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use zeroize::Zeroizing;

const CONTROLLER_KEY: [u8; 32] = [0x42; 32];

/// Each connection's hello timestamp grows, as a real node's does.
fn next_timestamp() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    LAST.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

struct Server {
    addr: SocketAddr,
    registry: SharedRegistry,
    auth_key: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    start_with(Limits {
        handshake: Duration::from_millis(500),
        write: Duration::from_millis(300),
        idle: Duration::from_secs(5),
        ..Limits::default()
    })
    .await
}

async fn start_with(limits: Limits) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let mut reg = Registry::open(&dir.path().join("c.redb"), None).expect("registry");
    let spec = NewAuthKey {
        reusable: true,
        ..Default::default()
    };
    let auth_key = reg.create_auth_key(&spec, 1).expect("key").1.to_string();
    let registry = Arc::new(Mutex::new(reg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve_with(
        listener,
        registry.clone(),
        Arc::new(Zeroizing::new(CONTROLLER_KEY)),
        ServeOptions {
            limits,
            ..ServeOptions::default()
        },
    ));
    Server {
        addr,
        registry,
        auth_key,
        _dir: dir,
    }
}

/// A node connection driven by hand.
struct Node {
    stream: TcpStream,
    ch: Channel,
    buf: Vec<u8>,
    /// Every byte this node wrote after the HTTP upgrade, as sent: what a
    /// passive observer of the TCP stream records.
    sent: Vec<u8>,
}

impl Node {
    async fn join(
        server: &Server,
        id: u8,
        auth_key: &str,
        rcvbuf: Option<u32>,
    ) -> (Self, ServerBody) {
        Self::connect(server, id, [id; 32], auth_key, rcvbuf).await
    }

    /// Machine key `[id; 32]`, announcing `node_key`.
    async fn connect(
        server: &Server,
        id: u8,
        node_key: [u8; 32],
        auth_key: &str,
        rcvbuf: Option<u32>,
    ) -> (Self, ServerBody) {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("rcvbuf");
        }
        let mut stream = socket.connect(server.addr).await.expect("connect");
        stream
            .write_all(http::upgrade_request("test").as_bytes())
            .await
            .expect("upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while http::head_end(&head).is_none() {
            stream.read_exact(&mut byte).await.expect("head");
            head.push(byte[0]);
        }
        assert!(http::is_upgrade_response(&head));
        let hello = ClientHello {
            protocol_version: PROTOCOL_VERSION,
            node_key: node_key.to_vec(),
            hostname: format!("node{id}"),
            auth_key: auth_key.into(),
            endpoints: vec![],
            map_version: 0,
            relay_feed: false,
            nat: 0,
        };
        let ch = Channel::client(
            &[id; 32],
            &public_key(&CONTROLLER_KEY),
            [id; 32],
            next_timestamp(),
            &hello.encode_to_vec(),
        )
        .expect("client");
        let mut node = Self {
            stream,
            ch,
            buf: vec![0; 65536],
            sent: Vec::new(),
        };
        node.flush().await;
        let first = node.next().await.expect("first message");
        (node, first)
    }

    async fn flush(&mut self) {
        while let Some(b) = self.ch.poll_transmit() {
            self.stream.write_all(&b).await.expect("write");
            self.sent.extend_from_slice(&b);
        }
    }

    /// The next message, or `None` when the server closes the connection.
    async fn next(&mut self) -> Option<ServerBody> {
        loop {
            if let Some(ev) = self.ch.poll_event() {
                match ev {
                    ChannelEvent::Connected { .. } | ChannelEvent::Hello { .. } => continue,
                    ChannelEvent::Message(m) => return Some(decode_server(&m).expect("decode")),
                }
            }
            let n = timeout(Duration::from_secs(5), self.stream.read(&mut self.buf))
                .await
                .expect("read timeout")
                .ok()?;
            if n == 0 {
                return None;
            }
            self.ch.handle_input(&self.buf[..n]).expect("input");
            // The handshake's confirmation, once message 2 is in.
            self.flush().await;
        }
    }

    /// Reads maps until one reaches `version`.
    async fn until_version(&mut self, version: u64) -> MapUpdate {
        loop {
            match self.next().await {
                Some(ServerBody::Map(m)) if m.version >= version && !m.more => return m,
                Some(_) => {}
                None => panic!("closed before version {version}"),
            }
        }
    }
}

async fn closes_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn bad_peers_lose_only_their_own_connection() {
    let server = start().await;
    let (mut good, first) = Node::join(&server, 1, &server.auth_key, None).await;
    assert!(matches!(first, ServerBody::Registered(_)), "{first:?}");
    good.until_version(1).await;

    // Plain HTTP that is not ours gets an HTTP answer, not a hang.
    for (req, status) in [
        ("GET /nothing HTTP/1.1\r\n\r\n", "404"),
        ("junk\r\n\r\n", "400"),
    ] {
        let mut s = TcpStream::connect(server.addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    // The key is served for convenience.
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.write_all(b"GET /key HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    assert!(answer.ends_with(&format!("{}\n", hex::encode(public_key(&CONTROLLER_KEY)))));

    // Silence after connecting, and an endless header, are cut off.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        closes_within(&mut silent, Duration::from_secs(2)).await,
        "silent client kept"
    );
    let mut endless = TcpStream::connect(server.addr).await.expect("connect");
    endless.write_all(&vec![b'a'; 9000]).await.expect("write");
    assert!(
        closes_within(&mut endless, Duration::from_secs(2)).await,
        "oversized head kept"
    );

    // A wrong auth key is refused and told why.
    let (mut refused, first) = Node::join(&server, 2, "cvlan-auth-0000000000000001-00", None).await;
    assert!(
        matches!(first, ServerBody::Refused(ref r) if r.message.contains("not recognised")),
        "{first:?}"
    );
    assert!(refused.next().await.is_none(), "refused connection closed");

    // A registered node that sends a forged frame is dropped...
    let (mut forger, _) = Node::join(&server, 3, &server.auth_key, None).await;
    forger.stream.write_all(&[0, 40]).await.expect("len");
    forger.stream.write_all(&[0x55; 40]).await.expect("frame");
    assert!(
        closes_within(&mut forger.stream, Duration::from_secs(2)).await,
        "forger kept"
    );

    // ...and a node that stops reading stalls nobody: with many changes
    // queued for it, the good node still gets every delta at once.
    let (_stuck, _) = Node::join(&server, 4, &server.auth_key, Some(4096)).await;
    let target = {
        let mut reg = lock(&server.registry);
        for i in 0..500u32 {
            let hello = ClientHello {
                protocol_version: PROTOCOL_VERSION,
                node_key: [&i.to_be_bytes()[..], &[9; 28]].concat(),
                hostname: format!("bulk{i}"),
                auth_key: server.auth_key.clone(),
                endpoints: vec![],
                map_version: 0,
                relay_feed: false,
                nat: 0,
            };
            let mut machine = [7u8; 32];
            machine[..4].copy_from_slice(&i.to_be_bytes());
            reg.connect(machine, &hello, 1).expect("bulk join");
        }
        reg.version()
    };
    let update = timeout(Duration::from_secs(2), good.until_version(target))
        .await
        .expect("good node starved");
    assert_eq!(update.version, target);

    // Nothing was lost: every node that joined is still registered.
    let reg = lock(&server.registry);
    assert_eq!(
        reg.nodes().count(),
        3 + 500,
        "node1, forger, stuck and the bulk"
    );
}

/// Opens a connection and writes `bytes` after the HTTP upgrade, as an
/// observer replaying a recording would; the stream is kept open.
async fn replay(server: &Server, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    stream
        .write_all(http::upgrade_request("test").as_bytes())
        .await
        .expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while http::head_end(&head).is_none() {
        stream.read_exact(&mut byte).await.expect("head");
        head.push(byte[0]);
    }
    stream.write_all(bytes).await.expect("replay");
    stream
}

/// The first frame of a recording: Noise message 1.
fn first_frame(recorded: &[u8]) -> &[u8] {
    let len = usize::from(u16::from_be_bytes([recorded[0], recorded[1]]));
    &recorded[..2 + len]
}

#[tokio::test]
async fn a_replayed_first_handshake_message_changes_nothing() {
    let server = start().await;
    // Node 1 joins; an observer records what it sends.
    let (old, first) = Node::join(&server, 1, &server.auth_key, None).await;
    let ServerBody::Registered(reg1) = first else {
        panic!("{first:?}")
    };
    let recorded_before_rotation = old.sent.clone();
    drop(old);
    // It reconnects with a rotated node key: this is the live session.
    let rotated = [0xa1; 32];
    let (mut live, _) = Node::connect(&server, 1, rotated, "", None).await;
    let version = lock(&server.registry).version();
    live.until_version(version).await;
    assert_eq!(
        lock(&server.registry)
            .node(reg1.node_id)
            .map(|n| n.node_key.clone()),
        Some(rotated.to_vec())
    );
    // Node 2 joins with the reusable key, is recorded, then removed.
    let (gone, _) = Node::join(&server, 2, &server.auth_key, None).await;
    let recorded_removed = gone.sent.clone();
    drop(gone);
    lock(&server.registry).remove_node("node2").expect("remove");
    let version = lock(&server.registry).version();
    live.until_version(version).await;

    // The recordings are replayed, message 1 alone and everything sent.
    let _replays = [
        replay(&server, first_frame(&recorded_before_rotation)).await,
        replay(&server, &recorded_before_rotation).await,
        replay(&server, first_frame(&recorded_removed)).await,
        replay(&server, &recorded_removed).await,
    ];
    tokio::time::sleep(Duration::from_millis(700)).await;

    {
        let reg = lock(&server.registry);
        assert_eq!(
            reg.node(reg1.node_id).map(|n| n.node_key.clone()),
            Some(rotated.to_vec()),
            "a replay rolled the node key back"
        );
        assert_eq!(
            reg.nodes().map(|n| n.name.clone()).collect::<Vec<_>>(),
            vec!["node1".to_string()],
            "a replay re-registered a removed node"
        );
        assert_eq!(reg.version(), version, "a replay changed the map");
    }
    // The live session was not displaced: it still gets the next change.
    let (_third, _) = Node::join(&server, 3, &server.auth_key, None).await;
    let target = lock(&server.registry).version();
    let update = timeout(Duration::from_secs(2), live.until_version(target))
        .await
        .expect("the live session stopped getting deltas");
    assert!(
        update.upserts.iter().any(|p| p.name == "node3"),
        "{update:?}"
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_pending_handshakes_than_its_share() {
    let server = start_with(Limits {
        handshake: Duration::from_secs(3),
        pending_per_address: 2,
        ..Limits::default()
    })
    .await;
    // Two silent connections take this address's two slots...
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so a third is dropped at once, long before the handshake timeout.
    let mut third = TcpStream::connect(server.addr).await.expect("connect");
    assert!(
        closes_within(&mut third, Duration::from_millis(500)).await,
        "a third pending handshake from one address was kept"
    );
    // Slots come back when connections end; a node then joins as usual.
    drop(silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_node, first) = Node::join(&server, 1, &server.auth_key, None).await;
    assert!(matches!(first, ServerBody::Registered(_)), "{first:?}");
    // A joined node no longer counts: two more may be pending beside it.
    let _a = TcpStream::connect(server.addr).await.expect("connect");
    let (_node2, first) = Node::join(&server, 2, &server.auth_key, None).await;
    assert!(matches!(first, ServerBody::Registered(_)), "{first:?}");
}

#[tokio::test]
async fn endpoint_updates_sent_too_close_together_are_deferred_not_lost() {
    let server = start_with(Limits {
        endpoint_update_interval: Duration::from_millis(500),
        ..Limits::default()
    })
    .await;
    let (mut a, _) = Node::join(&server, 1, &server.auth_key, None).await;
    let (mut b, _) = Node::join(&server, 2, &server.auth_key, None).await;
    // a's addresses change three times within a few milliseconds (a
    // readdressed host, then its reflexive address, then its NAT kind).
    for (port, nat) in [(1u16, 0), (2, 0), (3, NatKind::NatCone as i32)] {
        let update = ClientMessage {
            body: Some(ClientBody::Endpoints(UpdateEndpoints {
                endpoints: vec![Endpoint::from(SocketAddr::from(([192, 0, 2, 1], port)))],
                nat,
            })),
        };
        a.ch.send(&update.encode_to_vec()).expect("send");
        a.flush().await;
    }
    // b's map ends up with the last one, once the interval has passed.
    let want = Endpoint::from(SocketAddr::from(([192, 0, 2, 1], 3)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last update never reached the map"
        );
        if let Some(ServerBody::Map(m)) = b.next().await {
            if m.upserts
                .iter()
                .any(|p| p.endpoints == [want.clone()] && p.nat == NatKind::NatCone as i32)
            {
                break;
            }
        }
    }
}
