//! One endpoint of a peer, where we learnt it, and when to probe it next:
//! the steady rate, the backoff for endpoints that do not answer, and the
//! fast rate of a burst.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Between probes of an endpoint that answers (also what holds a NAT
/// mapping open: home routers expire idle UDP after 30 s or more).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered probes of an endpoint before its probes back off.
pub const STEADY_PROBES: u32 = 4;
/// The longest wait between probes of an endpoint that never answered.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(64);
/// The longest wait for one that answered before (a path that went away
/// is looked for again sooner).
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(16);
/// Between probes of every endpoint during a burst: both sides probe at
/// once, so each NAT has a mapping open when the other's probe arrives.
pub const BURST_INTERVAL: Duration = Duration::from_millis(200);

/// Where an endpoint of a peer's came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The network map: what the peer reported to the controller (its
    /// local addresses, the reflexive ones its STUN queries learnt, the
    /// ones its router mapped).
    Map,
    /// The peer's own call through the relay ("probe me now, here").
    Call,
    /// Peer-reflexive: where a ping of the peer's came from. Behind an
    /// endpoint-dependent (symmetric) NAT this is the only address that
    /// reaches it.
    Seen,
    /// A port guessed past the ones a symmetric NAT showed for the peer,
    /// that answered (NATs that hand out ports in order).
    Guessed,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Call => "call",
            Self::Seen => "peer-reflexive",
            Self::Guessed => "port-guess",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub(crate) addr: SocketAddr,
    pub(crate) source: Source,
    pub(crate) next_probe: Instant,
    interval: Duration,
    /// Probes sent since the last answer (not counting a burst's).
    pub(crate) unanswered: u32,
    /// It answered at least once.
    pub(crate) answered: bool,
}

impl Candidate {
    pub(crate) fn new(addr: SocketAddr, source: Source, now: Instant) -> Self {
        Self {
            addr,
            source,
            next_probe: now,
            interval: PROBE_INTERVAL,
            unanswered: 0,
            answered: false,
        }
    }

    /// A probe goes out now: when the next is due. `active`: the path in
    /// use keeps the steady rate (it carries our traffic); `burst`: the
    /// end of the burst under way, if one is.
    pub(crate) fn sent(&mut self, now: Instant, active: bool, burst: Option<Instant>) {
        if let Some(end) = burst.filter(|end| now < *end) {
            self.next_probe = (now + BURST_INTERVAL).min(end);
            return;
        }
        self.unanswered = self.unanswered.saturating_add(1);
        self.next_probe = now + self.interval;
        if !active && self.unanswered >= STEADY_PROBES {
            let cap = if self.answered {
                MAX_RETRY_INTERVAL
            } else {
                MAX_PROBE_INTERVAL
            };
            self.interval = (self.interval * 2).min(cap);
        }
    }

    /// The peer proved this endpoint (its answer, or its own ping from it).
    pub(crate) fn proven(&mut self, next_probe: Instant, answered: bool) {
        self.unanswered = 0;
        self.interval = PROBE_INTERVAL;
        self.next_probe = next_probe;
        self.answered |= answered;
    }

    /// Probe it now and at the steady rate again (a burst begins, or the
    /// peer asked to be probed).
    pub(crate) fn restart(&mut self, now: Instant) {
        self.unanswered = 0;
        self.interval = PROBE_INTERVAL;
        self.next_probe = now;
    }
}
