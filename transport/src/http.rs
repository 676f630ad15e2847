//! The HTTP exchange in front of our TCP protocols, both sides, over any
//! stream: the request or answer head is gathered by proto-control's
//! sans-IO [`HeadReader`]; this module only reads and writes.

use std::time::Duration;

use proto_control::http::{self, CompleteHead, HeadReader, HeadTooLong};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

/// Why an HTTP head could not be read or an upgrade did not happen.
/// `peer` is whom we were talking to, as the caller named it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("{peer}: {source}")]
    Io {
        peer: String,
        source: std::io::Error,
    },
    #[error("{peer} closed the connection during the HTTP exchange")]
    Closed { peer: String },
    #[error("{peer}: {source}")]
    TooLong { peer: String, source: HeadTooLong },
    #[error("{peer}: no HTTP answer within {0:?}", .limit)]
    Timeout { peer: String, limit: Duration },
    #[error("{peer} does not speak {token} (answered {status:?})")]
    NotUpgraded {
        peer: String,
        token: String,
        status: String,
    },
}

/// Reads one HTTP head from `stream` within `limit`.
pub async fn read_head(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    peer: &str,
    limit: Duration,
) -> Result<CompleteHead, HttpError> {
    timeout(limit, read_head_untimed(stream, peer))
        .await
        .map_err(|_| HttpError::Timeout {
            peer: peer.into(),
            limit,
        })?
}

async fn read_head_untimed(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    peer: &str,
) -> Result<CompleteHead, HttpError> {
    let mut reader = HeadReader::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|source| HttpError::Io {
                peer: peer.into(),
                source,
            })?;
        if n == 0 {
            return Err(HttpError::Closed { peer: peer.into() });
        }
        let pushed = reader
            .push(&chunk[..n])
            .map_err(|source| HttpError::TooLong {
                peer: peer.into(),
                source,
            })?;
        if let Some(done) = pushed {
            return Ok(done);
        }
    }
}

/// The client side of an upgrade to `token` at `path` on `host`: sends
/// the request and returns the bytes that came after the `101` answer.
pub async fn upgrade(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin + ?Sized),
    host: &str,
    path: &str,
    token: &str,
    limit: Duration,
) -> Result<Vec<u8>, HttpError> {
    stream
        .write_all(http::upgrade_request_for(host, path, token).as_bytes())
        .await
        .map_err(|source| HttpError::Io {
            peer: host.into(),
            source,
        })?;
    let answer = read_head(stream, host, limit).await?;
    if !http::is_upgrade_response(&answer.head) {
        return Err(HttpError::NotUpgraded {
            peer: host.into(),
            token: token.into(),
            status: http::status_line(&answer.head),
        });
    }
    Ok(answer.rest)
}
