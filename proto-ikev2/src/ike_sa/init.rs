//! IKE_SA_INIT (RFC 7296 §1.2): proposals, Diffie-Hellman, nonces, NAT
//! detection; the initiator's answers to COOKIE and INVALID_KE_PAYLOAD.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand_core::RngCore;
use sha2::{Digest, Sha256};

use super::credentials::CERT_X509;
use super::{authx, first_error, DownReason, IkeSa, Protection, RequestKind, Role, State};
use super::{Transmit, NON_ESP_MARKER};
use crate::config::Config;
use crate::crypto::keys::KeyLengths;
use crate::crypto::nat::detection_hash;
use crate::crypto::sig::{supported_hashes, Hash};
use crate::crypto::{IkeKeys, KeyShare};
use crate::proposal::{accept_ike_answer, choose_ike, ike_answer, ike_sa_payload, IkeSuite};
use crate::wire::consts::{exchange, flags, notify, payload as pt};
use crate::wire::{CertData, Header, KeyExchange, Message, Notify, Payload, Writer};

/// Our nonce length: twice the strength of any PRF we use (§2.10 asks
/// for at least half the PRF key size).
const NONCE_LEN: usize = 32;
/// How often the initiator follows a COOKIE or INVALID_KE_PAYLOAD.
const MAX_INIT_RETRIES: u8 = 3;

pub(super) struct InitSent {
    share: KeyShare,
    nonce: Vec<u8>,
    /// The request as last sent: the AUTH payload signs it.
    message: Vec<u8>,
    retries: u8,
}

/// Why a responder made no SA from an IKE_SA_INIT request, and the
/// unencrypted answer to send, if any.
#[derive(Debug)]
pub struct Refusal {
    /// The notify the peer is told (NO_PROPOSAL_CHOSEN, ...).
    pub notify: Option<u16>,
    /// Boxed: a refusal is rare, and it keeps the `Result` small.
    pub reply: Option<Box<Transmit>>,
    pub reason: &'static str,
}

fn nonce(rng: &mut impl RngCore) -> Vec<u8> {
    let mut n = vec![0u8; NONCE_LEN];
    rng.fill_bytes(&mut n);
    n
}

fn notify_payload(kind: u16, data: &[u8]) -> Payload<'_> {
    Payload::Notify(Notify {
        protocol: 0,
        spi: &[],
        kind,
        data,
    })
}

/// The NAT_DETECTION_SOURCE_IP we send: the true hash, or (to force UDP
/// encapsulation as strongSwan's `encap = yes` does) one that cannot match.
fn source_hash(force: bool, spi_i: u64, spi_r: u64, local: SocketAddr) -> [u8; 20] {
    let h = detection_hash(spi_i, spi_r, local);
    if force {
        let mut fake = Sha256::digest(h);
        fake[0] ^= 0xff;
        let mut out = [0u8; 20];
        out.copy_from_slice(&fake[..20]);
        out
    } else {
        h
    }
}

/// (NAT in front of us, NAT in front of the peer, peer does NAT-T) from
/// the NAT_DETECTION notifies of `m`.
fn nat_state(m: &Message<'_>, local: SocketAddr, remote: SocketAddr) -> (bool, bool, bool) {
    let (spi_i, spi_r) = (m.header.spi_i, m.header.spi_r);
    let ours = detection_hash(spi_i, spi_r, local);
    let theirs = detection_hash(spi_i, spi_r, remote);
    let mut dst = m.notifies(notify::NAT_DETECTION_DESTINATION_IP).peekable();
    let mut src = m.notifies(notify::NAT_DETECTION_SOURCE_IP).peekable();
    let supported = dst.peek().is_some() && src.peek().is_some();
    let nat_local = !dst.any(|n| n.data == ours);
    let nat_remote = !src.any(|n| n.data == theirs);
    (supported && nat_local, supported && nat_remote, supported)
}

/// The hashes the peer announced in SIGNATURE_HASH_ALGORITHMS.
fn peer_hashes(m: &Message<'_>) -> Vec<Hash> {
    m.notifies(notify::SIGNATURE_HASH_ALGORITHMS)
        .flat_map(|n| n.data.chunks_exact(2))
        .filter_map(|c| Hash::from_ike_id(u16::from_be_bytes([c[0], c[1]])))
        .collect()
}

pub(super) fn key_lengths(s: &IkeSuite) -> KeyLengths {
    KeyLengths {
        integ: s.integ.map_or(0, |i| i.key_len()),
        encr: s.encr.keymat_len(),
    }
}

pub(super) fn protection(s: IkeSuite, keys: IkeKeys, role: Role) -> Option<Protection> {
    let (e_tx, a_tx, e_rx, a_rx) = match role {
        Role::Initiator => (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar),
        Role::Responder => (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai),
    };
    let tx = s.encr.cipher(e_tx, s.integ.map(|i| (i, &a_tx[..]))).ok()?;
    let rx = s.encr.cipher(e_rx, s.integ.map(|i| (i, &a_rx[..]))).ok()?;
    Some(Protection {
        suite: s,
        keys,
        tx,
        rx,
        iv_counter: 0,
    })
}

impl IkeSa {
    /// Starts an IKE SA towards `remote` (normally port 500): queues the
    /// IKE_SA_INIT request. `seed` seeds every random choice of this SA.
    pub fn initiate(
        now: Instant,
        config: Arc<Config>,
        local: SocketAddr,
        remote: SocketAddr,
        seed: [u8; 32],
    ) -> Self {
        let mut sa = Self::new(config, Role::Initiator, local, remote, seed, now);
        let group = sa
            .config
            .ike_proposals
            .first()
            .and_then(|p| p.dh.first().copied());
        let Some(group) = group else {
            sa.close(now, DownReason::Protocol("no IKE proposal configured"));
            return sa;
        };
        let share = KeyShare::generate(group, &mut sa.rng);
        let ni = nonce(&mut sa.rng);
        sa.send_init(now, share, ni, None, 0);
        sa
    }

    fn send_init(
        &mut self,
        now: Instant,
        share: KeyShare,
        nonce: Vec<u8>,
        cookie: Option<&[u8]>,
        retries: u8,
    ) {
        let header = Header {
            spi_i: self.spi_i,
            spi_r: 0,
            next_payload: 0,
            version: 0x20,
            exchange: exchange::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
            length: 0,
        };
        let hashes = supported_hashes();
        let src = source_hash(self.config.force_encap, self.spi_i, 0, self.local);
        let dst = detection_hash(self.spi_i, 0, self.remote);
        let mut w = Writer::message(header);
        if let Some(c) = cookie {
            w.push(&notify_payload(notify::COOKIE, c));
        }
        w.push(&Payload::Sa(ike_sa_payload(&self.config.ike_proposals)))
            .push(&Payload::Ke(KeyExchange {
                group: share.group().id(),
                data: share.public(),
            }))
            .push(&Payload::Nonce(&nonce))
            .push(&notify_payload(notify::NAT_DETECTION_SOURCE_IP, &src))
            .push(&notify_payload(notify::NAT_DETECTION_DESTINATION_IP, &dst))
            .push(&notify_payload(notify::SIGNATURE_HASH_ALGORITHMS, &hashes));
        if self.config.fragment_size.is_some() {
            w.push(&notify_payload(notify::IKEV2_FRAGMENTATION_SUPPORTED, &[]));
        }
        let message = w.finish();
        self.next_request_id = 1;
        self.track_request(now, RequestKind::Init, 0, vec![message.clone()]);
        self.state = State::InitSent(Box::new(InitSent {
            share,
            nonce,
            message,
            retries,
        }));
    }

    pub(super) fn init_response(
        &mut self,
        now: Instant,
        _from: SocketAddr,
        _to: SocketAddr,
        s: InitSent,
        msg: &[u8],
    ) {
        let Ok(m) = Message::parse(msg) else {
            self.state = State::InitSent(Box::new(s));
            return;
        };
        if m.header.exchange != exchange::IKE_SA_INIT || m.header.message_id != 0 {
            self.state = State::InitSent(Box::new(s));
            return;
        }
        // A cookie request (§2.6): send the same request again, cookie first.
        if let Some(c) = m.notifies(notify::COOKIE).next() {
            if s.retries < MAX_INIT_RETRIES && !c.data.is_empty() && c.data.len() <= 64 {
                let cookie = c.data.to_vec();
                self.send_init(now, s.share, s.nonce, Some(&cookie), s.retries + 1);
            } else {
                self.close(
                    now,
                    DownReason::Protocol("responder keeps asking for cookies"),
                );
            }
            return;
        }
        // The responder wants another group (§1.2).
        if let Some(n) = m.notifies(notify::INVALID_KE_PAYLOAD).next() {
            let wanted = <[u8; 2]>::try_from(n.data)
                .ok()
                .map(u16::from_be_bytes)
                .and_then(crate::crypto::DhGroup::from_id)
                .filter(|g| self.config.ike_proposals.iter().any(|p| p.dh.contains(g)));
            match wanted {
                Some(g) if s.retries < MAX_INIT_RETRIES && g != s.share.group() => {
                    let share = KeyShare::generate(g, &mut self.rng);
                    self.send_init(now, share, s.nonce, None, s.retries + 1);
                }
                _ => self.close(now, DownReason::PeerRefused(notify::INVALID_KE_PAYLOAD)),
            }
            return;
        }
        if let Some(n) = first_error(&m.payloads) {
            self.close(now, DownReason::PeerRefused(n));
            return;
        }
        let (Some(Payload::Sa(sa)), Some(Payload::Ke(ke)), Some(Payload::Nonce(nr))) =
            (m.find(pt::SA), m.find(pt::KE), m.find(pt::NONCE))
        else {
            self.close(
                now,
                DownReason::Protocol("IKE_SA_INIT response lacks SA, KE or Nonce"),
            );
            return;
        };
        let Some(suite) = accept_ike_answer(sa, &self.config.ike_proposals) else {
            self.close(
                now,
                DownReason::Protocol("responder chose a proposal we did not offer"),
            );
            return;
        };
        if ke.group != s.share.group().id() || suite.dh != s.share.group() || m.header.spi_r == 0 {
            self.close(
                now,
                DownReason::Protocol("responder's KE does not match its choice"),
            );
            return;
        }
        let Ok(g_ir) = s.share.shared(ke.data) else {
            self.close(
                now,
                DownReason::Protocol("responder's public value is invalid"),
            );
            return;
        };
        self.spi_r = m.header.spi_r;
        let keys = IkeKeys::initial(
            suite.prf,
            key_lengths(&suite),
            &g_ir,
            &s.nonce,
            nr,
            self.spi_i,
            self.spi_r,
        );
        let Some(p) = keys.and_then(|k| protection(suite, k, Role::Initiator)) else {
            self.close(now, DownReason::Protocol("key derivation failed"));
            return;
        };
        self.protection = Some(p);
        self.outstanding = None;
        self.last_heard = now;
        self.fragmentation = self.config.fragment_size.is_some()
            && m.notifies(notify::IKEV2_FRAGMENTATION_SUPPORTED)
                .next()
                .is_some();
        let (nat_local, nat_remote, nat_t) = nat_state(&m, self.local, self.remote);
        if nat_local || nat_remote || (self.config.force_encap && nat_t) {
            self.float();
        }
        let exchange = authx::Exchange {
            msg1: s.message,
            msg2: msg.to_vec(),
            ni: s.nonce,
            nr: nr.to_vec(),
            nat_local,
            nat_remote,
            peer_hashes: peer_hashes(&m),
        };
        self.start_auth(now, exchange);
    }

    /// Answers an IKE_SA_INIT request. On success the SA exists and its
    /// answer is queued; otherwise the refusal carries what to send back.
    pub fn respond(
        now: Instant,
        config: Arc<Config>,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &[u8],
        seed: [u8; 32],
    ) -> Result<Self, Refusal> {
        Self::respond_among(now, config, Vec::new(), local, remote, msg, seed)
    }

    /// `respond`, with other configurations for the same peer address
    /// that may take over at IKE_AUTH when the initiator's identity names
    /// one of them (several tunnels behind one address). Their CAs are
    /// requested too, so a peer that sends its certificate only when
    /// asked (strongSwan's default) sends it.
    pub fn respond_among(
        now: Instant,
        config: Arc<Config>,
        alternatives: Vec<Arc<Config>>,
        local: SocketAddr,
        remote: SocketAddr,
        msg: &[u8],
        seed: [u8; 32],
    ) -> Result<Self, Refusal> {
        let quiet = |reason| Refusal {
            notify: None,
            reply: None,
            reason,
        };
        let h = Header::parse(msg).map_err(|_| quiet("malformed IKE_SA_INIT"))?;
        if h.exchange != exchange::IKE_SA_INIT
            || h.is_response()
            || h.message_id != 0
            || h.spi_r != 0
            || h.flags & flags::INITIATOR == 0
        {
            return Err(quiet("not an IKE_SA_INIT request"));
        }
        let refuse = |kind: u16, data: &[u8], reason| {
            let header = Header {
                spi_r: 0,
                flags: flags::RESPONSE,
                next_payload: 0,
                length: 0,
                ..h
            };
            let mut w = Writer::message(header);
            w.push(&notify_payload(kind, data));
            Refusal {
                notify: Some(kind),
                reply: Some(Box::new(Transmit::from_to(
                    local,
                    remote,
                    if local.port() == super::NAT_T_PORT {
                        [&NON_ESP_MARKER[..], &w.finish()].concat()
                    } else {
                        w.finish()
                    },
                ))),
                reason,
            }
        };
        let m = match Message::parse(msg) {
            Ok(m) => m,
            Err(e @ crate::wire::WireError::UnknownCritical(_)) => {
                let kind = notify::UNSUPPORTED_CRITICAL_PAYLOAD;
                return Err(refuse(kind, &e.notify_data(), "unknown critical payload"));
            }
            Err(_) => return Err(quiet("malformed IKE_SA_INIT")),
        };
        let (Some(Payload::Sa(offer)), Some(Payload::Ke(ke)), Some(Payload::Nonce(ni))) =
            (m.find(pt::SA), m.find(pt::KE), m.find(pt::NONCE))
        else {
            return Err(refuse(
                notify::INVALID_SYNTAX,
                &[],
                "request lacks SA, KE or Nonce",
            ));
        };
        let Some((number, suite)) = choose_ike(offer, &config.ike_proposals) else {
            return Err(refuse(
                notify::NO_PROPOSAL_CHOSEN,
                &[],
                "no IKE proposal in common",
            ));
        };
        if ke.group != suite.dh.id() {
            return Err(refuse(
                notify::INVALID_KE_PAYLOAD,
                &suite.dh.id().to_be_bytes(),
                "initiator guessed another DH group",
            ));
        }
        let mut sa = Self::new(config, Role::Responder, local, remote, seed, now);
        sa.alternatives = alternatives;
        sa.spi_i = h.spi_i;
        let share = KeyShare::generate(suite.dh, &mut sa.rng);
        let Ok(g_ir) = share.shared(ke.data) else {
            return Err(refuse(notify::INVALID_SYNTAX, &[], "invalid public value"));
        };
        let nr = nonce(&mut sa.rng);
        let keys = IkeKeys::initial(
            suite.prf,
            key_lengths(&suite),
            &g_ir,
            ni,
            &nr,
            sa.spi_i,
            sa.spi_r,
        )
        .and_then(|k| protection(suite, k, Role::Responder))
        .ok_or_else(|| quiet("key derivation failed"))?;
        sa.protection = Some(keys);
        let (nat_local, nat_remote, _) = nat_state(&m, local, remote);

        let header = Header {
            spi_r: sa.spi_r,
            flags: flags::RESPONSE,
            next_payload: 0,
            length: 0,
            ..h
        };
        let src = source_hash(sa.config.force_encap, sa.spi_i, sa.spi_r, local);
        let dst = detection_hash(sa.spi_i, sa.spi_r, remote);
        let mut w = Writer::message(header);
        w.push(&Payload::Sa(ike_answer(number, &suite, vec![])))
            .push(&Payload::Ke(KeyExchange {
                group: suite.dh.id(),
                data: share.public(),
            }))
            .push(&Payload::Nonce(&nr))
            .push(&notify_payload(notify::NAT_DETECTION_SOURCE_IP, &src))
            .push(&notify_payload(notify::NAT_DETECTION_DESTINATION_IP, &dst));
        if let Some(req) = sa.our_certreq() {
            w.push(&Payload::CertReq(CertData {
                encoding: CERT_X509,
                data: &req,
            }));
        }
        w.push(&notify_payload(
            notify::SIGNATURE_HASH_ALGORITHMS,
            &supported_hashes(),
        ));
        sa.fragmentation = sa.config.fragment_size.is_some()
            && m.notifies(notify::IKEV2_FRAGMENTATION_SUPPORTED)
                .next()
                .is_some();
        if sa.fragmentation {
            w.push(&notify_payload(notify::IKEV2_FRAGMENTATION_SUPPORTED, &[]));
        }
        let answer = w.finish();
        let digest: [u8; 32] = Sha256::digest(msg).into();
        sa.last_response = Some((0, digest, vec![answer.clone()]));
        sa.expected_request_id = 1;
        sa.send_raw(answer.clone());
        sa.deadline = Some(now + sa.config.timers.half_open);
        sa.state = State::AwaitingAuth(Box::new(authx::AwaitingAuth(authx::Exchange {
            msg1: msg.to_vec(),
            msg2: answer,
            ni: ni.to_vec(),
            nr,
            nat_local,
            nat_remote,
            peer_hashes: peer_hashes(&m),
        })));
        Ok(sa)
    }
}
