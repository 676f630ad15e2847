//! One control connection from the node to the controller (tokio): TCP,
//! the HTTP upgrade, the Noise handshake carrying the node's hello, then
//! messages until the connection fails. What happens is reported to the
//! daemon as [`ControlEvent`]s tagged with the connection's generation, so
//! news from an abandoned connection is recognised and ignored.

use std::time::Duration;

use prost::Message;
use proto_control::http;
use proto_control::messages::{
    decode_server, encode_client, ClientBody, ClientHello, MapAssembler, MapUpdate, Ping, Refused,
    Registered, ServerBody, ServerHello, PROTOCOL_VERSION,
};
use proto_control::{Channel, ChannelEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use transport::{DialLimits, Io};
use zeroize::Zeroizing;

/// Why a control connection could not be made or ended. The daemon
/// reports it as one line (`Display`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error(transparent)]
    Address(#[from] BadControllerUrl),
    #[error(transparent)]
    Dial(#[from] transport::DialError),
    #[error(transparent)]
    Http(#[from] transport::HttpError),
    #[error(transparent)]
    Seed(#[from] cvlan_core::seed::SeedError),
    #[error("reading from the controller: {0}")]
    Read(std::io::Error),
    #[error("writing to the controller: {0}")]
    Write(std::io::Error),
    #[error("the controller is not reading")]
    NotReading,
    #[error(
        "the controller closed the connection during the Noise handshake (wrong controller key?)"
    )]
    ClosedInHandshake,
    #[error("handshake with the controller failed: wrong controller key?")]
    Handshake,
    #[error("control channel: {0}")]
    Channel(proto_control::ChannelError),
    #[error("from the controller: {0}")]
    Decode(#[from] proto_control::messages::DecodeError),
    #[error("controller speaks protocol {0}, we speak {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("controller silent for {} s", SILENCE_LIMIT.as_secs())]
    Silent,
}

/// A controller URL we cannot dial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controller {0:?}: expected https://HOST[:PORT], http://HOST[:PORT] or HOST[:PORT]")]
pub struct BadControllerUrl(pub String);

impl From<proto_control::ChannelError> for ControlError {
    fn from(e: proto_control::ChannelError) -> Self {
        match e {
            proto_control::ChannelError::Handshake => Self::Handshake,
            e => Self::Channel(e),
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Nothing from the controller for this long (it answers pings): gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(40);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_PORT: u16 = 7443;
const HTTPS_PORT: u16 = 443;

#[derive(Debug)]
pub enum ControlEvent {
    Registered(Registered),
    Map(MapUpdate),
    Refused(Refused),
    Lost(String),
}

#[derive(Clone)]
pub struct ConnectParams {
    /// `host:port`, `http://host:port` or `host` (port 7443).
    pub controller: String,
    pub controller_key: [u8; 32],
    pub machine_key: Zeroizing<[u8; 32]>,
    pub hello: ClientHello,
    /// The hello's timestamp (from [`crate::settings::HelloClock`]).
    pub timestamp: u64,
    /// Checks the controller's certificate, for `https://`.
    pub tls: Option<transport::TlsConnector>,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectParams")
            .field("controller", &self.controller)
            .finish_non_exhaustive()
    }
}

/// Where the controller is, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerAddr {
    pub host_port: String,
    /// `https://`: the channel rides inside TLS (Noise stays the
    /// authentication; TLS is for networks that let only TLS through).
    pub tls: bool,
}

/// `https://HOST[:PORT]` (443 by default), `http://HOST[:PORT]` or
/// `HOST[:PORT]` (7443).
pub fn controller_address(url: &str) -> Result<ControllerAddr, BadControllerUrl> {
    let (rest, tls) = match url.strip_prefix("https://") {
        Some(rest) => (rest, true),
        None => (url.strip_prefix("http://").unwrap_or(url), false),
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains("://") {
        return Err(BadControllerUrl(url.into()));
    }
    let default_port = if tls { HTTPS_PORT } else { DEFAULT_PORT };
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.ends_with(':')
                && port.parse::<u16>().is_ok()
                && (!host.contains(':') || host.starts_with('['))
        }
        None => false,
    };
    let host_port = if has_port {
        rest.to_string()
    } else if rest.contains(':') && !rest.starts_with('[') {
        format!("[{rest}]:{default_port}")
    } else {
        format!("{rest}:{default_port}")
    };
    Ok(ControllerAddr { host_port, tls })
}

/// Runs one connection until it ends; every outcome is sent on `events`.
/// `outgoing` carries messages from the daemon (endpoint updates).
pub async fn run(
    params: ConnectParams,
    generation: u64,
    events: mpsc::Sender<(u64, ControlEvent)>,
    mut outgoing: mpsc::Receiver<ClientBody>,
) {
    let send = |e| {
        let events = events.clone();
        async move {
            let _ = events.send((generation, e)).await;
        }
    };
    let reason = match session(&params, &mut outgoing, &send).await {
        Ok(()) => "connection closed by the controller".to_string(),
        Err(e) => e.to_string(),
    };
    send(ControlEvent::Lost(reason)).await;
}

async fn session<F, Fut>(
    params: &ConnectParams,
    outgoing: &mut mpsc::Receiver<ClientBody>,
    report: F,
) -> Result<(), ControlError>
where
    F: Fn(ControlEvent) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let target = controller_address(&params.controller)?;
    let addr = target.host_port.clone();
    let tls = transport::tls_for(&addr, target.tls, params.tls.as_ref())?;
    let limits = DialLimits {
        connect: CONNECT_TIMEOUT,
        tls: HANDSHAKE_TIMEOUT,
    };
    let mut stream = transport::dial(&addr, tls, limits).await?;
    let early = transport::http::upgrade(
        &mut stream,
        &addr,
        http::CONTROL_PATH,
        http::UPGRADE_TOKEN,
        HANDSHAKE_TIMEOUT,
    )
    .await?;
    let hello = params.hello.encode_to_vec();
    let mut ch = Channel::client(
        &params.machine_key,
        &params.controller_key,
        cvlan_core::os_seed()?,
        params.timestamp,
        &hello,
    )?;
    ch.handle_input(&early)?;
    flush(&mut stream, &mut ch).await?;
    let mut assembler = MapAssembler::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    let mut nonce = 0u64;
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = read.map_err(ControlError::Read)?;
                if n == 0 && !ch.is_open() {
                    // The controller drops a handshake it cannot decrypt.
                    return Err(ControlError::ClosedInHandshake);
                }
                if n == 0 {
                    return Ok(());
                }
                last_heard = Instant::now();
                ch.handle_input(&buf[..n])?;
                while let Some(event) = ch.poll_event() {
                    match event {
                        // Only a responder is asked about a hello.
                        ChannelEvent::Hello { .. } => {}
                        ChannelEvent::Connected { hello, .. } => {
                            let server = ServerHello::decode(hello.as_slice())
                                .map_err(proto_control::messages::DecodeError::from)?;
                            if server.protocol_version != PROTOCOL_VERSION {
                                return Err(ControlError::Version(server.protocol_version));
                            }
                        }
                        ChannelEvent::Message(m) => match decode_server(&m)? {
                            ServerBody::Registered(r) => report(ControlEvent::Registered(r)).await,
                            ServerBody::Map(part) => {
                                if let Some(map) = assembler.push(part)? {
                                    report(ControlEvent::Map(map)).await;
                                }
                            }
                            ServerBody::Refused(r) => {
                                report(ControlEvent::Refused(r)).await;
                                return Ok(());
                            }
                            // For relays only; a node ignores it.
                            ServerBody::Pong(_) | ServerBody::RelayKeys(_) => {}
                        },
                    }
                }
                flush(&mut stream, &mut ch).await?;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Err(ControlError::Silent);
                }
                if ch.is_open() {
                    nonce += 1;
                    ch.send(&encode_client(ClientBody::Ping(Ping { nonce })))?;
                    flush(&mut stream, &mut ch).await?;
                }
            }
            Some(body) = outgoing.recv() => {
                if ch.is_open() {
                    ch.send(&encode_client(body))?;
                    flush(&mut stream, &mut ch).await?;
                }
            }
        }
    }
}

async fn flush(stream: &mut (impl Io + ?Sized), ch: &mut Channel) -> Result<(), ControlError> {
    while let Some(bytes) = ch.poll_transmit() {
        timeout(WRITE_TIMEOUT, stream.write_all(&bytes))
            .await
            .map_err(|_| ControlError::NotReading)?
            .map_err(ControlError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{controller_address, ControllerAddr};

    #[test]
    fn controller_urls() {
        let plain = |a: &str| ControllerAddr {
            host_port: a.into(),
            tls: false,
        };
        assert_eq!(
            controller_address("http://10.0.0.1:8000"),
            Ok(plain("10.0.0.1:8000"))
        );
        assert_eq!(controller_address("10.0.0.1"), Ok(plain("10.0.0.1:7443")));
        assert_eq!(
            controller_address("ctl.example/"),
            Ok(plain("ctl.example:7443"))
        );
        assert_eq!(controller_address("[fd00::1]:9"), Ok(plain("[fd00::1]:9")));
        assert_eq!(controller_address("fd00::1"), Ok(plain("[fd00::1]:7443")));
        assert_eq!(
            controller_address("https://ctl.example"),
            Ok(ControllerAddr {
                host_port: "ctl.example:443".into(),
                tls: true
            })
        );
        assert_eq!(
            controller_address("https://10.0.0.1:7443").map(|a| a.tls),
            Ok(true)
        );
        assert!(controller_address("http://x/path").is_err());
        assert!(controller_address("ftp://x").is_err());
        assert!(controller_address("").is_err());
    }
}
