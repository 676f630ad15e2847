//! UPnP IGD port mapping, the messages only: the SSDP search for an
//! Internet Gateway Device, its description (which service to ask, and
//! where), and the two SOAP actions we need (GetExternalIPAddress,
//! AddPortMapping; DeletePortMapping to give it back). The caller moves
//! them over UDP multicast and HTTP. Every parse is bounded and returns
//! `None` or an error on anything unexpected, never panics.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// Where SSDP searches go (UDP multicast).
pub const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
/// What we search for.
pub const IGD: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
/// The services that map ports, in the order we prefer them.
pub const SERVICES: [&str; 3] = [
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
];
/// Longest description or SOAP answer read (a router's are a few KiB).
pub const MAX_DOCUMENT: usize = 64 * 1024;
/// UPnP's "ConflictInMappingEntry": the external port is someone else's.
pub const CONFLICT: u32 = 718;

/// The SSDP M-SEARCH datagram (UDA 1.1 §1.3.2), answers within 2 s.
pub fn search_request() -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP}\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: {IGD}\r\n\r\n"
    )
    .into_bytes()
}

/// An HTTP URL we may fetch: `http://IPv4:port/path` only (a gateway
/// names itself by address; anything else is not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddrV4,
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix("http://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = match host.parse::<SocketAddrV4>() {
            Ok(a) => a,
            Err(_) => SocketAddrV4::new(host.parse().ok()?, 80),
        };
        if path.len() > 1024 || path.chars().any(|c| c.is_control() || c == ' ') {
            return None;
        }
        Some(Self {
            addr,
            path: path.to_string(),
        })
    }

    /// `path` (absolute, or a full URL) against this one's host.
    fn join(&self, path: &str) -> Option<Self> {
        let path = path.trim();
        if path.starts_with("http://") {
            return Self::parse(path);
        }
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Self::parse(&format!("http://{}{path}", self.addr))
    }
}

/// The LOCATION of an SSDP answer that is an IGD's (from `from`, which
/// must be where the location points: no sending us elsewhere).
pub fn parse_search_response(from: SocketAddr, datagram: &[u8]) -> Option<Url> {
    let text = std::str::from_utf8(datagram.get(..datagram.len().min(2048))?).ok()?;
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("HTTP/1.1 200") {
        return None;
    }
    let mut location = None;
    let mut is_igd = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "location" => location = Url::parse(value),
            "st" => is_igd = value.trim() == IGD,
            _ => {}
        }
    }
    let url = location.filter(|_| is_igd)?;
    (std::net::IpAddr::V4(*url.addr.ip()) == from.ip()).then_some(url)
}

/// The text between `<tag>` and `</tag>` after `from`, and where it ends.
fn element<'a>(doc: &'a str, tag: &str, from: usize) -> Option<(&'a str, usize)> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = doc.get(from..)?.find(&open)? + from + open.len();
    let end = doc.get(start..)?.find(&close)? + start;
    Some((doc[start..end].trim(), end + close.len()))
}

/// The service to ask and where (its control URL), from the device
/// description fetched from `location`.
pub fn control_url(location: &Url, description: &str) -> Option<(&'static str, Url)> {
    for wanted in SERVICES {
        let mut at = 0;
        while let Some((service, end)) = element(description, "service", at) {
            at = end;
            if element(service, "serviceType", 0).map(|(t, _)| t) == Some(wanted) {
                let (control, _) = element(service, "controlURL", 0)?;
                return Some((wanted, location.join(control)?));
            }
        }
    }
    None
}

/// An HTTP POST of one SOAP action to `control` (the caller writes it
/// to a TCP connection and reads the answer to its end).
pub fn soap_request(
    control: &Url,
    service: &str,
    action: &str,
    args: &[(&str, String)],
) -> Vec<u8> {
    let mut body = format!(
        "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{service}\">"
    );
    for (name, value) in args {
        body.push_str(&format!("<{name}>{value}</{name}>"));
    }
    body.push_str(&format!("</u:{action}></s:Body></s:Envelope>\r\n"));
    format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\nSOAPAction: \"{service}#{action}\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        control.path,
        control.addr,
        body.len()
    )
    .into_bytes()
}

/// A GET of the description at `location`.
pub fn get_request(location: &Url) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        location.path, location.addr
    )
    .into_bytes()
}

/// `AddPortMapping` of UDP `external` to `client:internal`, for
/// `lease` seconds (0: the router's own choice, often forever).
pub fn add_port_mapping(
    control: &Url,
    service: &str,
    external: u16,
    client: Ipv4Addr,
    internal: u16,
    lease: u32,
) -> Vec<u8> {
    soap_request(
        control,
        service,
        "AddPortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", "UDP".into()),
            ("NewInternalPort", internal.to_string()),
            ("NewInternalClient", client.to_string()),
            ("NewEnabled", "1".into()),
            ("NewPortMappingDescription", "cloudvlan".into()),
            ("NewLeaseDuration", lease.to_string()),
        ],
    )
}

pub fn delete_port_mapping(control: &Url, service: &str, external: u16) -> Vec<u8> {
    soap_request(
        control,
        service,
        "DeletePortMapping",
        &[
            ("NewRemoteHost", String::new()),
            ("NewExternalPort", external.to_string()),
            ("NewProtocol", "UDP".into()),
        ],
    )
}

pub fn get_external_ip_address(control: &Url, service: &str) -> Vec<u8> {
    soap_request(control, service, "GetExternalIPAddress", &[])
}

/// What a SOAP answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoapAnswer {
    /// 200: the action's out arguments are in `body`.
    Ok { body: String },
    /// A UPnP error (HTTP 500 with an errorCode).
    Fault { code: u32 },
}

/// Splits an HTTP answer into its status and body (the caller read it
/// to the end of the connection, at most [`MAX_DOCUMENT`] bytes).
pub fn http_answer(bytes: &[u8]) -> Option<(u16, &str)> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(MAX_DOCUMENT))?).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body))
}

pub fn parse_soap(bytes: &[u8]) -> Option<SoapAnswer> {
    let (status, body) = http_answer(bytes)?;
    match status {
        200 => Some(SoapAnswer::Ok {
            body: body.to_string(),
        }),
        _ => {
            let code = element(body, "errorCode", 0)?.0.parse().ok()?;
            Some(SoapAnswer::Fault { code })
        }
    }
}

/// The address in a GetExternalIPAddress answer.
pub fn external_ip(answer: &SoapAnswer) -> Option<Ipv4Addr> {
    let SoapAnswer::Ok { body } = answer else {
        return None;
    };
    element(body, "NewExternalIPAddress", 0)?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// miniupnpd's description, cut to what matters.
    const DESCRIPTION: &str = "<?xml version=\"1.0\"?><root><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><deviceList><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType><controlURL>/ctl/CmnIfCfg</controlURL></service><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL></service></serviceList></device></deviceList></device></root>";

    #[test]
    fn a_gateway_is_found_and_its_control_url_read() {
        let answer = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nUSN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\n\r\n";
        let from: SocketAddr = "192.168.1.1:1900".parse().unwrap();
        let location = parse_search_response(from, answer).expect("an IGD");
        assert_eq!(location.addr, "192.168.1.1:5000".parse().unwrap());
        assert_eq!(location.path, "/rootDesc.xml");
        // A location elsewhere than its sender is not followed.
        let elsewhere: SocketAddr = "192.168.1.9:1900".parse().unwrap();
        assert_eq!(parse_search_response(elsewhere, answer), None);
        let (service, control) = control_url(&location, DESCRIPTION).expect("service");
        assert_eq!(service, "urn:schemas-upnp-org:service:WANIPConnection:1");
        assert_eq!(control.path, "/ctl/IPConn");
        assert_eq!(control.addr, location.addr);
        assert_eq!(control_url(&location, "<root></root>"), None);
    }

    #[test]
    fn soap_requests_and_answers() {
        let control = Url::parse("http://192.168.1.1:5000/ctl/IPConn").unwrap();
        let req = add_port_mapping(
            &control,
            SERVICES[1],
            41641,
            Ipv4Addr::new(192, 168, 1, 10),
            41641,
            7200,
        );
        let text = String::from_utf8(req).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /ctl/IPConn HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n"));
        assert!(head.contains(
            "SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\""
        ));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("<NewInternalClient>192.168.1.10</NewInternalClient>"));
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<s:Envelope><s:Body><u:GetExternalIPAddressResponse><NewExternalIPAddress>11.0.0.11</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>";
        let answer = parse_soap(ok).unwrap();
        assert_eq!(external_ip(&answer), Some(Ipv4Addr::new(11, 0, 0, 11)));
        let fault = b"HTTP/1.1 500 Internal Server Error\r\n\r\n<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>718</errorCode></UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        assert_eq!(
            parse_soap(fault),
            Some(SoapAnswer::Fault { code: CONFLICT })
        );
        assert_eq!(parse_soap(b"garbage"), None);
        assert_eq!(Url::parse("https://192.168.1.1/x"), None);
        assert_eq!(Url::parse("http://router.local/x"), None);
    }
}
