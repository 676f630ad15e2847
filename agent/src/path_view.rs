//! Which path a peer's traffic really takes, and keeping it the one the
//! path machine chose.
//!
//! The path machine (proto-path) chooses; the WireGuard device carries
//! out. The device also roams: it sends to wherever the peer's last
//! authenticated packet came from. A packet that was already on its way
//! through the relay when both sides went direct arrives from the peer's
//! relay proxy, the device follows it there, its next packets make the
//! other side follow too, and both stay on the relay while the path
//! machine, whose probes still answer directly, says "direct". So the
//! report is taken from the device's endpoint, and a direct path the
//! device left for the relay is put back.

use std::net::SocketAddr;

use proto_path::Path;

/// What the `PATH` column says: the device's endpoint decides (its
/// relay proxy is the relay, whatever the path machine chose); the path
/// machine names the rest.
pub fn label(
    chosen: Option<Path>,
    device_endpoint: Option<SocketAddr>,
    proxy: Option<SocketAddr>,
) -> &'static str {
    if device_endpoint.is_some() && device_endpoint == proxy {
        return "relay";
    }
    match chosen {
        Some(Path::Relay) if device_endpoint.is_some() => "direct", // roamed off the relay
        Some(Path::Relay) => "relay",
        Some(Path::Direct(_)) => "direct",
        Some(Path::Unproven(_)) => "direct?",
        _ => "-",
    }
}

/// The endpoint to set again: the proven direct one, when the device
/// followed a relayed packet back onto the relay proxy.
pub fn to_reassert(
    chosen: Option<Path>,
    device_endpoint: Option<SocketAddr>,
    proxy: Option<SocketAddr>,
) -> Option<SocketAddr> {
    match chosen {
        Some(Path::Direct(direct)) if proxy.is_some() && device_endpoint == proxy => Some(direct),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn the_device_endpoint_decides_what_is_reported() {
        let proxy = addr("127.0.0.1:50517");
        let direct = Path::Direct("10.99.0.12:41641".parse().unwrap());
        // What the demo showed: chosen direct, device on the relay proxy.
        assert_eq!(label(Some(direct), proxy, proxy), "relay");
        assert_eq!(
            label(Some(direct), addr("10.99.0.12:41641"), proxy),
            "direct"
        );
        assert_eq!(label(Some(Path::Relay), proxy, proxy), "relay");
        assert_eq!(
            label(Some(Path::Relay), addr("10.99.0.12:41641"), proxy),
            "direct"
        );
        assert_eq!(label(None, None, None), "-");
    }

    #[test]
    fn only_a_direct_path_left_for_the_relay_proxy_is_put_back() {
        let proxy = addr("127.0.0.1:50517");
        let d: SocketAddr = "10.99.0.12:41641".parse().unwrap();
        assert_eq!(to_reassert(Some(Path::Direct(d)), proxy, proxy), Some(d));
        // Roamed to another direct address (a NAT rebinding): left alone.
        assert_eq!(
            to_reassert(Some(Path::Direct(d)), addr("198.51.100.7:9"), proxy),
            None
        );
        assert_eq!(to_reassert(Some(Path::Direct(d)), Some(d), proxy), None);
        assert_eq!(to_reassert(Some(Path::Relay), proxy, proxy), None);
        assert_eq!(to_reassert(Some(Path::Direct(d)), None, None), None);
    }
}
