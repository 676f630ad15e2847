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
