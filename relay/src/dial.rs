//! A node's connection to a relay (tokio), for the agent and for tests:
//! packets to send come in on a bounded channel, events go out on another.
//! One call runs one connection until it fails; the caller redials.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Duration};
use zeroize::Zeroizing;

use crate::client::{ClientEvent, RelayClient};
use crate::frame::Key;
use crate::node::upgrade;
use crate::server::Role;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one relay connection. `ClientEvent::Connected` is sent once the
/// relay has authenticated us; the function returns why it ended.
pub async fn run(
    addr: &str,
    relay_key: Key,
    node_key: &Zeroizing<[u8; 32]>,
    outgoing: &mut mpsc::Receiver<(Key, Vec<u8>)>,
    events: &mpsc::Sender<ClientEvent>,
) -> String {
    match session(addr, relay_key, node_key, outgoing, events).await {
        Ok(()) => "relay closed the connection".into(),
        Err(e) => e,
    }
}

async fn session(
    addr: &str,
    relay_key: Key,
    node_key: &Zeroizing<[u8; 32]>,
    outgoing: &mut mpsc::Receiver<(Key, Vec<u8>)>,
    events: &mpsc::Sender<ClientEvent>,
) -> Result<(), String> {
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to relay {addr}: timed out"))?
        .map_err(|e| format!("connecting to relay {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let early = upgrade(&mut stream, addr).await?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| e.to_string())?;
    let mut client = RelayClient::new(Instant::now(), Role::Client, node_key, &relay_key, seed)
        .map_err(|e| e.to_string())?;
    client
        .handle_input(Instant::now(), &early)
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Everything sealed so far goes out in one write.
        let mut out = Vec::new();
        while let Some(b) = client.poll_transmit() {
            out.extend_from_slice(&b);
        }
        if !out.is_empty() {
            timeout(WRITE_TIMEOUT, stream.write_all(&out))
                .await
                .map_err(|_| "relay not reading".to_string())?
                .map_err(|e| e.to_string())?;
        }
        let keepalive = tokio::time::Instant::from_std(client.poll_timeout());
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = read.map_err(|e| e.to_string())?;
                if n == 0 {
                    if !client.is_connected() {
                        return Err("the relay closed the connection during the handshake (wrong relay key?)".into());
                    }
                    return Ok(());
                }
                client.handle_input(Instant::now(), &buf[..n]).map_err(|e| e.to_string())?;
                while let Some(ev) = client.poll_event() {
                    if events.send(ev).await.is_err() {
                        return Ok(()); // nobody listens any more
                    }
                }
            }
            next = outgoing.recv(), if client.is_connected() => {
                let Some((dst, packet)) = next else { return Ok(()) };
                let now = Instant::now();
                client.send_packet(now, &dst, &packet).map_err(|e| e.to_string())?;
                // Whatever else is waiting goes out in the same write.
                while let Ok((dst, packet)) = outgoing.try_recv() {
                    client.send_packet(now, &dst, &packet).map_err(|e| e.to_string())?;
                }
            }
            () = sleep_until(keepalive) => {
                client.handle_timeout(Instant::now()).map_err(|e| e.to_string())?;
            }
        }
    }
}
