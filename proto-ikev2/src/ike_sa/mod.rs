//! One IKE SA as a sans-IO state machine, initiator or responder.
//!
//! Driver surface (as every protocol crate here): `handle_input(now, from,
//! to, message)`, `handle_timeout(now)`, `poll_transmit()`,
//! `poll_event()`, `poll_timeout()`. Messages come in without the
//! non-ESP marker; transmits carry it when the SA runs on UDP 4500.
//!
//! Exchanges follow RFC 7296's window of one: we have at most one request
//! outstanding (retransmitted with doubling timeouts, the SA given up
//! after the configured tries), and answer each peer request once,
//! resending the same answer to an identical retransmission.

mod authx;
mod credentials;
mod fragment;
mod init;
mod rekey;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto_esp::Cipher;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

use crate::child::ChildSa;
use crate::child_slots::{ChildSlot, SpiClaim, SpiTable};
use crate::config::{Config, Identity};
use crate::crypto::sk;
use crate::crypto::IkeKeys;
use crate::proposal::IkeSuite;
use crate::wire::consts::{exchange, flags, notify, protocol};
use crate::wire::{parse_chain, Delete, Header, Message, Notify, Payload, Writer};

pub use init::Refusal;

/// UDP port for IKE and ESP once NAT traversal floats (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// RFC 3948 §2.2: what precedes an IKE message on port 4500.
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// RFC 3948 §2.3: a NAT keepalive is one 0xFF byte on port 4500.
const NAT_KEEPALIVE: [u8; 1] = [0xff];
/// How long a closed SA still answers retransmissions of its last request.
const LINGER: Duration = Duration::from_secs(10);

/// A datagram to send: from our port 500 or 4500 (which one matters),
/// its contents the UDP payload (with the non-ESP marker on port 4500).
pub type Transmit = cvlan_core::Transmit<SocketAddr>;

/// Why an IKE SA ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// The peer's AUTH did not verify, or its identity is not the one
    /// configured; the text says which.
    AuthenticationFailed(String),
    /// The peer answered with an error notify (NO_PROPOSAL_CHOSEN, ...).
    PeerRefused(u16),
    /// The peer stopped answering (retransmissions exhausted or DPD).
    NoResponse,
    /// The peer deleted the SA.
    DeletedByPeer,
    /// We deleted it and the peer confirmed (or stopped answering).
    Deleted,
    /// A responder SA that never saw IKE_AUTH.
    HalfOpenExpired,
    /// A bound was reached (no free inbound SPI).
    Exhausted(&'static str),
    /// A newer IKE SA with the same peer took its place.
    Replaced,
    /// The peer broke the protocol in a way that ends the SA.
    Protocol(&'static str),
}

/// What the SA reports to its owner.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// IKE_AUTH completed: the peer is who it claimed.
    IkeSaUp {
        remote_id: Identity,
        suite: IkeSuite,
        /// NAT between us: ours, the peer's.
        nat_local: bool,
        nat_remote: bool,
    },
    /// A Child SA to install (keys for proto-esp inside).
    ChildSaUp(ChildSa),
    /// A Child SA replaces the one whose inbound SPI is `old_spi_in`:
    /// install it and accept on it at once, and keep accepting on the old
    /// one until its `ChildSaDeleted` (and a little after: packets sealed
    /// just before may still arrive). `send_now`: we started the rekey, so
    /// the peer already has the new SA: send on it at once. Otherwise the
    /// peer installs it only when our answer reaches it: keep sending on
    /// the old SA until it is deleted (RFC 7296 §2.8).
    ChildSaRekeyed {
        old_spi_in: u32,
        new: ChildSa,
        send_now: bool,
    },
    /// The IKE SA continues under new SPIs and keys.
    IkeSaRekeyed {
        spi_i: u64,
        spi_r: u64,
    },
    /// The peer declined the Child SA we asked for, or we declined its.
    ChildSaFailed {
        notify: u16,
    },
    /// We refused a request of the peer's (`what`: "Child SA rekey",
    /// "new Child SA", "IKE SA rekey"), answering `notify`, because of
    /// `reason`.
    PeerRequestRefused {
        what: &'static str,
        notify: u16,
        reason: String,
    },
    /// A Child SA was deleted (by either side): remove it.
    ChildSaDeleted {
        spi_in: u32,
        spi_out: u32,
    },
    IkeSaDown(DownReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// Coarse state, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connecting,
    Established,
    Deleting,
    Closed,
}

enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent(Box<init::InitSent>),
    /// Initiator: IKE_AUTH sent.
    AuthSent(Box<authx::AuthSent>),
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    AwaitingAuth(Box<authx::AwaitingAuth>),
    Established(EstablishedTimers),
    Deleting,
    Closed,
}

/// Timers only an established IKE SA has (they cannot be set in any
/// other state).
#[derive(Debug, Default)]
struct EstablishedTimers {
    ike_rekey_at: Option<Instant>,
    /// When the next NAT keepalive is due (only while we are behind a NAT).
    keepalive_at: Option<Instant>,
}

/// What our outstanding request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Init,
    Auth,
    Liveness,
    DeleteIke,
    /// CREATE_CHILD_SA for a Child SA (new or rekey) or the IKE SA.
    Create,
    DeleteChild,
    /// The old IKE SA's delete after an IKE rekey we started.
    DeleteOldIke,
}

/// Requests waiting for the window (RFC 7296 allows one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    RekeyChild(u32),
    DeleteChild(u32),
    RekeyIke,
    CreateChild,
}

/// What we keep of each Child SA (its keys went to the owner).
#[derive(Debug)]
struct ChildInfo {
    /// Its inbound SPI and its place in the tunnel's budget, given back
    /// when this is dropped.
    _slot: ChildSlot,
    spi_in: u32,
    spi_out: u32,
    local_ts: Vec<crate::wire::TrafficSelector>,
    remote_ts: Vec<crate::wire::TrafficSelector>,
    rekey_at: Option<Instant>,
    /// A rekey or delete of it is queued or under way.
    busy: bool,
}

struct Outstanding {
    message_id: u32,
    kind: RequestKind,
    /// The request as sent (several datagrams when fragmented).
    datagrams: Vec<Vec<u8>>,
    next_retry: Instant,
    tries: u32,
}

/// The keys in use once IKE_SA_INIT is done.
struct Protection {
    suite: IkeSuite,
    keys: IkeKeys,
    /// Seals what we send / opens what the peer sends.
    tx: Cipher,
    rx: Cipher,
    iv_counter: u64,
}

pub struct IkeSa {
    config: Arc<Config>,
    /// Responder: other configurations for the same peer address, tried
    /// in order when the initiator's identity is not the one `config`
    /// expects (several tunnels behind one address, e.g. one NAT).
    alternatives: Vec<Arc<Config>>,
    role: Role,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    encap: bool,
    rng: ChaCha20Rng,
    state: State,
    protection: Option<Protection>,
    next_request_id: u32,
    expected_request_id: u32,
    outstanding: Option<Outstanding>,
    /// (message id, SHA-256 of the request (its first fragment), the
    /// answer as sent).
    last_response: Option<(u32, [u8; 32], Vec<Vec<u8>>)>,
    /// Both sides announced IKE fragmentation (RFC 7383).
    fragmentation: bool,
    reassembly: Option<fragment::Reassembly>,
    children: Vec<ChildInfo>,
    /// Inbound SPIs in use, shared with the other SAs of the endpoint.
    spis: SpiTable,
    work: VecDeque<Work>,
    /// Our request in flight beyond IKE_SA_INIT/IKE_AUTH, with its state.
    pending: Option<rekey::Pending>,
    /// The IKE SA that replaces this one once the old one is deleted.
    successor: Option<rekey::Successor>,
    /// We answered the old IKE SA's delete: move to the successor.
    switch_after_answer: bool,
    last_heard: Instant,
    /// Responder: half-open deadline; closed SAs: when to forget them.
    deadline: Option<Instant>,
    /// IkeSaDown has been reported (once only).
    down_reported: bool,
    /// Wall-clock time (unix seconds) for certificate validity.
    unix_time: Option<u64>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeSa")
            .field("role", &self.role)
            .field("spi_i", &format_args!("{:016x}", self.spi_i))
            .field("spi_r", &format_args!("{:016x}", self.spi_r))
            .field("remote", &self.remote)
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

fn nonzero_spi(rng: &mut ChaCha20Rng) -> u64 {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v;
        }
    }
}

impl IkeSa {
    fn new(
        config: Arc<Config>,
        role: Role,
        local: SocketAddr,
        remote: SocketAddr,
        seed: [u8; 32],
        now: Instant,
    ) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let own = nonzero_spi(&mut rng);
        let (spi_i, spi_r) = match role {
            Role::Initiator => (own, 0),
            Role::Responder => (0, own),
        };
        Self {
            config,
            role,
            spi_i,
            spi_r,
            local,
            remote,
            encap: local.port() == NAT_T_PORT,
            rng,
            state: State::Closed,
            protection: None,
            next_request_id: 0,
            expected_request_id: 0,
            outstanding: None,
            last_response: None,
            fragmentation: false,
            reassembly: None,
            children: Vec::new(),
            spis: SpiTable::default(),
            work: VecDeque::new(),
            pending: None,
            successor: None,
            switch_after_answer: false,
            last_heard: now,
            deadline: None,
            down_reported: false,
            alternatives: Vec::new(),
            unix_time: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The wall-clock time (unix seconds) certificates are checked
    /// against; the owner keeps it current. Without it no certificate
    /// is accepted.
    pub fn set_unix_time(&mut self, secs: u64) {
        self.unix_time = Some(secs);
    }

    /// Draw inbound SPIs from `table`, shared with the other SAs of an
    /// endpoint so no two Child SAs ever get the same one. Call before
    /// IKE_AUTH (the endpoint does, for every SA it makes).
    pub fn set_spi_table(&mut self, table: SpiTable) {
        self.spis = table;
    }

    /// A fresh inbound SPI, held until dropped.
    fn new_spi(&mut self) -> Option<SpiClaim> {
        self.spis.claim_new(&mut self.rng)
    }

    /// The configuration this SA was made from (for a responder: the one
    /// the endpoint chose for the peer).
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn spis(&self) -> (u64, u64) {
        (self.spi_i, self.spi_r)
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn suite(&self) -> Option<IkeSuite> {
        self.protection.as_ref().map(|p| p.suite)
    }

    /// (inbound, outbound) SPIs of the Child SAs this IKE SA holds.
    pub fn child_spis(&self) -> Vec<(u32, u32)> {
        self.children
            .iter()
            .map(|c| (c.spi_in, c.spi_out))
            .collect()
    }

    /// Our own SPI (the endpoint finds the SA by it; it changes when the
    /// IKE SA is rekeyed).
    pub fn own_spi(&self) -> u64 {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::InitSent(_) | State::AuthSent(_) | State::AwaitingAuth(_) => Phase::Connecting,
            State::Established(_) => Phase::Established,
            State::Deleting => Phase::Deleting,
            State::Closed => Phase::Closed,
        }
    }

    /// Bytes held in fragments waiting for the rest of their message.
    pub fn fragment_bytes(&self) -> usize {
        self.reassembly
            .as_ref()
            .map_or(0, fragment::Reassembly::bytes)
    }

    /// Gives up the message being reassembled (the owner's bound on all
    /// fragments was reached); the peer's retransmission starts it again.
    pub fn drop_fragments(&mut self) {
        self.reassembly = None;
    }

    /// Closed and done answering retransmissions: the owner may drop it.
    pub fn is_drained(&self, now: Instant) -> bool {
        matches!(self.state, State::Closed) && self.deadline.is_none_or(|d| now >= d)
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.deadline;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(o) = &self.outstanding {
            consider(o.next_retry);
        }
        if let (State::Established(_), Some(dpd), None) =
            (&self.state, self.config.timers.dpd, &self.outstanding)
        {
            consider(self.last_heard + dpd);
        }
        if let State::Established(timers) = &self.state {
            for at in [timers.ike_rekey_at, timers.keepalive_at]
                .into_iter()
                .flatten()
            {
                consider(at);
            }
            for c in self.children.iter().filter(|c| !c.busy) {
                if let Some(at) = c.rekey_at {
                    consider(at);
                }
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.deadline {
            if now >= d {
                self.deadline = None;
                if let State::AwaitingAuth(_) = self.state {
                    self.close(now, DownReason::HalfOpenExpired);
                }
            }
        }
        if let Some(o) = &mut self.outstanding {
            if now >= o.next_retry {
                if o.tries >= self.config.timers.retransmit_tries {
                    let kind = o.kind;
                    self.outstanding = None;
                    match kind {
                        RequestKind::DeleteIke => self.close(now, DownReason::Deleted),
                        // The old SA's delete went unanswered: the new one
                        // takes over anyway (liveness checks will tell).
                        RequestKind::DeleteOldIke => self.switch_to_successor(now),
                        _ => self.close(now, DownReason::NoResponse),
                    }
                } else {
                    o.tries += 1;
                    o.next_retry = now + self.config.timers.retransmit * (1 << o.tries.min(16));
                    let datagrams = o.datagrams.clone();
                    self.send_all(datagrams);
                }
            }
        }
        self.schedule_rekeys(now);
        self.kick(now);
        let keepalive_due = match &mut self.state {
            State::Established(t) if t.keepalive_at.is_some_and(|at| now >= at) => {
                t.keepalive_at = Some(now + self.config.timers.nat_keepalive);
                true
            }
            _ => false,
        };
        {
            if keepalive_due {
                self.transmits.push_back(Transmit::from_to(
                    self.local,
                    self.remote,
                    NAT_KEEPALIVE.to_vec(),
                ));
            }
        }
        if let (State::Established(_), Some(dpd), None) =
            (&self.state, self.config.timers.dpd, &self.outstanding)
        {
            if now >= self.last_heard + dpd {
                self.send_informational(now, RequestKind::Liveness, Writer::chain());
            }
        }
    }

    /// Starts deleting the IKE SA (and with it every Child SA).
    pub fn delete(&mut self, now: Instant) {
        if !matches!(self.state, State::Established(_)) {
            self.close(now, DownReason::Deleted);
            return;
        }
        let mut inner = Writer::chain();
        inner.push(&Payload::Delete(Delete {
            protocol: protocol::IKE,
            spi_size: 0,
            spis: &[],
        }));
        // Our pending request (if any) is abandoned: the delete replaces it.
        self.outstanding = None;
        self.send_informational(now, RequestKind::DeleteIke, inner);
        self.state = State::Deleting;
    }

    /// A newer IKE SA with the same peer took this one's place: the peer
    /// is told once (it most likely forgot this SA already, so no answer
    /// is awaited) and the SA closes at once, with its Child SAs.
    pub fn replaced(&mut self, now: Instant) {
        if matches!(self.state, State::Established(_)) {
            let mut inner = Writer::chain();
            inner.push(&Payload::Delete(Delete {
                protocol: protocol::IKE,
                spi_size: 0,
                spis: &[],
            }));
            let id = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1);
            let datagrams = self.seal(exchange::INFORMATIONAL, id, false, inner);
            self.send_all(datagrams);
        }
        self.close(now, DownReason::Replaced);
    }

    /// Feeds one IKE message (non-ESP marker already removed) that
    /// arrived from `from` on our address `to`.
    pub fn handle_input(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, msg: &[u8]) {
        let Ok(header) = Header::parse(msg) else {
            return;
        };
        // SPIr is still 0 in the IKE_SA_INIT response to a cookie or
        // group request, and in retransmissions of the IKE_SA_INIT request.
        let init_retransmit = header.spi_r == 0
            && header.exchange == exchange::IKE_SA_INIT
            && self.role == Role::Responder;
        if header.spi_i != self.spi_i
            || (header.spi_r != self.spi_r
                && !init_retransmit
                && !matches!(self.state, State::InitSent(_)))
        {
            return;
        }
        if header.is_response() {
            self.handle_response(now, from, to, header, msg);
        } else {
            self.handle_request(now, from, to, header, msg);
        }
        self.kick(now);
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: Header,
        msg: &[u8],
    ) {
        let Some(o) = &self.outstanding else {
            return;
        };
        if header.message_id != o.message_id {
            return;
        }
        let kind = o.kind;
        if kind == RequestKind::Init {
            // Unencrypted: handled (and authenticated later) by init.
            if let State::InitSent(_) = self.state {
                let State::InitSent(s) = std::mem::replace(&mut self.state, State::Closed) else {
                    return;
                };
                self.init_response(now, from, to, *s, msg);
            }
            return;
        }
        let Some((first, plain, _)) = self.open(&header, msg) else {
            return;
        };
        let Ok(payloads) = parse_chain(first, &plain) else {
            return;
        };
        self.outstanding = None;
        self.last_heard = now;
        match kind {
            RequestKind::Auth => {
                if let State::AuthSent(_) = self.state {
                    let State::AuthSent(s) = std::mem::replace(&mut self.state, State::Closed)
                    else {
                        return;
                    };
                    self.auth_response(now, *s, &payloads);
                }
            }
            RequestKind::DeleteIke => self.close(now, DownReason::Deleted),
            RequestKind::Create => self.create_response(now, &payloads),
            RequestKind::DeleteChild => self.delete_child_response(&payloads),
            RequestKind::DeleteOldIke => self.switch_to_successor(now),
            RequestKind::Liveness | RequestKind::Init => {}
        }
    }

    fn handle_request(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        header: Header,
        msg: &[u8],
    ) {
        let mut digest: [u8; 32] = Sha256::digest(msg).into();
        if let Some((id, hash, answer)) = &self.last_response {
            if header.message_id == *id {
                // A retransmission (of its first fragment): answer again.
                if *hash == digest {
                    let answer = answer.clone();
                    self.send_all(answer);
                }
                return;
            }
        }
        if header.message_id != self.expected_request_id {
            return;
        }
        // Only the peer that is not the original initiator sets no I flag.
        let from_initiator = header.flags & flags::INITIATOR != 0;
        if from_initiator != (self.role == Role::Responder) {
            return;
        }
        // Bad integrity: discarded without an answer (RFC 7296 §2.21.2);
        // a fragment waits for the rest.
        let Some((first, plain, first_digest)) = self.open(&header, msg) else {
            return;
        };
        if let Some(d) = first_digest {
            digest = d;
        }
        let payloads = match parse_chain(first, &plain) {
            Ok(p) => p,
            Err(e) => {
                // Authentic but malformed: say so (RFC 7296 §2.21.2).
                let kind = e.notify().unwrap_or(notify::INVALID_SYNTAX);
                self.answer(header, digest, Self::error_notify(kind, &e.notify_data()));
                return;
            }
        };
        self.last_heard = now;
        if to.port() == NAT_T_PORT {
            // The initiator floated (RFC 7296 §2.23): so do we.
            self.encap = true;
        }
        if self.role == Role::Responder && self.encap {
            // Follow the peer's NAT mapping (RFC 7296 §2.23).
            self.remote = from;
            self.local = to;
        }
        let answer = match (&self.state, header.exchange) {
            (State::AwaitingAuth(_), exchange::IKE_AUTH) => {
                let State::AwaitingAuth(s) = std::mem::replace(&mut self.state, State::Closed)
                else {
                    return;
                };
                self.auth_request(now, *s, &payloads)
            }
            (State::Established(_) | State::Deleting, exchange::INFORMATIONAL) => {
                self.informational_request(now, &payloads)
            }
            (State::Established(_), exchange::CREATE_CHILD_SA) => {
                self.create_request(now, &payloads)
            }
            _ => return,
        };
        self.answer(header, digest, answer);
        if std::mem::take(&mut self.switch_after_answer) {
            self.switch_to_successor(now);
        }
    }

    /// Fuzzing only: delivers `plaintext` (a payload chain starting with
    /// `first`) as the peer's next request of `exchange`, sealed with the
    /// peer's key, so a fuzzer reaches what an authenticated peer can.
    #[cfg(feature = "fuzzing")]
    pub fn fuzz_peer_request(&mut self, now: Instant, exchange: u8, first: u8, plaintext: &[u8]) {
        let Some(p) = self.protection.as_mut() else {
            return;
        };
        let header = Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: 0,
            version: 0x20,
            exchange,
            flags: if self.role == Role::Responder {
                flags::INITIATOR
            } else {
                0
            },
            message_id: self.expected_request_id,
            length: 0,
        };
        p.iv_counter += 1;
        let msg = sk::seal_payload(header, first, plaintext, None, &p.rx, p.iv_counter);
        let (from, to) = (self.remote, self.local);
        self.handle_input(now, from, to, &msg);
    }

    /// Sends the answer to the request `header` (whose bytes hash to
    /// `digest`) and keeps it for retransmissions of that request.
    fn answer(&mut self, header: Header, digest: [u8; 32], inner: Writer) {
        self.expected_request_id = self.expected_request_id.wrapping_add(1);
        let datagrams = self.seal(header.exchange, header.message_id, true, inner);
        self.last_response = Some((header.message_id, digest, datagrams.clone()));
        self.send_all(datagrams);
    }

    fn informational_request(&mut self, now: Instant, payloads: &[Payload<'_>]) -> Writer {
        let mut answer = Writer::chain();
        let mut ours = Vec::new();
        for p in payloads {
            let Payload::Delete(d) = p else { continue };
            match d.protocol {
                protocol::IKE if self.successor.is_some() => {
                    // The end of an IKE rekey: answer on this SA, then
                    // carry on as the new one.
                    self.switch_after_answer = true;
                    return answer;
                }
                protocol::IKE => {
                    self.close(now, DownReason::DeletedByPeer);
                    return answer;
                }
                protocol::ESP => {
                    for spi_out in d.esp_spis() {
                        if let Some(i) = self.children.iter().position(|c| c.spi_out == spi_out) {
                            let c = self.children.remove(i);
                            ours.extend_from_slice(&c.spi_in.to_be_bytes());
                            self.work.retain(|w| {
                                *w != Work::RekeyChild(c.spi_in)
                                    && *w != Work::DeleteChild(c.spi_in)
                            });
                            self.events.push_back(Event::ChildSaDeleted {
                                spi_in: c.spi_in,
                                spi_out: c.spi_out,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if !ours.is_empty() {
            answer.push(&Payload::Delete(Delete {
                protocol: protocol::ESP,
                spi_size: 4,
                spis: &ours,
            }));
        }
        answer
    }

    /// Opens an encrypted message into (first inner payload type,
    /// plaintext chain, digest of the first fragment if it came in
    /// fragments); `None` if this SA has no keys yet, the message does
    /// not open, or it is a fragment of a message not yet complete.
    fn open(&mut self, header: &Header, msg: &[u8]) -> Option<fragment::Whole> {
        let p = self.protection.as_ref()?;
        let m = Message::parse(msg).ok()?;
        let Some(Payload::Sk(s)) = m.payloads.last() else {
            return None;
        };
        let plain = sk::open(msg, s.body, &p.rx).ok()?;
        match s.fragment {
            None => Some((s.next, plain, None)),
            Some(numbering) if self.fragmentation => fragment::Reassembly::add(
                &mut self.reassembly,
                header,
                numbering,
                s.next,
                plain,
                msg,
            ),
            Some(_) => None,
        }
    }

    /// Seals `inner` into a message of this SA.
    fn seal(
        &mut self,
        exchange: u8,
        message_id: u32,
        response: bool,
        inner: Writer,
    ) -> Vec<Vec<u8>> {
        let mut fl = if self.role == Role::Initiator {
            flags::INITIATOR
        } else {
            0
        };
        if response {
            fl |= flags::RESPONSE;
        }
        let header = Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: 0,
            version: 0x20,
            exchange,
            flags: fl,
            message_id,
            length: 0,
        };
        let max = self.config.fragment_size.filter(|_| self.fragmentation);
        let Some(p) = self.protection.as_mut() else {
            return vec![Writer::message(header).finish()];
        };
        if let Some(max) = max {
            let first = inner.first();
            let plain = inner.finish();
            if let Some(parts) =
                fragment::seal_fragments(header, first, &plain, max, &p.tx, &mut p.iv_counter)
            {
                return parts;
            }
            p.iv_counter += 1;
            return vec![sk::seal_payload(
                header,
                first,
                &plain,
                None,
                &p.tx,
                p.iv_counter,
            )];
        }
        p.iv_counter += 1;
        vec![sk::seal(header, inner, &p.tx, p.iv_counter)]
    }

    fn send_request(&mut self, now: Instant, kind: RequestKind, exchange: u8, inner: Writer) {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let datagrams = self.seal(exchange, id, false, inner);
        self.track_request(now, kind, id, datagrams);
    }

    fn track_request(&mut self, now: Instant, kind: RequestKind, id: u32, datagrams: Vec<Vec<u8>>) {
        self.outstanding = Some(Outstanding {
            message_id: id,
            kind,
            datagrams: datagrams.clone(),
            next_retry: now + self.config.timers.retransmit,
            tries: 0,
        });
        self.send_all(datagrams);
    }

    fn send_all(&mut self, datagrams: Vec<Vec<u8>>) {
        for d in datagrams {
            self.send_raw(d);
        }
    }

    fn send_informational(&mut self, now: Instant, kind: RequestKind, inner: Writer) {
        self.send_request(now, kind, exchange::INFORMATIONAL, inner);
    }

    fn send_raw(&mut self, message: Vec<u8>) {
        let contents = if self.encap {
            let mut c = Vec::with_capacity(message.len() + 4);
            c.extend_from_slice(&NON_ESP_MARKER);
            c.extend_from_slice(&message);
            c
        } else {
            message
        };
        self.transmits
            .push_back(Transmit::from_to(self.local, self.remote, contents));
    }

    /// Moves IKE (and ESP) to port 4500 (RFC 7296 §2.23).
    fn float(&mut self) {
        self.local.set_port(NAT_T_PORT);
        self.remote.set_port(NAT_T_PORT);
        self.encap = true;
    }

    fn close(&mut self, now: Instant, reason: DownReason) {
        if self.down_reported {
            return;
        }
        self.down_reported = true;
        for c in self.children.drain(..) {
            self.events.push_back(Event::ChildSaDeleted {
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
        self.work.clear();
        self.pending = None;
        self.successor = None;
        self.state = State::Closed;
        self.outstanding = None;
        self.deadline = Some(now + LINGER);
        self.events.push_back(Event::IkeSaDown(reason));
    }

    /// The error notify a refused request is answered with.
    fn error_notify(kind: u16, data: &[u8]) -> Writer {
        let mut w = Writer::chain();
        w.push(&Payload::Notify(Notify {
            protocol: 0,
            spi: &[],
            kind,
            data,
        }));
        w
    }
}

/// The first error notify among payloads, if any.
fn first_error(payloads: &[Payload<'_>]) -> Option<u16> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if notify::is_error(n.kind) => Some(n.kind),
        _ => None,
    })
}

fn find<'p, 'a>(payloads: &'p [Payload<'a>], kind: u8) -> Option<&'p Payload<'a>> {
    payloads.iter().find(|p| p.kind() == kind)
}
