//! Optional TLS around the relay protocol (`tls://host:port`), from
//! `transport`: it adds no trust, the Noise handshake inside already
//! authenticates the relay by its key and every frame.

pub use transport::{acceptor, connector, TlsAcceptor, TlsConnector, TlsError};

/// The URL scheme that asks for TLS (`tls://host:port`).
pub const SCHEME: &str = "tls://";

/// `tls://host:port` -> (`host:port`, true); `host:port` -> (it, false).
pub fn split_scheme(addr: &str) -> (&str, bool) {
    match addr.strip_prefix(SCHEME) {
        Some(rest) => (rest, true),
        None => (addr.strip_prefix("http://").unwrap_or(addr), false),
    }
}
