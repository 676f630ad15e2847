//! Optional TLS around CloudVLAN's TCP protocols: for networks where only
//! TLS gets through, and so observers do not even see the HTTP upgrade.
//! It adds no trust: the Noise handshake inside authenticates the server
//! by its static key (and the client by its own) and every frame; a TLS
//! man in the middle can only cut the connection. The provider is
//! graviola (pure Rust), so the default build stays free of C.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub mod http;

pub use http::HttpError;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where Linux distributions keep the system's trusted CAs, in the order
/// OpenSSL-based tools look (Debian first); `SSL_CERT_FILE` goes before.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("TLS certificate {0}: {1}")]
    Certificate(PathBuf, String),
    #[error("TLS key {0}: {1}")]
    Key(PathBuf, String),
    #[error("TLS CA {0}: {1}")]
    Ca(PathBuf, String),
    #[error("no system CA bundle found (tried $SSL_CERT_FILE and {}); give a CA file", SYSTEM_BUNDLES.join(", "))]
    NoSystemRoots,
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("{0:?} is not a name a certificate can carry: {1}")]
    ServerName(String, String),
    #[error("TLS with {0}: {1}")]
    Handshake(String, std::io::Error),
    #[error("TLS with {0}: timed out")]
    Timeout(String),
}

/// Why a connection to a server could not be made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DialError {
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} needs TLS, and no CA certificate is configured to check it")]
    TlsNotConfigured(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The connector to dial `addr` with: none when it does not ask for TLS,
/// and an error when it does but none is configured (never plain instead).
pub fn tls_for<'a>(
    addr: &str,
    wants_tls: bool,
    configured: Option<&'a TlsConnector>,
) -> Result<Option<&'a TlsConnector>, DialError> {
    match (wants_tls, configured) {
        (false, _) => Ok(None),
        (true, Some(connector)) => Ok(Some(connector)),
        (true, None) => Err(DialError::TlsNotConfigured(addr.into())),
    }
}

/// How long each step of [`dial`] may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialLimits {
    pub connect: Duration,
    pub tls: Duration,
}

impl Default for DialLimits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            tls: Duration::from_secs(10),
        }
    }
}

/// Connects to `host_port` (Nagle off: our frames are small and
/// latency-bound), inside TLS when `tls` is given.
pub async fn dial(
    host_port: &str,
    tls: Option<&TlsConnector>,
    limits: DialLimits,
) -> Result<Box<dyn Io>, DialError> {
    let tcp = timeout(limits.connect, TcpStream::connect(host_port))
        .await
        .map_err(|_| DialError::Timeout(host_port.into()))?
        .map_err(|e| DialError::Connect(host_port.into(), e))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some(connector) => Ok(connect(tcp, host_port, connector, limits.tls).await?),
    }
}

/// Any byte stream a protocol can run on: TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls_graviola::default_provider())
}

/// An acceptor from a PEM certificate chain and a PEM private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate(cert.into(), e.to_string()))?;
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key(key.into(), e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Certificate(cert.into(), e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Ca(path.into(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Ca(path.into(), "no certificate in it".into()));
    }
    // A system bundle may hold a certificate rustls cannot use; skip it
    // rather than refuse every other one.
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::Ca(path.into(), "no usable CA certificate".into()));
    }
    Ok(())
}

/// The system's trusted CAs: `$SSL_CERT_FILE`, else the distribution's
/// bundle.
pub fn system_roots() -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(file) = std::env::var_os("SSL_CERT_FILE") {
        add_pem_file(&mut roots, Path::new(&file))?;
        return Ok(roots);
    }
    let bundle = SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(TlsError::NoSystemRoots)?;
    add_pem_file(&mut roots, bundle)?;
    Ok(roots)
}

/// A connector trusting the CA certificates in the PEM file `ca`, or the
/// system's CAs when there is none.
pub fn connector(ca: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let roots = match ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            add_pem_file(&mut roots, path)?;
            roots
        }
        None => system_roots()?,
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The name a server's certificate must carry: the host part of
/// `host:port` (an IP address or a DNS name).
pub fn server_name(host_port: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => host_port,
    };
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::ServerName(host.to_string(), e.to_string()))
}

/// Wraps a connected TCP stream in TLS to `host_port`.
pub async fn connect(
    tcp: TcpStream,
    host_port: &str,
    connector: &TlsConnector,
    limit: Duration,
) -> Result<Box<dyn Io>, TlsError> {
    let name = server_name(host_port)?;
    let stream = timeout(limit, connector.connect(name, tcp))
        .await
        .map_err(|_| TlsError::Timeout(host_port.into()))?
        .map_err(|e| TlsError::Handshake(host_port.into(), e))?;
    Ok(Box::new(stream))
}

/// The server side of an accepted connection: inside TLS when there is
/// an acceptor (a server with a certificate speaks only TLS), plain
/// otherwise. `peer` names the client in errors.
pub async fn accept(
    tcp: TcpStream,
    acceptor: Option<&TlsAcceptor>,
    peer: &str,
    limit: Duration,
) -> Result<Box<dyn Io>, TlsError> {
    let Some(acceptor) = acceptor else {
        return Ok(Box::new(tcp));
    };
    let stream = timeout(limit, acceptor.accept(tcp))
        .await
        .map_err(|_| TlsError::Timeout(peer.into()))?
        .map_err(|e| TlsError::Handshake(peer.into(), e))?;
    Ok(Box::new(stream))
}
