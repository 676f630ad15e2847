//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying Child SAs (with PFS when
//! the ESP proposals name a group), new Child SAs from the peer, rekeying
//! the IKE SA itself, and deleting Child SAs; plus the queue that keeps
//! our requests to one at a time.

use std::time::{Duration, Instant};

use rand_core::RngCore;

use super::authx::{narrow, ts_list, within};
use super::init::{key_lengths, protection};
use super::{
    find, first_error, nonzero_spi, ChildInfo, EstablishedTimers, Event, IkeSa, Protection,
    RequestKind, Role, State, Work,
};
use crate::child::ChildSa;
use crate::child_slots::{ChildSlot, SpiClaim};
use crate::crypto::{DhGroup, IkeKeys, KeyShare};
use crate::proposal::{
    accept_esp_answer, accept_ike_answer, choose_esp, choose_ike, esp_answer, ike_answer,
    ike_sa_payload, ChildExchange,
};
use crate::wire::consts::{exchange, notify, payload as pt, protocol};
use crate::wire::{Delete, KeyExchange, Notify, Payload, SaPayload, TrafficSelector, Writer};

const NONCE_LEN: usize = 32;

/// Our request in flight, and what we need to finish it.
pub(super) enum Pending {
    RekeyChild {
        old_spi_in: u32,
        new_spi_in: SpiClaim,
        share: Option<KeyShare>,
        ni: Vec<u8>,
    },
    RekeyIke {
        new_spi: u64,
        share: KeyShare,
        ni: Vec<u8>,
    },
    DeleteChild {
        spi_in: u32,
    },
    NewChild {
        spi_in: SpiClaim,
        share: Option<KeyShare>,
        ni: Vec<u8>,
    },
}

/// The IKE SA that replaces this one after an IKE rekey.
pub(super) struct Successor {
    spi_i: u64,
    spi_r: u64,
    role: Role,
    protection: Protection,
}

fn ke_of<'p>(payloads: &'p [Payload<'_>]) -> Option<(u16, &'p [u8])> {
    match find(payloads, pt::KE)? {
        Payload::Ke(k) => Some((k.group, k.data)),
        _ => None,
    }
}

fn nonce_of(payloads: &[Payload<'_>]) -> Option<Vec<u8>> {
    match find(payloads, pt::NONCE)? {
        Payload::Nonce(n) => Some(n.to_vec()),
        _ => None,
    }
}

fn sa_of<'p>(payloads: &'p [Payload<'_>]) -> Option<&'p SaPayload> {
    match find(payloads, pt::SA)? {
        Payload::Sa(s) => Some(s),
        _ => None,
    }
}

impl IkeSa {
    /// Queues a rekey of the Child SA whose inbound SPI is `spi_in`.
    pub fn rekey_child(&mut self, now: Instant, spi_in: u32) {
        if let Some(c) = self
            .children
            .iter_mut()
            .find(|c| c.spi_in == spi_in && !c.busy)
        {
            c.busy = true;
            self.work.push_back(Work::RekeyChild(spi_in));
        }
        self.kick(now);
    }

    /// Queues a delete of the Child SA whose inbound SPI is `spi_in`.
    pub fn delete_child(&mut self, now: Instant, spi_in: u32) {
        if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == spi_in) {
            c.busy = true;
            self.work.retain(|w| *w != Work::RekeyChild(spi_in));
            self.work.push_back(Work::DeleteChild(spi_in));
        }
        self.kick(now);
    }

    /// Queues a request for one more Child SA with the configuration's
    /// selectors (for an IKE SA brought up without one, or a second
    /// pair of SAs); the answer comes as `ChildSaUp` or `ChildSaFailed`.
    pub fn create_child(&mut self, now: Instant) {
        self.work.push_back(Work::CreateChild);
        self.kick(now);
    }

    /// Queues a rekey of the IKE SA.
    pub fn rekey_ike(&mut self, now: Instant) {
        if !self.work.contains(&Work::RekeyIke) && self.successor.is_none() {
            self.work.push_back(Work::RekeyIke);
        }
        self.kick(now);
    }

    /// Enters Established: the IKE rekey timer starts, and the NAT
    /// keepalive timer with `keepalive_at` (behind a NAT).
    pub(super) fn established(&mut self, now: Instant, keepalive_at: Option<Instant>) {
        self.state = State::Established(EstablishedTimers {
            ike_rekey_at: self.config.timers.ike_rekey.map(|d| now + d),
            keepalive_at,
        });
        self.deadline = None;
    }

    /// Sets the IKE rekey timer (an established SA has one).
    fn set_ike_rekey_at(&mut self, at: Option<Instant>) {
        if let State::Established(t) = &mut self.state {
            t.ike_rekey_at = at;
        }
    }

    pub(super) fn add_child(&mut self, now: Instant, c: &ChildSa, slot: ChildSlot) {
        self.children.push(ChildInfo {
            _slot: slot,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            rekey_at: self.config.timers.child_rekey.map(|d| now + d),
            busy: false,
        });
    }

    /// Queues the rekeys whose time has come.
    pub(super) fn schedule_rekeys(&mut self, now: Instant) {
        if !matches!(self.state, State::Established(_)) {
            return;
        }
        for c in &mut self.children {
            if !c.busy && c.rekey_at.is_some_and(|t| now >= t) {
                c.busy = true;
                c.rekey_at = None;
                self.work.push_back(Work::RekeyChild(c.spi_in));
            }
        }
        let rekey_due = match &mut self.state {
            State::Established(t) if t.ike_rekey_at.is_some_and(|at| now >= at) => {
                t.ike_rekey_at = None;
                true
            }
            _ => false,
        };
        if rekey_due {
            self.rekey_ike(now);
        }
    }

    /// Sends the next queued request if the window is free.
    pub(super) fn kick(&mut self, now: Instant) {
        while matches!(self.state, State::Established(_))
            && self.outstanding.is_none()
            && self.successor.is_none()
        {
            let Some(w) = self.work.pop_front() else {
                return;
            };
            match w {
                Work::RekeyChild(spi) => self.send_rekey_child(now, spi),
                Work::DeleteChild(spi) => self.send_delete_child(now, spi),
                Work::RekeyIke => self.send_rekey_ike(now),
                Work::CreateChild => self.send_create_child(now),
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        let mut n = vec![0u8; NONCE_LEN];
        self.rng.fill_bytes(&mut n);
        n
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_millis(1000 + u64::from(self.rng.next_u32() % 4000))
    }

    fn send_rekey_child(&mut self, now: Instant, old_spi_in: u32) {
        let Some((local_ts, remote_ts)) = self
            .children
            .iter()
            .find(|c| c.spi_in == old_spi_in)
            .map(|c| (c.local_ts.clone(), c.remote_ts.clone()))
        else {
            return;
        };
        let Some(new_spi_in) = self.new_spi() else {
            // No free SPI now: the old SA stays, tried again later.
            let again = now + self.jitter();
            if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old_spi_in) {
                c.busy = false;
                c.rekey_at = Some(again);
            }
            return;
        };
        let old_spi = old_spi_in.to_be_bytes();
        let rekey = Notify {
            protocol: protocol::ESP,
            spi: &old_spi,
            kind: notify::REKEY_SA,
            data: &[],
        };
        let (w, share, ni) = self.child_request(Some(rekey), new_spi_in.spi(), local_ts, remote_ts);
        self.pending = Some(Pending::RekeyChild {
            old_spi_in,
            new_spi_in,
            share,
            ni,
        });
        self.send_request(now, RequestKind::Create, exchange::CREATE_CHILD_SA, w);
    }

    fn send_create_child(&mut self, now: Instant) {
        let Some(spi_in) = self.new_spi() else {
            self.events.push_back(Event::ChildSaFailed {
                notify: notify::NO_ADDITIONAL_SAS,
            });
            return;
        };
        let (local_ts, remote_ts) = (self.config.local_ts.clone(), self.config.remote_ts.clone());
        let (w, share, ni) = self.child_request(None, spi_in.spi(), local_ts, remote_ts);
        self.pending = Some(Pending::NewChild { spi_in, share, ni });
        self.send_request(now, RequestKind::Create, exchange::CREATE_CHILD_SA, w);
    }

    /// A CREATE_CHILD_SA request for a Child SA (a rekey when `rekey`
    /// names the old one): our proposals for `spi_in`, a nonce, a key
    /// share if our first proposal wants PFS, and the selectors.
    fn child_request(
        &mut self,
        rekey: Option<Notify<'_>>,
        spi_in: u32,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
    ) -> (Writer, Option<KeyShare>, Vec<u8>) {
        let config = self.config.clone();
        let ni = self.nonce();
        let group = config
            .esp_proposals
            .first()
            .and_then(|p| p.dh.first().copied());
        let share = group.map(|g| KeyShare::generate(g, &mut self.rng));
        let offer = SaPayload {
            proposals: config
                .esp_proposals
                .iter()
                .zip(1u8..)
                .map(|(p, n)| p.to_wire(n, spi_in, share.is_some()))
                .collect(),
        };
        let mut w = Writer::chain();
        if let Some(n) = rekey {
            w.push(&Payload::Notify(n));
        }
        w.push(&Payload::Sa(offer)).push(&Payload::Nonce(&ni));
        if let Some(s) = &share {
            w.push(&Payload::Ke(KeyExchange {
                group: s.group().id(),
                data: s.public(),
            }));
        }
        w.push(&Payload::TsI(local_ts))
            .push(&Payload::TsR(remote_ts));
        (w, share, ni)
    }

    fn send_delete_child(&mut self, now: Instant, spi_in: u32) {
        if !self.children.iter().any(|c| c.spi_in == spi_in) {
            return;
        }
        let spi = spi_in.to_be_bytes();
        let mut w = Writer::chain();
        w.push(&Payload::Delete(Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: &spi,
        }));
        self.pending = Some(Pending::DeleteChild { spi_in });
        self.send_request(now, RequestKind::DeleteChild, exchange::INFORMATIONAL, w);
    }

    fn send_rekey_ike(&mut self, now: Instant) {
        let Some(suite) = self.suite() else { return };
        let new_spi = nonzero_spi(&mut self.rng);
        let ni = self.nonce();
        let share = KeyShare::generate(suite.dh, &mut self.rng);
        let mut offer = ike_sa_payload(&self.config.ike_proposals);
        for p in &mut offer.proposals {
            p.spi = new_spi.to_be_bytes().to_vec();
        }
        let mut w = Writer::chain();
        w.push(&Payload::Sa(offer))
            .push(&Payload::Nonce(&ni))
            .push(&Payload::Ke(KeyExchange {
                group: share.group().id(),
                data: share.public(),
            }));
        self.pending = Some(Pending::RekeyIke { new_spi, share, ni });
        self.send_request(now, RequestKind::Create, exchange::CREATE_CHILD_SA, w);
    }

    /// Answers a CREATE_CHILD_SA request; a refusal is also reported
    /// (`PeerRequestRefused`) so the owner can say why in its log.
    pub(super) fn create_request(&mut self, now: Instant, payloads: &[Payload<'_>]) -> Writer {
        let (Some(offer), Some(ni)) = (sa_of(payloads), nonce_of(payloads)) else {
            self.refused(
                "CREATE_CHILD_SA",
                notify::INVALID_SYNTAX,
                "no SA or nonce".into(),
            );
            return Self::error_notify(notify::INVALID_SYNTAX, &[]);
        };
        let offer = offer.clone();
        let rekeying_ike = offer.proposals.iter().any(|p| p.protocol == protocol::IKE);
        let rekeying_child = payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.kind == notify::REKEY_SA));
        let answer = if rekeying_ike {
            self.answer_ike_rekey(&offer, &ni, payloads)
        } else {
            self.answer_child(now, &offer, &ni, payloads)
        };
        answer.unwrap_or_else(|(kind, data)| {
            let what = match (rekeying_ike, rekeying_child) {
                (true, _) => "IKE SA rekey",
                (false, true) => "Child SA rekey",
                (false, false) => "new Child SA",
            };
            let pfs_required = !self.config.esp_proposals.is_empty()
                && self.config.esp_proposals.iter().all(|p| !p.dh.is_empty());
            let reason = match kind {
                notify::NO_PROPOSAL_CHOSEN
                    if !rekeying_ike && pfs_required && ke_of(payloads).is_none() =>
                {
                    "no key exchange offered, and this tunnel requires PFS".to_string()
                }
                notify::NO_PROPOSAL_CHOSEN => "no proposal in common".to_string(),
                notify::NO_ADDITIONAL_SAS => "the Child SA limit is reached".to_string(),
                notify::TS_UNACCEPTABLE => "traffic selectors outside our policy".to_string(),
                notify::INVALID_KE_PAYLOAD => "another DH group is wanted".to_string(),
                notify::TEMPORARY_FAILURE => "a rekey of ours is under way".to_string(),
                notify::CHILD_SA_NOT_FOUND => "no such Child SA".to_string(),
                other => format!("notify {other}"),
            };
            self.refused(what, kind, reason);
            Self::error_notify(kind, &data)
        })
    }

    fn refused(&mut self, what: &'static str, notify: u16, reason: String) {
        self.events.push_back(Event::PeerRequestRefused {
            what,
            notify,
            reason,
        });
    }

    fn answer_ike_rekey(
        &mut self,
        offer: &SaPayload,
        ni: &[u8],
        payloads: &[Payload<'_>],
    ) -> Result<Writer, (u16, Vec<u8>)> {
        // A rekey of ours in flight, or one already agreed: one at a time.
        if self.successor.is_some() || matches!(self.pending, Some(Pending::RekeyIke { .. })) {
            return Err((notify::TEMPORARY_FAILURE, vec![]));
        }
        let config = self.config.clone();
        let (number, suite) =
            choose_ike(offer, &config.ike_proposals).ok_or((notify::NO_PROPOSAL_CHOSEN, vec![]))?;
        let (group, kei) = ke_of(payloads).ok_or((notify::INVALID_SYNTAX, vec![]))?;
        if group != suite.dh.id() {
            return Err((
                notify::INVALID_KE_PAYLOAD,
                suite.dh.id().to_be_bytes().to_vec(),
            ));
        }
        let peer_spi = offer
            .proposals
            .iter()
            .find(|p| p.number == number && p.protocol == protocol::IKE)
            .and_then(|p| <[u8; 8]>::try_from(&p.spi[..]).ok())
            .map(u64::from_be_bytes)
            .filter(|s| *s != 0)
            .ok_or((notify::INVALID_SYNTAX, vec![]))?;
        let share = KeyShare::generate(suite.dh, &mut self.rng);
        let g_ir = share
            .shared(kei)
            .map_err(|_| (notify::INVALID_SYNTAX, vec![]))?;
        let nr = self.nonce();
        let our_spi = nonzero_spi(&mut self.rng);
        let old = self
            .protection
            .as_ref()
            .ok_or((notify::TEMPORARY_FAILURE, vec![]))?;
        let keys = IkeKeys::rekeyed(
            old.suite.prf,
            &old.keys.sk_d,
            suite.prf,
            key_lengths(&suite),
            &g_ir,
            ni,
            &nr,
            peer_spi,
            our_spi,
        )
        .and_then(|k| protection(suite, k, Role::Responder))
        .ok_or((notify::NO_PROPOSAL_CHOSEN, vec![]))?;
        self.successor = Some(Successor {
            spi_i: peer_spi,
            spi_r: our_spi,
            role: Role::Responder,
            protection: keys,
        });
        let mut w = Writer::chain();
        w.push(&Payload::Sa(ike_answer(
            number,
            &suite,
            our_spi.to_be_bytes().to_vec(),
        )))
        .push(&Payload::Nonce(&nr))
        .push(&Payload::Ke(KeyExchange {
            group: suite.dh.id(),
            data: share.public(),
        }));
        Ok(w)
    }

    fn answer_child(
        &mut self,
        now: Instant,
        offer: &SaPayload,
        ni: &[u8],
        payloads: &[Payload<'_>],
    ) -> Result<Writer, (u16, Vec<u8>)> {
        let config = self.config.clone();
        let rekeyed = payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.kind == notify::REKEY_SA && n.protocol == protocol::ESP => {
                <[u8; 4]>::try_from(n.spi).ok().map(u32::from_be_bytes)
            }
            _ => None,
        });
        let old = match rekeyed {
            Some(spi_out) => {
                let c = self
                    .children
                    .iter()
                    .find(|c| c.spi_out == spi_out)
                    .ok_or((notify::CHILD_SA_NOT_FOUND, vec![]))?;
                if c.busy {
                    // We are rekeying or deleting it ourselves (§2.25).
                    return Err((notify::TEMPORARY_FAILURE, vec![]));
                }
                Some(c.spi_in)
            }
            None => None,
        };
        let budget = self.child_place(old.is_some())?;
        let ke = ke_of(payloads);
        let ke_group = match ke {
            Some((g, _)) => Some(DhGroup::from_id(g).ok_or((notify::NO_PROPOSAL_CHOSEN, vec![]))?),
            None => None,
        };
        let (number, spi_out, suite) = choose_esp(
            offer,
            &config.esp_proposals,
            ChildExchange::CreateChildSa(ke_group),
        )
        .ok_or((notify::NO_PROPOSAL_CHOSEN, vec![]))?;
        if let (Some(want), Some(got)) = (suite.dh, ke_group) {
            if want != got {
                return Err((notify::INVALID_KE_PAYLOAD, want.id().to_be_bytes().to_vec()));
            }
        }
        let (Some(tsi), Some(tsr)) = (ts_list(payloads, pt::TSI), ts_list(payloads, pt::TSR))
        else {
            return Err((notify::INVALID_SYNTAX, vec![]));
        };
        let remote_ts = narrow(&tsi, &config.remote_ts);
        let local_ts = narrow(&tsr, &config.local_ts);
        if remote_ts.is_empty() || local_ts.is_empty() {
            return Err((notify::TS_UNACCEPTABLE, vec![]));
        }
        let share = suite.dh.map(|g| KeyShare::generate(g, &mut self.rng));
        let g_ir = match (&share, ke) {
            (Some(s), Some((_, data))) => Some(
                s.shared(data)
                    .map_err(|_| (notify::INVALID_SYNTAX, vec![]))?,
            ),
            _ => None,
        };
        let nr = self.nonce();
        let claim = self.new_spi().ok_or((notify::NO_ADDITIONAL_SAS, vec![]))?;
        let spi_in = claim.spi();
        let child = self
            .child_sa(
                suite,
                spi_in,
                spi_out,
                (ni, &nr),
                g_ir.as_ref().map(|g| &g[..]),
                false,
                local_ts,
                remote_ts,
            )
            .ok_or((notify::NO_PROPOSAL_CHOSEN, vec![]))?;
        let slot = ChildSlot {
            _spi: claim,
            _budget: budget,
        };
        let mut w = Writer::chain();
        w.push(&Payload::Sa(esp_answer(number, &suite, spi_in)))
            .push(&Payload::Nonce(&nr));
        if let Some(s) = &share {
            w.push(&Payload::Ke(KeyExchange {
                group: s.group().id(),
                data: s.public(),
            }));
        }
        w.push(&Payload::TsI(child.remote_ts.clone()))
            .push(&Payload::TsR(child.local_ts.clone()));
        self.add_child(now, &child, slot);
        match old {
            Some(old_spi_in) => {
                // The peer deletes the old one; we no longer rekey it.
                if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old_spi_in) {
                    c.rekey_at = None;
                }
                self.events.push_back(Event::ChildSaRekeyed {
                    old_spi_in,
                    new: child,
                    send_now: false,
                });
            }
            None => self.events.push_back(Event::ChildSaUp(child)),
        }
        Ok(w)
    }

    /// The place of a Child SA we asked for: counted in the tunnel's
    /// budget, never refused (our own requests are bounded by our config).
    pub(super) fn our_child_slot(&self, spi: SpiClaim) -> ChildSlot {
        ChildSlot {
            _spi: spi,
            _budget: self
                .config
                .child_limits
                .per_config
                .as_ref()
                .map(|b| b.take_anyway()),
        }
    }

    /// Room for one more Child SA the peer asks for (RFC 7296 §1.3: else
    /// NO_ADDITIONAL_SAS), and its place in the tunnel's budget. A rekey
    /// may briefly hold twice the per-IKE-SA bound (the old SAs until the
    /// peer deletes them) and is counted even beyond the tunnel's.
    fn child_place(
        &self,
        rekey: bool,
    ) -> Result<Option<crate::child_slots::BudgetClaim>, (u16, Vec<u8>)> {
        let limits = &self.config.child_limits;
        let bound = if rekey {
            limits.per_ike_sa.saturating_mul(2)
        } else {
            limits.per_ike_sa
        };
        if self.children.len() >= bound {
            return Err((notify::NO_ADDITIONAL_SAS, vec![]));
        }
        match (&limits.per_config, rekey) {
            (None, _) => Ok(None),
            (Some(b), true) => Ok(Some(b.take_anyway())),
            (Some(b), false) => b
                .take()
                .map(Some)
                .ok_or((notify::NO_ADDITIONAL_SAS, vec![])),
        }
    }

    /// The answer to our CREATE_CHILD_SA.
    pub(super) fn create_response(&mut self, now: Instant, payloads: &[Payload<'_>]) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        match pending {
            Pending::RekeyChild {
                old_spi_in,
                new_spi_in,
                share,
                ni,
            } => self.child_rekeyed(now, old_spi_in, new_spi_in, share, &ni, payloads),
            Pending::RekeyIke { new_spi, share, ni } => {
                self.ike_rekeyed(now, new_spi, share, &ni, payloads)
            }
            Pending::NewChild { spi_in, share, ni } => {
                let (local, remote) = (self.config.local_ts.clone(), self.config.remote_ts.clone());
                match self.child_from_answer(
                    payloads,
                    share.as_ref(),
                    &ni,
                    spi_in.spi(),
                    &local,
                    &remote,
                ) {
                    Ok(child) => {
                        let slot = self.our_child_slot(spi_in);
                        self.add_child(now, &child, slot);
                        self.events.push_back(Event::ChildSaUp(child));
                    }
                    Err(n) => self.events.push_back(Event::ChildSaFailed { notify: n }),
                }
            }
            Pending::DeleteChild { .. } => {}
        }
    }

    /// The Child SA the peer's answer to our CREATE_CHILD_SA agrees to,
    /// inside the selectors we offered, or the notify that says why not.
    fn child_from_answer(
        &self,
        payloads: &[Payload<'_>],
        share: Option<&KeyShare>,
        ni: &[u8],
        spi_in: u32,
        offered_local: &[TrafficSelector],
        offered_remote: &[TrafficSelector],
    ) -> Result<ChildSa, u16> {
        if let Some(n) = first_error(payloads) {
            return Err(n);
        }
        let sa = sa_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
        let (spi_out, suite) = accept_esp_answer(sa, &self.config.esp_proposals, share.is_some())
            .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        let nr = nonce_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
        let g_ir = match share {
            Some(s) => {
                let (group, data) = ke_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
                if group != s.group().id() || suite.dh != Some(s.group()) {
                    return Err(notify::INVALID_KE_PAYLOAD);
                }
                Some(s.shared(data).map_err(|_| notify::INVALID_SYNTAX)?)
            }
            None => None,
        };
        let (tsi, tsr): (Vec<TrafficSelector>, Vec<TrafficSelector>) =
            match (ts_list(payloads, pt::TSI), ts_list(payloads, pt::TSR)) {
                (Some(i), Some(r)) if within(&i, offered_local) && within(&r, offered_remote) => {
                    (i, r)
                }
                _ => return Err(notify::TS_UNACCEPTABLE),
            };
        self.child_sa(
            suite,
            spi_in,
            spi_out,
            (ni, &nr),
            g_ir.as_ref().map(|g| &g[..]),
            true,
            tsi,
            tsr,
        )
        .ok_or(notify::NO_PROPOSAL_CHOSEN)
    }

    fn child_rekeyed(
        &mut self,
        now: Instant,
        old_spi_in: u32,
        new_spi_in: SpiClaim,
        share: Option<KeyShare>,
        ni: &[u8],
        payloads: &[Payload<'_>],
    ) {
        let made = self
            .children
            .iter()
            .find(|c| c.spi_in == old_spi_in)
            .map(|old| (old.local_ts.clone(), old.remote_ts.clone()))
            .ok_or(notify::CHILD_SA_NOT_FOUND)
            .and_then(|(local, remote)| {
                self.child_from_answer(
                    payloads,
                    share.as_ref(),
                    ni,
                    new_spi_in.spi(),
                    &local,
                    &remote,
                )
            });
        match made {
            Ok(child) => {
                // Ours: counted, never refused (the old SA goes next).
                let slot = self.our_child_slot(new_spi_in);
                self.add_child(now, &child, slot);
                self.events.push_back(Event::ChildSaRekeyed {
                    old_spi_in,
                    new: child,
                    send_now: true,
                });
                // The old SA goes next (RFC 7296 §1.3.3).
                self.work.push_front(Work::DeleteChild(old_spi_in));
            }
            Err(notify::TEMPORARY_FAILURE) => {
                // A collision or a busy peer: try again a little later.
                let again = now + self.jitter();
                if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old_spi_in) {
                    c.busy = false;
                    c.rekey_at = Some(again);
                }
            }
            Err(notify::CHILD_SA_NOT_FOUND) => {
                self.work.push_front(Work::DeleteChild(old_spi_in));
            }
            Err(n) => {
                // Keep the old SA; it stays until deleted.
                self.events.push_back(Event::ChildSaFailed { notify: n });
                if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == old_spi_in) {
                    c.busy = false;
                }
            }
        }
    }

    fn ike_rekeyed(
        &mut self,
        now: Instant,
        new_spi: u64,
        share: KeyShare,
        ni: &[u8],
        payloads: &[Payload<'_>],
    ) {
        let config = self.config.clone();
        let made = (|| -> Result<Successor, u16> {
            if let Some(n) = first_error(payloads) {
                return Err(n);
            }
            let sa = sa_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
            let suite =
                accept_ike_answer(sa, &config.ike_proposals).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
            let peer_spi = sa
                .proposals
                .first()
                .and_then(|p| <[u8; 8]>::try_from(&p.spi[..]).ok())
                .map(u64::from_be_bytes)
                .filter(|s| *s != 0)
                .ok_or(notify::INVALID_SYNTAX)?;
            let nr = nonce_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
            let (group, data) = ke_of(payloads).ok_or(notify::INVALID_SYNTAX)?;
            if group != share.group().id() || suite.dh != share.group() {
                return Err(notify::INVALID_KE_PAYLOAD);
            }
            let g_ir = share.shared(data).map_err(|_| notify::INVALID_SYNTAX)?;
            let old = self.protection.as_ref().ok_or(notify::INVALID_SYNTAX)?;
            let keys = IkeKeys::rekeyed(
                old.suite.prf,
                &old.keys.sk_d,
                suite.prf,
                key_lengths(&suite),
                &g_ir,
                ni,
                &nr,
                new_spi,
                peer_spi,
            )
            .and_then(|k| protection(suite, k, Role::Initiator))
            .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
            Ok(Successor {
                spi_i: new_spi,
                spi_r: peer_spi,
                role: Role::Initiator,
                protection: keys,
            })
        })();
        match made {
            Ok(successor) => {
                self.successor = Some(successor);
                // Delete the old IKE SA; the new one takes over after.
                let mut w = Writer::chain();
                w.push(&Payload::Delete(Delete {
                    protocol: protocol::IKE,
                    spi_size: 0,
                    spis: &[],
                }));
                self.send_request(now, RequestKind::DeleteOldIke, exchange::INFORMATIONAL, w);
            }
            Err(notify::TEMPORARY_FAILURE) => {
                let at = now + self.jitter();
                self.set_ike_rekey_at(Some(at));
            }
            Err(_) => {
                // Keep the current IKE SA; try again much later.
                self.set_ike_rekey_at(self.config.timers.ike_rekey.map(|d| now + d / 2));
            }
        }
    }

    /// Our Child SA delete was answered (the peer's SPIs, if any, name the
    /// same pair).
    pub(super) fn delete_child_response(&mut self, _payloads: &[Payload<'_>]) {
        let Some(Pending::DeleteChild { spi_in }) = self.pending.take() else {
            return;
        };
        if let Some(i) = self.children.iter().position(|c| c.spi_in == spi_in) {
            let c = self.children.remove(i);
            self.events.push_back(Event::ChildSaDeleted {
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
    }

    /// The old IKE SA is gone: continue as its successor, with fresh
    /// message ids (RFC 7296 §2.18). The Child SAs move along.
    pub(super) fn switch_to_successor(&mut self, now: Instant) {
        let Some(s) = self.successor.take() else {
            return;
        };
        self.spi_i = s.spi_i;
        self.spi_r = s.spi_r;
        self.role = s.role;
        self.protection = Some(s.protection);
        self.next_request_id = 0;
        self.expected_request_id = 0;
        self.last_response = None;
        self.outstanding = None;
        self.pending = None;
        self.last_heard = now;
        let keepalive_at = match &self.state {
            State::Established(t) => t.keepalive_at,
            _ => None,
        };
        self.established(now, keepalive_at);
        self.events.push_back(Event::IkeSaRekeyed {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
        });
    }
}
