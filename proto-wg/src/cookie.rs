//! MAC1, MAC2 and cookie replies (whitepaper §5.4.4 and §5.4.7): the DoS
//! defence. MAC1 proves the sender knows our public key; under load, MAC2
//! proves it can receive at its source address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::crypto::{
    ct_eq, hash, mac, xaead_open_cookie, xaead_seal_cookie, Secret, KEY_LEN, MAC_LEN,
};
use crate::keys::PublicKey;
use crate::wire::{self, COOKIE_REPLY_LEN};

const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

/// How long a cookie secret (responder) or a received cookie (initiator)
/// stays valid.
pub const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);

/// The two keys derived from one public key: MAC1's key, and the key that
/// seals cookie replies sent by that key's owner.
#[derive(Clone)]
pub(crate) struct MacKeys {
    mac1: [u8; KEY_LEN],
    cookie: [u8; KEY_LEN],
}

impl MacKeys {
    pub(crate) fn new(public: &PublicKey) -> Self {
        Self {
            mac1: hash(&[LABEL_MAC1, public.as_bytes()]),
            cookie: hash(&[LABEL_COOKIE, public.as_bytes()]),
        }
    }

    /// Checks MAC1 of a handshake message addressed to the owner of these keys.
    pub(crate) fn verify_mac1(&self, msg: &[u8], mac1_at: usize) -> bool {
        let expected = mac(&self.mac1, &msg[..mac1_at]);
        ct_eq(&expected, &msg[mac1_at..mac1_at + MAC_LEN])
    }
}

/// Writes MAC1 (always) and MAC2 (when a fresh cookie is known) into a
/// handshake message to the owner of `to`. Returns MAC1, which a cookie
/// reply to this message will be bound to.
pub(crate) fn seal_macs(
    msg: &mut [u8],
    mac1_at: usize,
    to: &MacKeys,
    cookie: Option<&[u8; MAC_LEN]>,
) -> [u8; MAC_LEN] {
    let mac2_at = mac1_at + MAC_LEN;
    let mac1 = mac(&to.mac1, &msg[..mac1_at]);
    msg[mac1_at..mac2_at].copy_from_slice(&mac1);
    let mac2 = cookie.map_or([0u8; MAC_LEN], |c| mac(c, &msg[..mac2_at]));
    msg[mac2_at..mac2_at + MAC_LEN].copy_from_slice(&mac2);
    mac1
}

/// The bytes a cookie is bound to: the sender's IP address and UDP port.
fn address_bytes(src: SocketAddr) -> ([u8; 18], usize) {
    let mut out = [0u8; 18];
    let n = match src.ip() {
        IpAddr::V4(ip) => {
            out[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            out[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    out[n..n + 2].copy_from_slice(&src.port().to_be_bytes());
    (out, n + 2)
}

/// The responder's side: a secret rotated every two minutes, from which
/// each source address gets its cookie.
pub(crate) struct CookieChecker {
    secret: Secret,
    born: Option<Instant>,
}

impl CookieChecker {
    pub(crate) fn new() -> Self {
        Self {
            secret: Zeroizing::new([0u8; KEY_LEN]),
            born: None,
        }
    }

    fn fresh_secret(&mut self, now: Instant, rng: &mut (impl RngCore + CryptoRng)) -> &Secret {
        let expired = self
            .born
            .is_none_or(|b| now.saturating_duration_since(b) >= COOKIE_REFRESH_TIME);
        if expired {
            rng.fill_bytes(&mut *self.secret);
            self.born = Some(now);
        }
        &self.secret
    }

    fn cookie_for(
        &mut self,
        now: Instant,
        src: SocketAddr,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; MAC_LEN] {
        let (addr, n) = address_bytes(src);
        mac(&**self.fresh_secret(now, rng), &addr[..n])
    }

    /// Checks MAC2 against the cookie `src` would have been given now.
    pub(crate) fn verify_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        msg: &[u8],
        mac2_at: usize,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> bool {
        let cookie = self.cookie_for(now, src, rng);
        let expected = mac(&cookie, &msg[..mac2_at]);
        ct_eq(&expected, &msg[mac2_at..mac2_at + MAC_LEN])
    }

    /// Builds the cookie reply to a handshake message whose sender index is
    /// `receiver` and whose MAC1 is `mac1`, sealed with our own cookie key.
    pub(crate) fn reply(
        &mut self,
        now: Instant,
        src: SocketAddr,
        receiver: u32,
        mac1: &[u8],
        own_keys: &MacKeys,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> [u8; COOKIE_REPLY_LEN] {
        let cookie = self.cookie_for(now, src, rng);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        let mut msg = [0u8; COOKIE_REPLY_LEN];
        msg[0] = wire::MSG_COOKIE_REPLY;
        msg[wire::COOKIE_RECEIVER..wire::COOKIE_RECEIVER + 4]
            .copy_from_slice(&receiver.to_le_bytes());
        msg[wire::COOKIE_NONCE..wire::COOKIE_SEALED].copy_from_slice(&nonce);
        msg[wire::COOKIE_SEALED..].copy_from_slice(&xaead_seal_cookie(
            &own_keys.cookie,
            &nonce,
            &cookie,
            mac1,
        ));
        msg
    }
}

/// The initiator's side, per peer: the MAC1 we last sent (a cookie reply
/// must be bound to it) and the cookie we were last given.
#[derive(Default)]
pub(crate) struct CookieJar {
    last_mac1: Option<[u8; MAC_LEN]>,
    cookie: Option<([u8; MAC_LEN], Instant)>,
}

/// A cookie reply that did not decrypt against our last MAC1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadCookieReply;

impl CookieJar {
    /// The cookie to put in MAC2, if one is fresh.
    pub(crate) fn current(&self, now: Instant) -> Option<&[u8; MAC_LEN]> {
        self.cookie
            .as_ref()
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_REFRESH_TIME)
            .map(|(c, _)| c)
    }

    pub(crate) fn sent(&mut self, mac1: [u8; MAC_LEN]) {
        self.last_mac1 = Some(mac1);
    }

    /// Decrypts a cookie reply from the peer whose keys are `peer_keys`.
    pub(crate) fn consume_reply(
        &mut self,
        now: Instant,
        msg: &[u8; COOKIE_REPLY_LEN],
        peer_keys: &MacKeys,
    ) -> Result<(), BadCookieReply> {
        let mac1 = self.last_mac1.ok_or(BadCookieReply)?;
        let nonce: [u8; 24] = wire::array(msg, wire::COOKIE_NONCE);
        let sealed: [u8; 32] = wire::array(msg, wire::COOKIE_SEALED);
        let cookie = xaead_open_cookie(&peer_keys.cookie, &nonce, &sealed, &mac1)
            .map_err(|_| BadCookieReply)?;
        self.cookie = Some((cookie, now));
        // One cookie reply per message sent: a second copy must not refresh it.
        self.last_mac1 = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const INIT_MAC2: usize = wire::INIT_MAC1 + MAC_LEN;

    #[test]
    #[allow(clippy::disallowed_methods)] // an origin for fake time, read once
    fn cookie_round_trip_gives_a_mac2_the_responder_accepts() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let now = Instant::now();
        let responder = MacKeys::new(&PublicKey([5; 32]));
        let src: SocketAddr = "192.0.2.1:51820".parse().expect("addr");
        let mut checker = CookieChecker::new();
        let mut jar = CookieJar::default();

        let mut msg = [0u8; wire::INITIATION_LEN];
        msg[0] = 1;
        let mac1 = seal_macs(&mut msg, wire::INIT_MAC1, &responder, jar.current(now));
        jar.sent(mac1);
        assert!(responder.verify_mac1(&msg, wire::INIT_MAC1));
        assert!(!checker.verify_mac2(now, src, &msg, INIT_MAC2, &mut rng));

        let reply = checker.reply(now, src, 7, &mac1, &responder, &mut rng);
        jar.consume_reply(now, &reply, &responder).expect("cookie");
        assert_eq!(
            jar.consume_reply(now, &reply, &responder),
            Err(BadCookieReply),
            "replayed reply"
        );

        seal_macs(&mut msg, wire::INIT_MAC1, &responder, jar.current(now));
        assert!(checker.verify_mac2(now, src, &msg, INIT_MAC2, &mut rng));
        let other: SocketAddr = "192.0.2.1:51821".parse().expect("addr");
        assert!(
            !checker.verify_mac2(now, other, &msg, INIT_MAC2, &mut rng),
            "cookie bound to port"
        );
        let later = now + COOKIE_REFRESH_TIME;
        assert!(jar.current(later).is_none(), "cookie expires");
        assert!(
            !checker.verify_mac2(later, src, &msg, INIT_MAC2, &mut rng),
            "secret rotated"
        );
    }

    #[test]
    fn tampered_mac1_is_rejected() {
        let keys = MacKeys::new(&PublicKey([1; 32]));
        let mut msg = [0u8; wire::RESPONSE_LEN];
        seal_macs(&mut msg, wire::RESP_MAC1, &keys, None);
        assert!(keys.verify_mac1(&msg, wire::RESP_MAC1));
        msg[3] ^= 1;
        assert!(!keys.verify_mac1(&msg, wire::RESP_MAC1));
        assert!(!MacKeys::new(&PublicKey([2; 32])).verify_mac1(&msg, wire::RESP_MAC1));
    }
}
