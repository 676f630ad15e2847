//! TCP across a tunnel, checked byte for byte: a seeded stream, so the
//! receiver checks every byte without the sender's copy, however TCP
//! splits the reads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A reproducible byte stream (xorshift), so the receiver can check every
/// byte without the sender's copy, however TCP splits the reads.
#[derive(Debug)]
pub struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// Sends `len` bytes of a seeded stream over TCP from namespace `src_ns` to
/// `dst` (in `dst_ns`) and checks every byte on arrival. Returns Mbit/s.
pub fn transfer(src_ns: String, dst_ns: String, dst: SocketAddr, len: usize) -> f64 {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || -> Result<usize, String> {
        netstack::netns::enter(&dst_ns).map_err(|e| format!("enter {dst_ns}: {e}"))?;
        let listener = TcpListener::bind(dst).map_err(|e| format!("bind {dst}: {e}"))?;
        ready_tx.send(()).map_err(|e| e.to_string())?;
        let (mut conn, _) = listener.accept().map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut expected = Stream::new(7);
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        loop {
            let n = conn
                .read(&mut buf)
                .map_err(|e| format!("read after {got} bytes: {e}"))?;
            if n == 0 {
                return Ok(got);
            }
            expected.fill(&mut want[..n]);
            if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
                return Err(format!("byte {} differs", got + i));
            }
            got += n;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server ready");
    let started = Instant::now();
    let client = std::thread::spawn(move || -> Result<(), String> {
        netstack::netns::enter(&src_ns).map_err(|e| format!("enter {src_ns}: {e}"))?;
        let mut conn = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .map_err(|e| format!("connect: {e}"))?;
        let mut stream = Stream::new(7);
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(buf.len());
            stream.fill(&mut buf[..n]);
            conn.write_all(&buf[..n])
                .map_err(|e| format!("write: {e}"))?;
            left -= n;
        }
        conn.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())
    });
    client
        .join()
        .expect("client thread")
        .unwrap_or_else(|e| panic!("client: {e}"));
    let got = server
        .join()
        .expect("server thread")
        .unwrap_or_else(|e| panic!("server: {e}"));
    assert_eq!(got, len, "bytes received");
    (len as f64 * 8.0) / started.elapsed().as_secs_f64() / 1e6
}
