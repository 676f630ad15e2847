//! UPnP IGD port mapping over the network (the messages are
//! proto-path's `portmap::upnp`): an SSDP search answered by our gateway
//! only, its description over HTTP, then GetExternalIPAddress and
//! AddPortMapping over SOAP. Asked when the gateway speaks neither PCP
//! nor NAT-PMP; every step has a deadline and a size bound.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use proto_path::portmap::upnp::{self, SoapAnswer, Url};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// How long the gateway has to answer the search, and each HTTP step.
const SEARCH_WAIT: Duration = Duration::from_secs(2);
const HTTP_WAIT: Duration = Duration::from_secs(3);
/// The lease asked for; the mapping is asked again at half of it.
pub const LEASE: u32 = 7200;
/// External ports tried when ours is taken (ConflictInMappingEntry).
const PORT_TRIES: u16 = 4;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UpnpError {
    #[error("no UPnP gateway answered at {0}")]
    NoGateway(Ipv4Addr),
    #[error("UPnP: {0}")]
    Io(#[from] std::io::Error),
    #[error("UPnP: no answer from {0} in time")]
    Timeout(SocketAddrV4),
    #[error("UPnP: unreadable answer from {0}")]
    BadAnswer(SocketAddrV4),
    #[error("UPnP: the gateway offers no WAN IP or PPP connection service")]
    NoService,
    #[error("UPnP: the gateway refused the mapping (error {0})")]
    Refused(u32),
}

/// A port the gateway forwards to us by UPnP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpnpMapping {
    pub external: SocketAddrV4,
    pub gateway: Ipv4Addr,
    control: Url,
    service: &'static str,
}

/// Finds the gateway's IGD and maps UDP `port` on `client` to it.
pub async fn map(gateway: Ipv4Addr, client: Ipv4Addr, port: u16) -> Result<UpnpMapping, UpnpError> {
    let location = search(gateway, client).await?;
    let description = http(&location, &upnp::get_request(&location)).await?;
    let (_, body) = upnp::http_answer(&description).ok_or(UpnpError::BadAnswer(location.addr))?;
    let (service, control) = upnp::control_url(&location, body).ok_or(UpnpError::NoService)?;
    let answer = soap(&control, &upnp::get_external_ip_address(&control, service)).await?;
    let ip = upnp::external_ip(&answer).ok_or(UpnpError::BadAnswer(control.addr))?;
    let mut last = 0;
    for external in (0..PORT_TRIES).map(|i| port.wrapping_add(i * 1000).max(1024)) {
        let request = upnp::add_port_mapping(&control, service, external, client, port, LEASE);
        match soap(&control, &request).await? {
            SoapAnswer::Ok { .. } => {
                return Ok(UpnpMapping {
                    external: SocketAddrV4::new(ip, external),
                    gateway,
                    control,
                    service,
                })
            }
            SoapAnswer::Fault { code } if code == upnp::CONFLICT => last = code,
            SoapAnswer::Fault { code } => return Err(UpnpError::Refused(code)),
        }
    }
    Err(UpnpError::Refused(last))
}

/// Gives the mapping back (best effort: we are leaving).
pub async fn unmap(m: &UpnpMapping) {
    let request = upnp::delete_port_mapping(&m.control, m.service, m.external.port());
    let _ = soap(&m.control, &request).await;
}

/// The SSDP search, from our address toward the gateway; only the
/// gateway's own answer counts (anyone on the LAN can answer SSDP).
async fn search(gateway: Ipv4Addr, client: Ipv4Addr) -> Result<Url, UpnpError> {
    let sock = tokio::net::UdpSocket::bind(SocketAddr::from((client, 0))).await?;
    sock.set_multicast_ttl_v4(2)?;
    sock.send_to(&upnp::search_request(), SocketAddr::V4(upnp::SSDP))
        .await?;
    let mut buf = vec![0u8; 2048];
    let deadline = tokio::time::Instant::now() + SEARCH_WAIT;
    loop {
        let Ok(got) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await else {
            return Err(UpnpError::NoGateway(gateway));
        };
        let (n, from) = got?;
        if from.ip() != std::net::IpAddr::V4(gateway) {
            continue;
        }
        if let Some(location) = upnp::parse_search_response(from, &buf[..n]) {
            return Ok(location);
        }
    }
}

async fn soap(control: &Url, request: &[u8]) -> Result<SoapAnswer, UpnpError> {
    let answer = http(control, request).await?;
    upnp::parse_soap(&answer).ok_or(UpnpError::BadAnswer(control.addr))
}

/// One HTTP exchange: the request, then the answer to the connection's
/// end, bounded in size and time.
async fn http(url: &Url, request: &[u8]) -> Result<Vec<u8>, UpnpError> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(url.addr).await?;
        stream.write_all(request).await?;
        let mut answer = Vec::new();
        let mut limited = (&mut stream).take(upnp::MAX_DOCUMENT as u64);
        limited.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match timeout(HTTP_WAIT, exchange).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(UpnpError::Timeout(url.addr)),
    }
}
