//! A TLS round trip on loopback with the test certificate, and the
//! errors a misconfiguration gets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn bytes_cross_inside_tls_and_a_stranger_ca_is_refused() {
    let acceptor = transport::acceptor(&data("relay.pem"), &data("relay.key")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (tcp, from) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let from = from.to_string();
                if let Ok(mut s) = transport::accept(tcp, Some(&acceptor), &from, LIMIT).await {
                    let mut buf = [0u8; 5];
                    if s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                }
            });
        }
    });
    let good = transport::connector(Some(&data("ca.pem"))).unwrap();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut s = transport::connect(tcp, &addr, &good, LIMIT).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");

    let stranger = transport::connector(Some(&data("other-ca.pem"))).unwrap();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let e = transport::connect(tcp, &addr, &stranger, LIMIT)
        .await
        .err()
        .expect("an untrusted certificate");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
}

#[test]
fn misconfigurations_are_typed_errors() {
    let missing = transport::connector(Some(Path::new("/nonexistent/ca.pem"))).err();
    assert!(matches!(missing, Some(transport::TlsError::Ca(..))));
    let not_pem = transport::connector(Some(&data("README.md"))).err();
    assert!(matches!(not_pem, Some(transport::TlsError::Ca(..))));
    let wrong_key = transport::acceptor(&data("relay.pem"), &data("ca.pem")).err();
    assert!(matches!(wrong_key, Some(transport::TlsError::Key(..))));
    assert!(transport::server_name("127.0.0.1:7443").is_ok());
    assert!(transport::server_name("[fd00::1]:443").is_ok());
    assert!(transport::server_name("ctl.example:443").is_ok());
    assert!(matches!(
        transport::server_name("bad name:1"),
        Err(transport::TlsError::ServerName(..))
    ));
}

/// A server that answers whatever it is sent with `answer`, after
/// reading a whole request head.
async fn answering(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        loop {
            let (mut tcp, from) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let peer = from.to_string();
                if let Ok(request) = transport::http::read_head(&mut tcp, &peer, LIMIT).await {
                    assert!(request.head.starts_with(b"POST /p HTTP/1.1\r\n"));
                    let _ = tcp.write_all(answer).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upgrade_returns_what_follows_the_answer_and_a_refusal_says_what_came() {
    let limits = transport::DialLimits::default();
    let addr = answering(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: t\r\n\r\nearly").await;
    let mut s = transport::dial(&addr, None, limits).await.unwrap();
    let early = transport::http::upgrade(&mut s, &addr, "/p", "t", LIMIT).await;
    assert_eq!(early.unwrap(), b"early");

    let addr = answering(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
    let mut s = transport::dial(&addr, None, limits).await.unwrap();
    let refused = transport::http::upgrade(&mut s, &addr, "/p", "t", LIMIT).await;
    assert!(
        matches!(&refused, Err(transport::HttpError::NotUpgraded { status, .. }) if status == "HTTP/1.1 404 Not Found"),
        "{refused:?}"
    );

    // A server that says nothing runs into the deadline.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let mut s = transport::dial(&addr, None, limits).await.unwrap();
    let short = Duration::from_millis(200);
    let timed_out = transport::http::upgrade(&mut s, &addr, "/p", "t", short).await;
    assert!(
        matches!(timed_out, Err(transport::HttpError::Timeout { .. })),
        "{timed_out:?}"
    );
    drop(silent);
    let refused = transport::dial(&addr, None, limits).await;
    assert!(
        matches!(refused, Err(transport::DialError::Connect(..))),
        "{:?}",
        refused.err()
    );
}
