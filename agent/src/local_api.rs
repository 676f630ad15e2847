//! The CLI talks to the daemon over a Unix socket (0600: it can take the
//! node down). A request is `key=value` lines ending with an empty line,
//! the first being `command=NAME`; the answer is `ok` or `error` on the
//! first line, then text for the user.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

/// Most lines and bytes in one request.
const MAX_LINES: usize = 32;
const MAX_LINE: usize = 4096;
/// How long `up` waits for the node to be running before answering.
pub const UP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Request {
    pub command: String,
    /// Parameters; wiped on drop (an auth key may be among them).
    pub params: BTreeMap<String, Zeroizing<String>>,
}

impl Request {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .get(key)
            .map(|v| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            text: text.into(),
        }
    }
}

pub type Requests = mpsc::Sender<(Request, oneshot::Sender<Reply>)>;

/// Accepts CLI connections and hands their requests to the daemon.
pub async fn serve(listener: UnixListener, daemon: Requests) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            let mut req = Request::default();
            let complete = tokio::time::timeout(Duration::from_secs(10), async {
                let mut n = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() {
                        return true;
                    }
                    n += 1;
                    if n > MAX_LINES || line.len() > MAX_LINE {
                        return false;
                    }
                    if let Some((k, v)) = line.split_once('=') {
                        if k == "command" {
                            req.command = v.to_string();
                        } else {
                            req.params
                                .insert(k.to_string(), Zeroizing::new(v.to_string()));
                        }
                    }
                }
                false
            })
            .await
            .unwrap_or(false);
            let reply = if !complete || req.command.is_empty() {
                Reply::error("malformed request")
            } else {
                let (tx, rx) = oneshot::channel();
                let _ = daemon.send((req, tx)).await;
                rx.await
                    .unwrap_or_else(|_| Reply::error("the daemon is shutting down"))
            };
            let status = if reply.ok { "ok" } else { "error" };
            let _ = write
                .write_all(format!("{status}\n{}", reply.text).as_bytes())
                .await;
        });
    }
}

/// The CLI side. `Ok(None)`: no daemon listens on `socket`.
pub fn call(
    socket: &Path,
    command: &str,
    params: &[(&str, &str)],
) -> Result<Option<Reply>, String> {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return Ok(None);
    };
    let mut req = Zeroizing::new(format!("command={command}\n"));
    for (k, v) in params {
        if v.contains('\n') {
            return Err(format!("{k} may not contain a newline"));
        }
        req.push_str(&format!("{k}={v}\n"));
    }
    req.push('\n');
    let io = |e: std::io::Error| format!("talking to the daemon at {}: {e}", socket.display());
    stream
        .set_read_timeout(Some(UP_WAIT + Duration::from_secs(10)))
        .map_err(io)?;
    stream.write_all(req.as_bytes()).map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io)?;
    let mut text = String::new();
    reader.read_to_string(&mut text).map_err(io)?;
    Ok(Some(Reply {
        ok: status.trim_end() == "ok",
        text,
    }))
}
