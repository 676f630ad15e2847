//! The agent's connection lifecycle, from the agent design:
//!
//! ```text
//! Disconnected --up--> Authenticating --registered--> Syncing --map--> Running
//!                          ^     |                        |               |
//!                          |     +------ lost ------------+---- lost -----+
//!                          |                              v
//!                          +------ retry timer ------ Reconnecting (backoff)
//! ```
//!
//! A sans-IO state machine: inputs are events with the time they happened,
//! outputs are actions (`poll_action`) and the next deadline
//! (`poll_timeout`). The daemon does the IO; tests drive it with fake time.

use std::time::{Duration, Instant};

/// First retry delay; doubled after each failed attempt up to the maximum.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Disconnected,
    Authenticating,
    Syncing,
    Running,
    Reconnecting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Authenticating => "authenticating",
            Self::Syncing => "syncing",
            Self::Running => "running",
            Self::Reconnecting => "reconnecting",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The user (or the saved state at start) wants the node connected.
    Up,
    /// The user wants it disconnected.
    Down,
    /// The controller accepted the node.
    Registered,
    /// A complete map (full or delta) was applied.
    MapApplied,
    /// The connection failed or closed.
    Lost(String),
    /// The controller refused the node for good (bad auth key, removed):
    /// retrying cannot help until the user acts.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a control connection (closing any old one).
    Connect,
    /// Close the control connection.
    Disconnect,
}

#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    /// Failed attempts since the last time the node reached Running.
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    actions: Vec<Action>,
    /// Jitter source (xorshift): spreads reconnects after a controller
    /// restart so that nodes do not all come back in the same instant.
    jitter: u64,
}

impl Lifecycle {
    pub fn new(seed: u64) -> Self {
        Self {
            phase: Phase::Disconnected,
            failures: 0,
            retry_at: None,
            last_error: None,
            actions: Vec::new(),
            jitter: seed | 1,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The delay before attempt `failures + 1`: 1, 2, 4 ... 30 s, each
    /// minus up to 25% jitter.
    fn backoff(&mut self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(16);
        let base = BACKOFF_START.saturating_mul(1 << exp).min(BACKOFF_MAX);
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let quarter = base.as_millis() as u64 / 4;
        base - Duration::from_millis(self.jitter % (quarter + 1))
    }

    pub fn handle(&mut self, now: Instant, input: Input) {
        use Phase::*;
        match (self.phase, input) {
            (Disconnected | Reconnecting, Input::Up) => {
                self.failures = 0;
                self.last_error = None;
                self.connect();
            }
            (_, Input::Up) => {}
            (_, Input::Down) => {
                self.phase = Disconnected;
                self.retry_at = None;
                self.actions.push(Action::Disconnect);
            }
            (Authenticating, Input::Registered) => self.phase = Syncing,
            (Syncing | Running, Input::MapApplied) => {
                self.phase = Running;
                self.failures = 0;
                self.last_error = None;
            }
            (Authenticating | Syncing | Running, Input::Lost(why)) => {
                self.failures = self.failures.saturating_add(1);
                self.last_error = Some(why);
                self.phase = Reconnecting;
                self.retry_at = Some(now + self.backoff());
            }
            (Authenticating | Syncing | Running, Input::Refused(why)) => {
                self.last_error = Some(why);
                self.phase = Disconnected;
                self.retry_at = None;
                self.actions.push(Action::Disconnect);
            }
            // Late news from a connection we already gave up on.
            (_, Input::Registered | Input::MapApplied | Input::Lost(_) | Input::Refused(_)) => {}
        }
    }

    fn connect(&mut self) {
        self.phase = Phase::Authenticating;
        self.retry_at = None;
        self.actions.push(Action::Connect);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Reconnecting && self.retry_at.is_some_and(|t| now >= t) {
            self.connect();
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(l: &mut Lifecycle) -> Vec<Action> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    #[test]
    fn a_node_goes_up_through_authentication_and_sync() {
        let t = Instant::now();
        let mut l = Lifecycle::new(7);
        assert_eq!(l.phase(), Phase::Disconnected);
        l.handle(t, Input::Up);
        assert_eq!(
            (l.phase(), drain(&mut l)),
            (Phase::Authenticating, vec![Action::Connect])
        );
        l.handle(t, Input::MapApplied);
        assert_eq!(
            l.phase(),
            Phase::Authenticating,
            "a map before registration is ignored"
        );
        l.handle(t, Input::Registered);
        assert_eq!(l.phase(), Phase::Syncing);
        l.handle(t, Input::MapApplied);
        assert_eq!(l.phase(), Phase::Running);
        l.handle(t, Input::MapApplied);
        assert_eq!(l.phase(), Phase::Running, "deltas keep it running");
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn lost_connections_retry_with_growing_jittered_backoff_until_running_again() {
        let mut t = Instant::now();
        let mut l = Lifecycle::new(42);
        l.handle(t, Input::Up);
        l.handle(t, Input::Registered);
        l.handle(t, Input::MapApplied);
        drain(&mut l);
        let mut delays = Vec::new();
        for attempt in 0..8 {
            l.handle(t, Input::Lost(format!("reset {attempt}")));
            assert_eq!(l.phase(), Phase::Reconnecting);
            assert_eq!(l.last_error(), Some(format!("reset {attempt}").as_str()));
            let at = l.poll_timeout().unwrap();
            delays.push(at - t);
            l.handle_timeout(at - Duration::from_millis(1));
            assert!(drain(&mut l).is_empty(), "no attempt before the deadline");
            t = at;
            l.handle_timeout(t);
            assert_eq!(
                (l.phase(), drain(&mut l)),
                (Phase::Authenticating, vec![Action::Connect])
            );
        }
        for (i, d) in delays.iter().enumerate() {
            let nominal = BACKOFF_START
                .saturating_mul(1 << i.min(16))
                .min(BACKOFF_MAX);
            assert!(
                *d <= nominal && *d >= nominal * 3 / 4,
                "attempt {i}: {d:?} vs {nominal:?}"
            );
        }
        assert!(
            delays[7] > Duration::from_secs(20),
            "capped near 30 s: {delays:?}"
        );
        // Success resets the backoff.
        l.handle(t, Input::Registered);
        l.handle(t, Input::MapApplied);
        l.handle(t, Input::Lost("again".into()));
        assert!(l.poll_timeout().unwrap() - t <= BACKOFF_START);
    }

    #[test]
    fn a_refusal_stops_retrying_and_down_disconnects_from_anywhere() {
        let t = Instant::now();
        let mut l = Lifecycle::new(1);
        l.handle(t, Input::Up);
        drain(&mut l);
        l.handle(t, Input::Refused("auth key expired".into()));
        assert_eq!(
            (l.phase(), drain(&mut l)),
            (Phase::Disconnected, vec![Action::Disconnect])
        );
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(l.last_error(), Some("auth key expired"));
        l.handle(t, Input::Lost("late".into()));
        assert_eq!(
            l.phase(),
            Phase::Disconnected,
            "late events from the old connection"
        );

        l.handle(t, Input::Up);
        l.handle(t, Input::Lost("x".into()));
        drain(&mut l);
        l.handle(t, Input::Down);
        assert_eq!(
            (l.phase(), drain(&mut l)),
            (Phase::Disconnected, vec![Action::Disconnect])
        );
        assert_eq!(l.poll_timeout(), None, "no retry after down");
        l.handle(t, Input::Up);
        assert_eq!(l.phase(), Phase::Authenticating);
    }
}
