//! How a relay is named on command lines and in configuration:
//! `[tls://]HOST:PORT#PUBLICKEY[#STUNHOST:PORT]` (the STUN server defaults
//! to the relay's host, port 3478; `http://` in front is accepted and
//! dropped, `tls://` kept: it asks for TLS).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::key::Key32;

/// The STUN port a relay answers on unless it says otherwise.
pub const DEFAULT_STUN_PORT: u16 = 3478;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayAddrError {
    #[error("{0:?}: expected [tls://]HOST:PORT#PUBLICKEY[#STUNHOST:PORT]")]
    Syntax(String),
    #[error("{0:?}: the relay address needs a port")]
    Port(String),
    #[error("{0:?}: the relay key must be 64 hex digits")]
    Key(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddr {
    /// `host:port`, or `tls://host:port`.
    pub address: String,
    pub key: Key32,
    /// `host:port` of its STUN server, if given.
    pub stun: Option<String>,
}

/// The URL scheme that asks for TLS to a relay.
pub const TLS_SCHEME: &str = "tls://";

/// `tls://host:port` -> (`host:port`, true); `[http://]host:port` -> (`host:port`, false).
pub fn split_scheme(address: &str) -> (&str, bool) {
    match address.strip_prefix(TLS_SCHEME) {
        Some(rest) => (rest, true),
        None => (address.strip_prefix("http://").unwrap_or(address), false),
    }
}

impl RelayAddr {
    /// The address without a `tls://` in front, and whether it asks for TLS.
    pub fn host_port(&self) -> (&str, bool) {
        split_scheme(&self.address)
    }

    /// Its STUN server: as given, or the relay's host on port 3478.
    pub fn stun_or_default(&self) -> String {
        self.stun.clone().unwrap_or_else(|| {
            let host = self
                .host_port()
                .0
                .rsplit_once(':')
                .map_or(self.host_port().0, |(h, _)| h);
            format!("{host}:{DEFAULT_STUN_PORT}")
        })
    }
}

impl FromStr for RelayAddr {
    type Err = RelayAddrError;
    fn from_str(s: &str) -> Result<Self, RelayAddrError> {
        let mut parts = s.split('#');
        let (Some(address), Some(key)) = (parts.next(), parts.next()) else {
            return Err(RelayAddrError::Syntax(s.into()));
        };
        let address = address
            .strip_prefix("http://")
            .unwrap_or(address)
            .to_string();
        let host_port = address.strip_prefix("tls://").unwrap_or(&address);
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return Err(RelayAddrError::Port(s.into())),
        }
        let key = Key32::parse(key).map_err(|_| RelayAddrError::Key(s.into()))?;
        let stun = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return Err(RelayAddrError::Syntax(s.into()));
        }
        Ok(Self { address, key, stun })
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address, self.key)?;
        if let Some(s) = &self.stun {
            write!(f, "#{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_form_parses_with_its_defaults() {
        let key = "ab".repeat(32);
        let r: RelayAddr = format!("http://10.0.0.2:8443#{key}").parse().unwrap();
        assert_eq!(r.address, "10.0.0.2:8443");
        assert_eq!(r.stun_or_default(), "10.0.0.2:3478");
        assert_eq!(r.host_port(), ("10.0.0.2:8443", false));
        let r: RelayAddr = format!("tls://relay.example:443#{key}#10.0.0.9:3479")
            .parse()
            .unwrap();
        assert_eq!(r.host_port(), ("relay.example:443", true));
        assert_eq!(r.stun_or_default(), "10.0.0.9:3479");
        assert_eq!(
            r.to_string(),
            format!("tls://relay.example:443#{key}#10.0.0.9:3479")
        );
        assert!(matches!(
            "10.0.0.2:8443".parse::<RelayAddr>(),
            Err(RelayAddrError::Syntax(_))
        ));
        assert!(matches!(
            format!("10.0.0.2#{key}").parse::<RelayAddr>(),
            Err(RelayAddrError::Port(_))
        ));
        assert!(matches!(
            "10.0.0.2:1#xyz".parse::<RelayAddr>(),
            Err(RelayAddrError::Key(_))
        ));
    }
}
