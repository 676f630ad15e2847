//! IKE_AUTH (RFC 7296 §1.2, §2.15): identities, PSK authentication, and
//! the first Child SA (proposal, narrowed traffic selectors, keys).

use std::time::Instant;

use super::credentials::{Signed, CERT_X509};
use super::{find, first_error, DownReason, Event, IkeSa, RequestKind, State};
use crate::child::{ChildSa, DirectionKeys};
use crate::child_slots::{ChildSlot, SpiClaim};
use crate::config::Identity;
use crate::crypto::keys::KeyLengths;
use crate::crypto::sig::Hash;
use crate::crypto::ChildKeys;
use crate::proposal::{accept_esp_answer, choose_esp, esp_answer, ChildExchange, EspSuite};
use crate::wire::consts::{exchange, notify, payload as pt};
use crate::wire::{
    Auth, CertData, Identification, Notify, Payload, SaPayload, TrafficSelector, Writer,
};

/// What IKE_SA_INIT left for IKE_AUTH: both messages (each side signs
/// its own), both nonces, and what NAT detection found.
pub(super) struct Exchange {
    pub(super) msg1: Vec<u8>,
    pub(super) msg2: Vec<u8>,
    pub(super) ni: Vec<u8>,
    pub(super) nr: Vec<u8>,
    pub(super) nat_local: bool,
    pub(super) nat_remote: bool,
    /// The peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427), if it sent any.
    pub(super) peer_hashes: Vec<Hash>,
}

pub(super) struct AuthSent {
    exchange: Exchange,
    child_spi: SpiClaim,
}

pub(super) struct AwaitingAuth(pub(super) Exchange);

/// RFC 7296 §2.9: each selector the peer proposed, cut down to what our
/// policy allows.
pub(super) fn narrow(
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(x) = p.intersect(a) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out
}

/// Whether every selector of `got` lies inside one of `offered`.
pub(super) fn within(got: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    !got.is_empty()
        && got
            .iter()
            .all(|g| offered.iter().any(|o| o.intersect(g) == Some(*g)))
}

pub(super) fn ts_list(payloads: &[Payload<'_>], kind: u8) -> Option<Vec<TrafficSelector>> {
    match find(payloads, kind)? {
        Payload::TsI(v) | Payload::TsR(v) => Some(v.clone()),
        _ => None,
    }
}

fn identity(payloads: &[Payload<'_>], kind: u8) -> Option<(u8, Vec<u8>)> {
    match find(payloads, kind)? {
        Payload::IdI(id) | Payload::IdR(id) => Some((id.id_type, id.data.to_vec())),
        _ => None,
    }
}

fn notify(kind: u16) -> Payload<'static> {
    Payload::Notify(Notify {
        protocol: 0,
        spi: &[],
        kind,
        data: &[],
    })
}

impl IkeSa {
    /// A Child SA from SK_d and the nonces (and PFS secret) of the
    /// exchange that made it; `we_initiated` that exchange (RFC 7296
    /// §2.17: keys and nonces follow the exchange's roles).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn child_sa(
        &self,
        suite: EspSuite,
        spi_in: u32,
        spi_out: u32,
        nonces: (&[u8], &[u8]),
        g_ir: Option<&[u8]>,
        we_initiated: bool,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> Option<ChildSa> {
        let p = self.protection.as_ref()?;
        let lens = KeyLengths {
            integ: suite.integ.map_or(0, |i| i.key_len()),
            encr: suite.encr.keymat_len(),
        };
        let k = ChildKeys::derive(p.suite.prf, &p.keys.sk_d, lens, g_ir, nonces.0, nonces.1)?;
        let i_to_r = DirectionKeys {
            encr: k.encr_i,
            integ: k.integ_i,
        };
        let r_to_i = DirectionKeys {
            encr: k.encr_r,
            integ: k.integ_r,
        };
        let (keys_in, keys_out) = if we_initiated {
            (r_to_i, i_to_r)
        } else {
            (i_to_r, r_to_i)
        };
        Some(ChildSa {
            spi_in,
            spi_out,
            suite,
            local_ts,
            remote_ts,
            encap: self.encap,
            keys_in,
            keys_out,
        })
    }

    /// Initiator: sends IKE_AUTH with our identity, AUTH and the first
    /// Child SA's proposals and selectors.
    pub(super) fn start_auth(&mut self, now: Instant, ex: Exchange) {
        let id = self.config.local_id.to_wire();
        let Some(sk_pi) = self.protection.as_ref().map(|p| p.keys.sk_pi.clone()) else {
            return;
        };
        let signed = Signed {
            init_message: &ex.msg1,
            nonce: &ex.nr,
            id: &id,
            sk_p: &sk_pi,
        };
        let Some((method, auth)) = self.our_auth(&signed, &ex.peer_hashes) else {
            return;
        };
        let (cert, certreq) = (self.our_cert(), self.our_certreq());
        let Some(child_spi) = self.new_spi() else {
            self.close(now, DownReason::Exhausted("no free inbound SPI"));
            return;
        };
        let config = self.config.clone();
        let remote_id = config.remote_id.as_ref().map(Identity::to_wire);
        let offer = SaPayload {
            proposals: config
                .esp_proposals
                .iter()
                .zip(1u8..)
                .map(|(p, n)| p.to_wire(n, child_spi.spi(), false))
                .collect(),
        };
        let mut w = Writer::chain();
        w.push(&Payload::IdI(Identification {
            id_type: id.0,
            data: &id.1,
        }));
        if let Some(c) = &cert {
            w.push(&Payload::Cert(CertData {
                encoding: CERT_X509,
                data: c,
            }));
        }
        if let Some(r) = &certreq {
            w.push(&Payload::CertReq(CertData {
                encoding: CERT_X509,
                data: r,
            }));
        }
        w.push(&notify(notify::INITIAL_CONTACT));
        if let Some(r) = &remote_id {
            w.push(&Payload::IdR(Identification {
                id_type: r.0,
                data: &r.1,
            }));
        }
        w.push(&Payload::Auth(Auth {
            method,
            data: &auth,
        }))
        .push(&Payload::Sa(offer))
        .push(&Payload::TsI(config.local_ts.clone()))
        .push(&Payload::TsR(config.remote_ts.clone()));
        self.send_request(now, RequestKind::Auth, exchange::IKE_AUTH, w);
        self.state = State::AuthSent(Box::new(AuthSent {
            exchange: ex,
            child_spi,
        }));
    }

    /// Initiator: checks the responder's identity and AUTH, then installs
    /// the Child SA it agreed to.
    pub(super) fn auth_response(&mut self, now: Instant, s: AuthSent, payloads: &[Payload<'_>]) {
        let AuthSent {
            exchange: ex,
            child_spi,
        } = s;
        let Some(idr) = identity(payloads, pt::IDR) else {
            let reason = match first_error(payloads) {
                Some(notify::AUTHENTICATION_FAILED) => DownReason::AuthenticationFailed(
                    "the responder refused our authentication (wrong PSK or identity?)".into(),
                ),
                Some(n) => DownReason::PeerRefused(n),
                None => DownReason::Protocol("IKE_AUTH response without IDr"),
            };
            self.close(now, reason);
            return;
        };
        let Some(peer) = Identity::from_wire(idr.0, &idr.1) else {
            self.close(
                now,
                DownReason::AuthenticationFailed("unknown ID type".into()),
            );
            return;
        };
        if let Some(want) = &self.config.remote_id {
            if *want != peer {
                let why = format!("responder identified as {peer}, expected {want}");
                self.close(now, DownReason::AuthenticationFailed(why));
                return;
            }
        }
        let Some(sk_pr) = self.protection.as_ref().map(|p| p.keys.sk_pr.clone()) else {
            return;
        };
        let signed = Signed {
            init_message: &ex.msg2,
            nonce: &ex.ni,
            id: &idr,
            sk_p: &sk_pr,
        };
        if let Err(why) = self.check_peer_auth(payloads, &signed, &peer) {
            self.close(now, DownReason::AuthenticationFailed(why));
            return;
        }
        let keepalive_at =
            (ex.nat_local && self.encap).then(|| now + self.config.timers.nat_keepalive);
        self.established(now, keepalive_at);
        let Some(suite) = self.suite() else { return };
        self.events.push_back(Event::IkeSaUp {
            remote_id: peer,
            suite,
            nat_local: ex.nat_local,
            nat_remote: ex.nat_remote,
        });

        let config = self.config.clone();
        let chosen = match find(payloads, pt::SA) {
            Some(Payload::Sa(sa)) => accept_esp_answer(sa, &config.esp_proposals, false),
            _ => None,
        };
        let (tsi, tsr) = (ts_list(payloads, pt::TSI), ts_list(payloads, pt::TSR));
        let child = match (chosen, tsi, tsr) {
            (Some((spi_out, suite)), Some(tsi), Some(tsr))
                if within(&tsi, &config.local_ts) && within(&tsr, &config.remote_ts) =>
            {
                let nonces = (&ex.ni[..], &ex.nr[..]);
                self.child_sa(
                    suite,
                    child_spi.spi(),
                    spi_out,
                    nonces,
                    None,
                    true,
                    tsi,
                    tsr,
                )
            }
            _ => None,
        };
        match child {
            Some(c) => {
                // Asked for by us: counted, never refused.
                let slot = self.our_child_slot(child_spi);
                self.add_child(now, &c, slot);
                self.events.push_back(Event::ChildSaUp(c));
            }
            None => {
                let n = first_error(payloads).unwrap_or(notify::NO_PROPOSAL_CHOSEN);
                self.events.push_back(Event::ChildSaFailed { notify: n });
            }
        }
    }

    /// Responder: authenticates the initiator, answers with our AUTH and
    /// the Child SA (or why there is none).
    pub(super) fn auth_request(
        &mut self,
        now: Instant,
        s: AwaitingAuth,
        payloads: &[Payload<'_>],
    ) -> Writer {
        let ex = s.0;
        let fail = |sa: &mut Self, n: u16, reason: DownReason| {
            sa.close(now, reason);
            Self::error_notify(n, &[])
        };
        let (Some(idi), Some(_)) = (identity(payloads, pt::IDI), find(payloads, pt::AUTH)) else {
            return fail(
                self,
                notify::INVALID_SYNTAX,
                DownReason::Protocol("IKE_AUTH without IDi or AUTH"),
            );
        };
        let Some(peer) = Identity::from_wire(idi.0, &idi.1) else {
            return fail(
                self,
                notify::AUTHENTICATION_FAILED,
                DownReason::AuthenticationFailed(format!("unknown ID type {}", idi.0)),
            );
        };
        self.switch_config_for(&peer);
        if let Some(want) = &self.config.remote_id {
            if *want != peer {
                let why = format!("initiator identified as {peer}, expected {want}");
                return fail(
                    self,
                    notify::AUTHENTICATION_FAILED,
                    DownReason::AuthenticationFailed(why),
                );
            }
        }
        let Some((sk_pi, sk_pr)) = self
            .protection
            .as_ref()
            .map(|p| (p.keys.sk_pi.clone(), p.keys.sk_pr.clone()))
        else {
            return Writer::chain();
        };
        let theirs = Signed {
            init_message: &ex.msg1,
            nonce: &ex.nr,
            id: &idi,
            sk_p: &sk_pi,
        };
        if let Err(why) = self.check_peer_auth(payloads, &theirs, &peer) {
            return fail(
                self,
                notify::AUTHENTICATION_FAILED,
                DownReason::AuthenticationFailed(why),
            );
        }
        let id = self.config.local_id.to_wire();
        let ours = Signed {
            init_message: &ex.msg2,
            nonce: &ex.ni,
            id: &id,
            sk_p: &sk_pr,
        };
        let Some((method, auth)) = self.our_auth(&ours, &ex.peer_hashes) else {
            return Writer::chain();
        };
        let cert = self.our_cert();
        let keepalive_at =
            (ex.nat_local && self.encap).then(|| now + self.config.timers.nat_keepalive);
        self.established(now, keepalive_at);
        if let Some(suite) = self.suite() {
            self.events.push_back(Event::IkeSaUp {
                remote_id: peer,
                suite,
                nat_local: ex.nat_local,
                nat_remote: ex.nat_remote,
            });
        }
        let mut w = Writer::chain();
        w.push(&Payload::IdR(Identification {
            id_type: id.0,
            data: &id.1,
        }));
        if let Some(c) = &cert {
            w.push(&Payload::Cert(CertData {
                encoding: CERT_X509,
                data: c,
            }));
        }
        w.push(&Payload::Auth(Auth {
            method,
            data: &auth,
        }));
        // No SA and no selectors: the initiator wants the IKE SA alone
        // (strongSwan does this when told to bring up no Child SA; RFC
        // 6023's childless IKE SA). Children may follow by CREATE_CHILD_SA.
        let childless = [pt::SA, pt::TSI, pt::TSR]
            .iter()
            .all(|&kind| find(payloads, kind).is_none());
        if childless {
            return w;
        }
        match self.accept_child(&ex, payloads) {
            Ok((child, answer, slot)) => {
                w.push(&Payload::Sa(answer))
                    .push(&Payload::TsI(child.remote_ts.clone()))
                    .push(&Payload::TsR(child.local_ts.clone()));
                self.add_child(now, &child, slot);
                self.events.push_back(Event::ChildSaUp(child));
            }
            Err(n) => {
                w.push(&notify(n));
                self.events.push_back(Event::ChildSaFailed { notify: n });
            }
        }
        w
    }

    /// Responder: if the initiator is not who our configuration expects
    /// but another configuration for its address names it exactly, and
    /// accepts the IKE suite already agreed, that one serves this SA (its
    /// credentials, identity, selectors and proposals; RFC 7296 §2.15).
    fn switch_config_for(&mut self, peer: &Identity) {
        if self
            .config
            .remote_id
            .as_ref()
            .is_none_or(|want| want == peer)
        {
            return;
        }
        let Some(suite) = self.suite() else { return };
        let agreed = crate::proposal::ike_answer(1, &suite, Vec::new());
        let found = self.alternatives.iter().find(|c| {
            c.remote_id.as_ref() == Some(peer)
                && crate::proposal::choose_ike(&agreed, &c.ike_proposals)
                    .is_some_and(|(_, s)| s == suite)
        });
        if let Some(c) = found {
            self.config = c.clone();
        }
    }

    /// The Child SA the initiator asked for, as our policy allows it, or
    /// the notify that says why not.
    fn accept_child(
        &mut self,
        ex: &Exchange,
        payloads: &[Payload<'_>],
    ) -> Result<(ChildSa, SaPayload, ChildSlot), u16> {
        let config = self.config.clone();
        let budget = match &config.child_limits.per_config {
            Some(b) => Some(b.take().ok_or(notify::NO_ADDITIONAL_SAS)?),
            None => None,
        };
        let (Some(Payload::Sa(offer)), Some(tsi), Some(tsr)) = (
            find(payloads, pt::SA),
            ts_list(payloads, pt::TSI),
            ts_list(payloads, pt::TSR),
        ) else {
            return Err(notify::INVALID_SYNTAX);
        };
        let (number, spi_out, suite) =
            choose_esp(offer, &config.esp_proposals, ChildExchange::IkeAuth)
                .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        // TSi is the initiator's side: our remote selectors.
        let remote_ts = narrow(&tsi, &config.remote_ts);
        let local_ts = narrow(&tsr, &config.local_ts);
        if remote_ts.is_empty() || local_ts.is_empty() {
            return Err(notify::TS_UNACCEPTABLE);
        }
        let claim = self.new_spi().ok_or(notify::NO_ADDITIONAL_SAS)?;
        let spi_in = claim.spi();
        let nonces = (&ex.ni[..], &ex.nr[..]);
        let child = self
            .child_sa(
                suite, spi_in, spi_out, nonces, None, false, local_ts, remote_ts,
            )
            .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let slot = ChildSlot {
            _spi: claim,
            _budget: budget,
        };
        Ok((child, esp_answer(number, &suite, spi_in), slot))
    }
}
