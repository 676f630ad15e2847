//! The one HTTP exchange before the control channel: nodes connect to the
//! controller's port with `POST /cvlan/control` and `Upgrade:
//! cvlan-control/1`, and after `101 Switching Protocols` the stream carries
//! framed Noise. `GET /key` returns the controller's public key (for
//! convenience; a node should be given the key out of band).

/// The protocol token in the `Upgrade` header.
pub const UPGRADE_TOKEN: &str = "cvlan-control/1";
pub const CONTROL_PATH: &str = "/cvlan/control";
/// Longest request head we read.
pub const MAX_HEAD: usize = 8192;

#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// Switch to the control protocol.
    Upgrade,
    /// Return the public key.
    Key,
    NotFound,
    BadRequest,
}

/// Where the head ends (just past the blank line), if it has.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A head longer than [`MAX_HEAD`] without its blank line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HTTP head longer than {MAX_HEAD} bytes")]
pub struct HeadTooLong;

/// A head that has arrived, and the bytes the peer sent after it (the
/// first bytes of the upgraded protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteHead {
    pub head: Vec<u8>,
    pub rest: Vec<u8>,
}

/// Gathers an HTTP head from the reads of a stream, both sides: a server
/// reading a request, a client reading the answer to its upgrade. It
/// holds at most [`MAX_HEAD`] bytes plus one read, and looks for the end
/// only in what is new.
#[derive(Debug, Default)]
pub struct HeadReader {
    buf: Vec<u8>,
}

impl HeadReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next read; `Some` once the blank line has arrived.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<CompleteHead>, HeadTooLong> {
        // The blank line may straddle two reads: look back three bytes.
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(bytes);
        if let Some(end) = head_end(&self.buf[from..]).map(|e| from + e) {
            let rest = self.buf.split_off(end);
            return Ok(Some(CompleteHead {
                head: std::mem::take(&mut self.buf),
                rest,
            }));
        }
        if self.buf.len() > MAX_HEAD {
            return Err(HeadTooLong);
        }
        Ok(None)
    }
}

/// The first line of a head (for errors), at most 80 characters.
pub fn status_line(head: &[u8]) -> String {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned()
}

/// A request head's parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The `Upgrade` header's value, if any.
    pub upgrade: Option<&'a str>,
}

/// Splits an HTTP/1.x request head; `None` if it is not one.
pub fn parse_head(head: &[u8]) -> Option<Head<'_>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path, version) = (first.next()?, first.next()?, first.next()?);
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let upgrade = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("upgrade").then(|| v.trim())
    });
    Some(Head {
        method,
        path,
        upgrade,
    })
}

pub fn parse(head: &[u8]) -> Request {
    let Some(h) = parse_head(head) else {
        return Request::BadRequest;
    };
    match (h.method, h.path) {
        ("GET", "/key") => Request::Key,
        (method, CONTROL_PATH) => {
            let upgrade = h
                .upgrade
                .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN));
            if method == "POST" && upgrade {
                Request::Upgrade
            } else {
                Request::BadRequest
            }
        }
        _ => Request::NotFound,
    }
}

pub fn upgrade_request(host: &str) -> String {
    upgrade_request_for(host, CONTROL_PATH, UPGRADE_TOKEN)
}

/// An upgrade request to `path` for protocol `token` (the relay has its own).
pub fn upgrade_request_for(host: &str, path: &str, token: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {token}\r\nContent-Length: 0\r\n\r\n"
    )
}

pub fn upgrade_response() -> String {
    upgrade_response_for(UPGRADE_TOKEN)
}

pub fn upgrade_response_for(token: &str) -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n")
}

pub fn simple_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Whether a response head switched protocols (the node's side).
pub fn is_upgrade_response(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 101 ") || head.starts_with(b"HTTP/1.0 101 ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_recognised() {
        let req = upgrade_request("c:7443");
        let end = head_end(req.as_bytes()).unwrap();
        assert_eq!(end, req.len());
        assert_eq!(parse(req.as_bytes()), Request::Upgrade);
        assert_eq!(parse(b"GET /key HTTP/1.1\r\n\r\n"), Request::Key);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse(b"POST /cvlan/control HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Request::BadRequest
        );
        assert_eq!(parse(b"\xff\xfe"), Request::BadRequest);
        assert_eq!(parse(b"GET"), Request::BadRequest);
        assert!(is_upgrade_response(upgrade_response().as_bytes()));
        assert!(!is_upgrade_response(
            simple_response("404 Not Found", "").as_bytes()
        ));
    }

    #[test]
    fn a_head_is_found_across_reads_and_keeps_what_follows() {
        let req = upgrade_request("c:7443");
        let bytes = [req.as_bytes(), b"noise"].concat();
        // Every split point, including inside the blank line.
        for cut in 0..bytes.len() {
            let mut reader = HeadReader::new();
            let first = reader.push(&bytes[..cut]).unwrap();
            let done = match first {
                Some(mut done) => {
                    done.rest.extend_from_slice(&bytes[cut..]);
                    done
                }
                None => reader.push(&bytes[cut..]).unwrap().expect("complete"),
            };
            assert_eq!(done.head, req.as_bytes(), "cut at {cut}");
            assert_eq!(done.rest, b"noise", "cut at {cut}");
        }
    }

    #[test]
    fn an_endless_head_is_refused_once_it_passes_the_limit() {
        let mut reader = HeadReader::new();
        let mut refused = None;
        for i in 0..100 {
            if let Err(e) = reader.push(&[b'a'; 1000]) {
                refused = Some(i);
                assert_eq!(e, HeadTooLong);
                break;
            }
        }
        assert_eq!(
            refused,
            Some(MAX_HEAD / 1000),
            "refused after passing {MAX_HEAD}"
        );
        assert_eq!(
            status_line(b"HTTP/1.1 404 Not Found\r\nX: y"),
            "HTTP/1.1 404 Not Found"
        );
    }
}
