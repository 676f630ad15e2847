//! The threads that are not packets: timers, the status socket, HTTP
//! metrics.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use super::{unix_now, Io};

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

pub(super) fn status_loop(io: &Io, listener: &UnixListener) {
    for conn in listener.incoming().flatten() {
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim().split_once(' ') {
            None if line.trim() == "status" => io.read().status(),
            None if line.trim() == "metrics" => io.read().metrics(),
            None if line.trim() == "reload" => io.reload(),
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
                "unknown request {:?} (status, metrics, reload, up TUNNEL or down TUNNEL)\n",
                line.trim()
            ),
        };
        let _ = (&conn).write_all(answer.as_bytes());
    }
}

/// A minimal HTTP server: GET /metrics (Prometheus text) and /health.
pub(super) fn metrics_loop(io: &Io, listener: &std::net::TcpListener) {
    for conn in listener.incoming().flatten() {
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new(&conn).read_line(&mut line).is_err() {
            continue;
        }
        let (status, body) = match line.split_whitespace().nth(1) {
            Some("/metrics") => ("200 OK", io.read().metrics()),
            Some("/health") => ("200 OK", "ok\n".to_string()),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = (&conn).write_all(reply.as_bytes());
    }
}
