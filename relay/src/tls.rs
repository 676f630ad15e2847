//! Optional TLS around the relay protocol (`tls://host:port`), from
//! `transport`: it adds no trust, the Noise handshake inside already
//! authenticates the relay by its key and every frame.

pub use transport::{acceptor, connector, TlsAcceptor, TlsConnector, TlsError};
