//! Optional TLS around the relay protocol: for networks where only TLS
//! gets through, and so observers do not even see the upgrade. It adds no
//! trust: the Noise handshake inside already authenticates the relay by
//! its key and every frame. The provider is graviola (pure Rust).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The URL scheme that asks for TLS (`tls://host:port`).
pub const SCHEME: &str = "tls://";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls_graviola::default_provider())
}

/// An acceptor from a PEM certificate chain and a PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connector trusting the CA certificates in a PEM file.
pub fn connector(ca: &Path) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS CA {}: {e}", ca.display()))?;
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("TLS CA {}: {e}", ca.display()))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `tls://host:port` -> (`host:port`, true); `host:port` -> (it, false).
pub fn split_scheme(addr: &str) -> (&str, bool) {
    match addr.strip_prefix(SCHEME) {
        Some(rest) => (rest, true),
        None => (addr.strip_prefix("http://").unwrap_or(addr), false),
    }
}

/// The name a relay's certificate must carry: the host part of `addr`.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?}: {e}"))
}
