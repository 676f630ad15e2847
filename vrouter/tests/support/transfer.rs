//! 10 MiB of TCP across a tunnel, checked byte for byte (shared by the
//! vrouter's namespace tests).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

/// Sends 10 MiB from namespace `client_ns` to a listener on `to` in
/// `server_ns`; asserts every byte arrived unchanged and returns Mbit/s.
pub(crate) fn ten_mib(server_ns: &str, client_ns: &str, to: SocketAddr) -> f64 {
    const LEN: usize = 10 << 20;
    let pattern = |i: usize| (i as u8).wrapping_mul(31).wrapping_add((i >> 11) as u8);
    let server_ns = server_ns.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        netstack::netns::enter(&server_ns).unwrap();
        let l = TcpListener::bind(to).unwrap();
        ready_tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::with_capacity(LEN);
        c.read_to_end(&mut got).unwrap();
        got
    });
    ready_rx.recv().unwrap();
    let client_ns = client_ns.to_string();
    let start = Instant::now();
    std::thread::spawn(move || {
        netstack::netns::enter(&client_ns).unwrap();
        let mut c = TcpStream::connect(to).unwrap();
        let data: Vec<u8> = (0..LEN).map(pattern).collect();
        c.write_all(&data).unwrap();
    })
    .join()
    .unwrap();
    let got = server.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got.len(), LEN, "bytes lost");
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "bytes changed"
    );
    LEN as f64 * 8.0 / secs / 1e6
}
