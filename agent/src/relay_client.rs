//! A node's connection to a relay (tokio), around proto-relay's sans-IO
//! client: packets to send come in on a bounded channel, events go out
//! on another. One call runs one connection until it fails; the caller
//! redials. The relay's own tests drive it too.

use std::time::Instant;

use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, timeout, Duration};
use zeroize::Zeroizing;

use proto_relay::client::{ClientEvent, RelayClient};
use proto_relay::frame::Key;
use proto_relay::server::Role;
use proto_relay::{RELAY_PATH, UPGRADE_TOKEN};

const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a relay connection could not be made or ended (reported as one
/// line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayConnError {
    #[error("relay: {0}")]
    Dial(#[from] transport::DialError),
    #[error(transparent)]
    Http(#[from] transport::HttpError),
    #[error(transparent)]
    Seed(#[from] cvlan_core::seed::SeedError),
    #[error(transparent)]
    Protocol(#[from] proto_relay::client::ClientError),
    #[error("reading from the relay: {0}")]
    Read(std::io::Error),
    #[error("writing to the relay: {0}")]
    Write(std::io::Error),
    #[error("relay not reading")]
    NotReading,
    #[error("the relay closed the connection during the handshake (wrong relay key, or a relay that serves only registered nodes?)")]
    ClosedInHandshake,
}
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one relay connection. `ClientEvent::Connected` is sent once the
/// relay has authenticated us; the function returns why it ended.
/// `timestamp` must grow from one connection to the next.
pub async fn run(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    relay_key: Key,
    node_key: &Zeroizing<[u8; 32]>,
    timestamp: u64,
    outgoing: &mut mpsc::Receiver<(Key, Vec<u8>)>,
    events: &mpsc::Sender<ClientEvent>,
) -> String {
    match session(addr, tls, relay_key, node_key, timestamp, outgoing, events).await {
        Ok(()) => "relay closed the connection".into(),
        Err(e) => e.to_string(),
    }
}

async fn session(
    addr: &str,
    tls: Option<&tokio_rustls::TlsConnector>,
    relay_key: Key,
    node_key: &Zeroizing<[u8; 32]>,
    timestamp: u64,
    outgoing: &mut mpsc::Receiver<(Key, Vec<u8>)>,
    events: &mpsc::Sender<ClientEvent>,
) -> Result<(), RelayConnError> {
    let (host_port, wants_tls) = cvlan_core::relay_addr::split_scheme(addr);
    let limits = transport::DialLimits {
        connect: HANDSHAKE_TIMEOUT,
        tls: HANDSHAKE_TIMEOUT,
    };
    let tls = transport::tls_for(addr, wants_tls, tls)?;
    let mut stream = transport::dial(host_port, tls, limits).await?;
    let early = transport::http::upgrade(
        &mut stream,
        host_port,
        RELAY_PATH,
        UPGRADE_TOKEN,
        HANDSHAKE_TIMEOUT,
    )
    .await?;
    let seed = cvlan_core::os_seed()?;
    let mut client = RelayClient::new(
        Instant::now(),
        Role::Client,
        node_key,
        &relay_key,
        seed,
        timestamp,
    )?;
    client.handle_input(Instant::now(), &early)?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let client = Mutex::new(client);
    let lock = || client.lock().unwrap_or_else(|e| e.into_inner());
    // The reader asks the writer to flush what opening a frame produced
    // (the handshake's completion, a pong).
    let flush_now = Notify::new();
    flush_now.notify_one(); // the first handshake message
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = rd.read(&mut buf).await.map_err(RelayConnError::Read)?;
            if n == 0 {
                if !lock().is_connected() {
                    return Err(RelayConnError::ClosedInHandshake);
                }
                return Ok(());
            }
            {
                let mut c = lock();
                c.handle_input(Instant::now(), &buf[..n])?;
                while let Some(ev) = c.poll_event() {
                    pending.push(ev);
                }
            }
            flush_now.notify_one();
            for ev in pending.drain(..) {
                if events.send(ev).await.is_err() {
                    return Ok(()); // nobody listens any more
                }
            }
        }
    };
    let writer = async {
        let mut out = Vec::new();
        loop {
            let (connected, keepalive) = {
                let c = lock();
                (
                    c.is_connected(),
                    tokio::time::Instant::from_std(c.poll_timeout()),
                )
            };
            tokio::select! {
                next = outgoing.recv(), if connected => {
                    let Some((dst, packet)) = next else { return Ok(()) };
                    let now = Instant::now();
                    let mut c = lock();
                    c.send_packet(now, &dst, &packet)?;
                    // Whatever else is waiting goes out in the same write.
                    while let Ok((dst, packet)) = outgoing.try_recv() {
                        c.send_packet(now, &dst, &packet)?;
                    }
                }
                () = flush_now.notified() => {}
                () = sleep_until(keepalive), if connected => {
                    lock().handle_timeout(Instant::now())?;
                }
            }
            {
                let mut c = lock();
                while let Some(b) = c.poll_transmit() {
                    out.extend_from_slice(&b);
                }
            }
            if !out.is_empty() {
                timeout(WRITE_TIMEOUT, wr.write_all(&out))
                    .await
                    .map_err(|_| RelayConnError::NotReading)?
                    .map_err(RelayConnError::Write)?;
                out.clear();
            }
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}
