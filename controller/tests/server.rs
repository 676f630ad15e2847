//! The controller's network side in-process, against hand-driven clients:
//! malformed input, silence and a client that stops reading each cost only
//! that one connection; other nodes keep getting their deltas and the
//! database keeps everything.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::registry::{NewAuthKey, Registry};
use controller::server::{lock, serve_with, Limits, SharedRegistry};
use prost::Message;
use proto_control::http;
use proto_control::messages::{
    decode_server, ClientHello, MapUpdate, ServerBody, PROTOCOL_VERSION,
};
use proto_control::{public_key, Channel, ChannelEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use zeroize::Zeroizing;

const CONTROLLER_KEY: [u8; 32] = [0x42; 32];

struct Server {
    addr: SocketAddr,
    registry: SharedRegistry,
    auth_key: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
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
    let limits = Limits {
        handshake: Duration::from_millis(500),
        write: Duration::from_millis(300),
        idle: Duration::from_secs(5),
        ..Limits::default()
    };
    tokio::spawn(serve_with(
        listener,
        registry.clone(),
        Arc::new(Zeroizing::new(CONTROLLER_KEY)),
        limits,
        Arc::new(Vec::new()),
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
}

impl Node {
    async fn join(
        server: &Server,
        id: u8,
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
            node_key: vec![id; 32],
            hostname: format!("node{id}"),
            auth_key: auth_key.into(),
            endpoints: vec![],
            map_version: 0,
        };
        let ch = Channel::client(
            &[id; 32],
            &public_key(&CONTROLLER_KEY),
            [id; 32],
            &hello.encode_to_vec(),
        )
        .expect("client");
        let mut node = Self {
            stream,
            ch,
            buf: vec![0; 65536],
        };
        node.flush().await;
        let first = node.next().await.expect("first message");
        (node, first)
    }

    async fn flush(&mut self) {
        while let Some(b) = self.ch.poll_transmit() {
            self.stream.write_all(&b).await.expect("write");
        }
    }

    /// The next message, or `None` when the server closes the connection.
    async fn next(&mut self) -> Option<ServerBody> {
        loop {
            if let Some(ev) = self.ch.poll_event() {
                match ev {
                    ChannelEvent::Connected { .. } => continue,
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
