//! IKE identities (RFC 7296 §3.5): what an ID payload names, in the forms
//! strongSwan writes them. A certificate proves one (`cert.rs`,
//! `Certificate::matches`); this module knows nothing of certificates.

use std::net::IpAddr;

use crate::wire::consts::id_type;

/// An IKE identity (RFC 7296 §3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Ip(IpAddr),
    Fqdn(String),
    Email(String),
    /// DER-encoded distinguished name.
    Dn(Vec<u8>),
    KeyId(Vec<u8>),
}

impl Identity {
    /// Type and data as the ID payload carries them.
    pub fn to_wire(&self) -> (u8, Vec<u8>) {
        match self {
            Self::Ip(IpAddr::V4(a)) => (id_type::IPV4_ADDR, a.octets().to_vec()),
            Self::Ip(IpAddr::V6(a)) => (id_type::IPV6_ADDR, a.octets().to_vec()),
            Self::Fqdn(s) => (id_type::FQDN, s.as_bytes().to_vec()),
            Self::Email(s) => (id_type::RFC822_ADDR, s.as_bytes().to_vec()),
            Self::Dn(d) => (id_type::DER_ASN1_DN, d.clone()),
            Self::KeyId(k) => (id_type::KEY_ID, k.clone()),
        }
    }

    /// The identity an ID payload names, if of a type we know.
    pub fn from_wire(kind: u8, data: &[u8]) -> Option<Self> {
        Some(match kind {
            id_type::IPV4_ADDR => {
                let b: [u8; 4] = data.try_into().ok()?;
                Self::Ip(IpAddr::from(b))
            }
            id_type::IPV6_ADDR => {
                let b: [u8; 16] = data.try_into().ok()?;
                Self::Ip(IpAddr::from(b))
            }
            id_type::FQDN => Self::Fqdn(String::from_utf8(data.to_vec()).ok()?),
            id_type::RFC822_ADDR => Self::Email(String::from_utf8(data.to_vec()).ok()?),
            id_type::DER_ASN1_DN => Self::Dn(data.to_vec()),
            id_type::KEY_ID => Self::KeyId(data.to_vec()),
            _ => return None,
        })
    }

    /// The way strongSwan writes identities: an address, `@fqdn`,
    /// `user@host`, or a plain name taken as an FQDN.
    pub fn parse(s: &str) -> Self {
        if let Ok(ip) = s.parse::<IpAddr>() {
            Self::Ip(ip)
        } else if let Some(name) = s.strip_prefix('@') {
            Self::Fqdn(name.to_string())
        } else if s.contains('@') {
            Self::Email(s.to_string())
        } else {
            Self::Fqdn(s.to_string())
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Fqdn(s) => write!(f, "@{s}"),
            Self::Email(s) => f.write_str(s),
            Self::Dn(d) => write!(f, "dn:{}", hex_short(d)),
            Self::KeyId(k) => write!(f, "keyid:{}", hex_short(k)),
        }
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect()
}
