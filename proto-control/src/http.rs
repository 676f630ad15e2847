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

pub fn parse(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::BadRequest;
    };
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Request::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::BadRequest;
    }
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    match (method, path) {
        ("GET", "/key") => Request::Key,
        (_, CONTROL_PATH) => {
            let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN));
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
    format!(
        "POST {CONTROL_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\nContent-Length: 0\r\n\r\n"
    )
}

pub fn upgrade_response() -> String {
    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n")
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
}
