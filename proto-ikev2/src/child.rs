//! A negotiated Child SA: its SPIs, algorithms, selectors and keys, ready
//! to become proto-esp SAs.

use proto_esp::cipher::KeyError;
use proto_esp::spd::{Policy, Selector};
use proto_esp::{InboundSa, OutboundSa};
use zeroize::Zeroizing;

use crate::proposal::EspSuite;
use crate::wire::TrafficSelector;

/// One direction's key material.
pub(crate) struct DirectionKeys {
    pub(crate) encr: Zeroizing<Vec<u8>>,
    pub(crate) integ: Zeroizing<Vec<u8>>,
}

/// A Child SA pair as IKE agreed it.
pub struct ChildSa {
    /// The SPI the peer puts on packets to us.
    pub spi_in: u32,
    /// The SPI we put on packets to the peer.
    pub spi_out: u32,
    pub suite: EspSuite,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// ESP goes inside UDP 4500 (RFC 3948).
    pub encap: bool,
    pub(crate) keys_in: DirectionKeys,
    pub(crate) keys_out: DirectionKeys,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("spi_in", &format_args!("{:08x}", self.spi_in))
            .field("spi_out", &format_args!("{:08x}", self.spi_out))
            .field("suite", &self.suite)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("encap", &self.encap)
            .finish_non_exhaustive() // never the keys
    }
}

fn cipher(suite: &EspSuite, k: &DirectionKeys) -> Result<proto_esp::Cipher, KeyError> {
    suite
        .encr
        .cipher(&k.encr, suite.integ.map(|i| (i, &k.integ[..])))
}

impl ChildSa {
    /// The SPD policy this Child SA was agreed for, naming it `sa`.
    pub fn policy<K>(&self, sa: K) -> Policy<K> {
        Policy {
            local: self.local_ts.iter().map(Selector::from).collect(),
            remote: self.remote_ts.iter().map(Selector::from).collect(),
            sa,
        }
    }

    /// The SA that seals our packets to the peer.
    pub fn outbound(&self) -> Result<OutboundSa, KeyError> {
        Ok(OutboundSa::new(
            self.spi_out,
            cipher(&self.suite, &self.keys_out)?,
            self.suite.esn,
        ))
    }

    /// The SA that opens the peer's packets, with an anti-replay window
    /// of `window` packets.
    pub fn inbound(&self, window: u64) -> Result<InboundSa, KeyError> {
        Ok(InboundSa::new(
            self.spi_in,
            cipher(&self.suite, &self.keys_in)?,
            self.suite.esn,
            window,
        ))
    }
}
