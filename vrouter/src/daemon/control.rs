//! The threads that are not packets: timers, the status socket, HTTP
//! metrics.
//!
//! Both sockets serve each client on its own thread (at most
//! [`MAX_CLIENTS`] at once) under one deadline for reading the request
//! and writing the answer, and read at most [`MAX_REQUEST`] bytes: a slow,
//! silent or endless client costs only its own connection, never `reload`,
//! `up`, `down` or another client's answer.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{unix_now, Io};

/// A status request is one line, a metrics request one HTTP head.
pub(super) const MAX_REQUEST: usize = 4096;
/// How long a client has, in all, to send its request and take the answer.
pub(super) const DEADLINE: Duration = Duration::from_secs(2);
/// Clients served at once on each socket; more are closed at once.
pub(super) const MAX_CLIENTS: usize = 16;

pub(super) fn timer_loop(io: &Io) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let mut gw = io.lock();
        gw.set_unix_time(unix_now());
        let now = Instant::now();
        if gw.poll_timeout().is_some_and(|t| t <= now) {
            gw.handle_timeout(now);
        }
        io.flush(&mut gw);
    }
}

/// A connection whose reads and writes can be given a deadline.
pub(super) trait Client: Read + Write + Send + 'static {
    fn set_timeouts(&self, left: Duration) -> io::Result<()>;
}

impl Client for UnixStream {
    fn set_timeouts(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

impl Client for std::net::TcpStream {
    fn set_timeouts(&self, left: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(left))?;
        self.set_write_timeout(Some(left))
    }
}

/// Time left before `deadline`, or an error once it has passed.
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// Reads until `end` (included) within the deadline and the size bound.
fn read_request(c: &mut impl Client, end: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
    let mut request = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        c.set_timeouts(left(deadline)?)?;
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        request.extend_from_slice(&chunk[..n]);
        if let Some(at) = request.windows(end.len()).position(|w| w == end) {
            request.truncate(at + end.len());
            return Ok(request);
        }
        if request.len() > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too long",
            ));
        }
    }
}

/// What a request is answered with.
pub(super) type Answer = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// Serves every connection of `incoming` on its own thread: reads one
/// request ending with `end`, writes `answer(request)`.
pub(super) fn serve_clients<C: Client>(
    incoming: impl Iterator<Item = io::Result<C>>,
    end: &'static [u8],
    answer: Answer,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in incoming.flatten() {
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::AcqRel);
            debug!("too many control clients at once; closing one");
            continue;
        }
        let (mine, answer) = (active.clone(), answer.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                let mut conn = conn;
                let deadline = Instant::now() + DEADLINE;
                let served = read_request(&mut conn, end, deadline).and_then(|request| {
                    let reply = answer(&request);
                    conn.set_timeouts(left(deadline)?)?;
                    conn.write_all(&reply)
                });
                if let Err(e) = served {
                    debug!(error = %e, "control client dropped");
                }
                mine.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            // The thread never started: give its place back.
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One line from `cvlan-vrouter status|metrics|reload|up|down`.
fn status_answer(io: &Io, request: &[u8]) -> Vec<u8> {
    let line = String::from_utf8_lossy(request);
    let line = line.trim();
    let answer = match line.split_once(' ') {
        None if line == "status" => io.read().status(),
        None if line == "metrics" => io.read().metrics(),
        None if line == "reload" => io.reload(),
        Some((verb @ ("up" | "down"), tunnel)) => {
            let mut gw = io.lock();
            let now = Instant::now();
            let result = if verb == "up" {
                gw.up(now, tunnel)
            } else {
                gw.down(now, tunnel)
            };
            io.flush(&mut gw);
            result.unwrap_or_else(|e| format!("refused: {e}\n"))
        }
        _ => format!(
            "unknown request {line:?} (status, metrics, reload, up TUNNEL or down TUNNEL)\n"
        ),
    };
    answer.into_bytes()
}

pub(super) fn status_loop(io: Arc<Io>, listener: &UnixListener) {
    serve_clients(
        listener.incoming(),
        b"\n",
        Arc::new(move |request: &[u8]| status_answer(&io, request)),
    );
}

/// A minimal HTTP server: GET /metrics (Prometheus text) and /health.
fn http_answer(io: &Io, request: &[u8]) -> Vec<u8> {
    let head = String::from_utf8_lossy(request);
    let (status, body) = match head.split_whitespace().nth(1) {
        Some("/metrics") => ("200 OK", io.read().metrics()),
        Some("/health") => ("200 OK", "ok\n".to_string()),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub(super) fn metrics_loop(io: Arc<Io>, listener: &std::net::TcpListener) {
    serve_clients(
        listener.incoming(),
        b"\r\n\r\n",
        Arc::new(move |request: &[u8]| http_answer(&io, request)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (std::path::PathBuf, tempdir::Dir) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            serve_clients(
                listener.incoming(),
                b"\n",
                Arc::new(|r: &[u8]| [b"got ", r].concat()),
            )
        });
        (path, dir)
    }

    /// A private directory removed when dropped.
    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir()
                    .join(format!("cvlan-vrouter-control-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn ask(path: &std::path::Path, request: &[u8]) -> (String, Duration) {
        let start = Instant::now();
        let mut c = UnixStream::connect(path).unwrap();
        // A client over the bound may be closed before it writes.
        let _ = c.write_all(request);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        (out, start.elapsed())
    }

    #[test]
    fn silent_slow_and_endless_clients_block_nobody() {
        let (path, _dir) = echo_server();
        // Silent, half a request, and an endless line, all held open.
        let silent = UnixStream::connect(&path).unwrap();
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(b"stat").unwrap();
        let mut endless = UnixStream::connect(&path).unwrap();
        let _ = endless.write_all(&vec![b'x'; MAX_REQUEST * 4]);
        // Someone else is answered at once.
        let (out, took) = ask(&path, b"status\n");
        assert_eq!(out, "got status\n");
        assert!(took < Duration::from_millis(500), "{took:?}");
        // The endless one was cut off at the size bound, without an answer.
        let mut rest = Vec::new();
        let _ = endless.read_to_end(&mut rest);
        assert!(rest.is_empty());
        // The silent one is closed at the deadline.
        let start = Instant::now();
        let mut silent = silent;
        let mut buf = [0u8; 8];
        assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
        let waited = start.elapsed();
        assert!(
            waited <= DEADLINE + Duration::from_millis(500),
            "{waited:?}"
        );
        drop(half);
    }

    #[test]
    fn more_clients_than_the_bound_are_closed_not_queued() {
        let (path, _dir) = echo_server();
        let held: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let (out, took) = ask(&path, b"status\n");
        assert_eq!(out, "", "over the bound: closed");
        assert!(took < Duration::from_millis(500));
        drop(held);
        // Places come back as clients go.
        let start = Instant::now();
        loop {
            let (out, _) = ask(&path, b"again\n");
            if out == "got again\n" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "no place came back"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
