//! A Binding client as a sans-IO state machine: transactions with RFC 8489
//! §6.2.1 retransmission, responses matched by transaction id *and*
//! source, one reflexive address per server, and the NAT's mapping
//! behaviour from two servers (RFC 5780 §4.3, first test).
//!
//! Driver surface: `query(now, server, id)`, `handle_input(now, from,
//! bytes)`, `handle_timeout(now)`, `poll_transmit()`, `poll_event()`,
//! `poll_timeout()`. Transaction ids come from the caller (96 random bits):
//! no randomness in here.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::wire::{Class, Message, MessageBuilder, StunError, TransactionId, METHOD_BINDING};

/// Retransmission parameters (RFC 8489 §6.2.1 defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Initial retransmission timeout; doubles after each send.
    pub rto: Duration,
    /// Requests sent in all (first + retransmissions).
    pub rc: u32,
    /// After the last request, wait `rm * rto` before giving up.
    pub rm: u32,
    /// Transactions in flight at most.
    pub max_transactions: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            rc: 7,
            rm: 16,
            max_transactions: 16,
        }
    }
}

/// A request to send (from the caller's socket).
pub use cvlan_core::Transmit;

/// What the NAT in front of us does with mappings (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingBehavior {
    /// Every server saw the same address: hole punching can work.
    EndpointIndependent { reflexive: SocketAddr },
    /// Servers saw different addresses (e.g. a symmetric NAT): direct
    /// paths are unlikely; use a relay.
    EndpointDependent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// `server` saw us as `reflexive`, `rtt` after the first request.
    Mapped {
        server: SocketAddr,
        reflexive: SocketAddr,
        rtt: Duration,
    },
    /// The transaction with `server` ended without an address.
    Failed {
        server: SocketAddr,
        error: ClientError,
    },
    /// Two or more servers have answered.
    Mapping(MappingBehavior),
}

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no response after all retransmissions")]
    Timeout,
    #[error("server answered with error {0}")]
    ErrorResponse(u16),
    #[error("success response without a mapped address")]
    NoAddress,
    #[error("too many transactions in flight")]
    TooManyTransactions,
    #[error("not a response to any transaction of ours")]
    Unsolicited,
    #[error("malformed response: {0}")]
    Malformed(#[from] StunError),
}

#[derive(Debug)]
struct Transaction {
    id: TransactionId,
    server: SocketAddr,
    request: Vec<u8>,
    started: Instant,
    sent: u32,
    rto: Duration,
    /// When to retransmit, or give up after the last send.
    next: Instant,
}

/// Queries STUN servers for our reflexive address.
#[derive(Debug)]
pub struct BindingClient {
    config: ClientConfig,
    transactions: Vec<Transaction>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// (server, reflexive) for every successful answer so far.
    results: Vec<(SocketAddr, SocketAddr)>,
    mapping: Option<MappingBehavior>,
}

/// Bound on remembered answers (servers queried), so no input grows memory.
const MAX_RESULTS: usize = 64;

impl BindingClient {
    pub fn new(config: ClientConfig) -> Self {
        Self {
            config,
            transactions: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            results: Vec::new(),
            mapping: None,
        }
    }

    /// Starts a Binding transaction with `server`; the first request is
    /// ready in `poll_transmit` at once.
    pub fn query(
        &mut self,
        now: Instant,
        server: SocketAddr,
        id: TransactionId,
    ) -> Result<(), ClientError> {
        if self.transactions.len() >= self.config.max_transactions {
            return Err(ClientError::TooManyTransactions);
        }
        let mut buf = [0u8; 28];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, METHOD_BINDING, id)?;
        b.fingerprint()?;
        let n = b.finish();
        let request = buf[..n].to_vec();
        self.transmits
            .push_back(Transmit::to(server, request.clone()));
        let rto = self.config.rto;
        self.transactions.push(Transaction {
            id,
            server,
            request,
            started: now,
            sent: 1,
            rto,
            next: now + rto,
        });
        if self.config.rc <= 1 {
            self.last_wait(self.transactions.len() - 1);
        }
        Ok(())
    }

    /// After the last request: wait Rm × the initial RTO, then give up.
    fn last_wait(&mut self, i: usize) {
        let wait = self.config.rto * self.config.rm;
        let t = &mut self.transactions[i];
        t.next = t.next - t.rto + wait;
    }

    /// A datagram from `from`: a response to one of our transactions, or
    /// an error (ignored by the caller; nothing changes).
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), ClientError> {
        let msg = Message::parse(datagram)?;
        if !matches!(msg.class(), Class::SuccessResponse | Class::ErrorResponse)
            || msg.method() != METHOD_BINDING
        {
            return Err(ClientError::Unsolicited);
        }
        let id = msg.transaction_id();
        // Same id *and* the server we asked: a response from elsewhere is
        // not ours (it could be an attacker guessing ids).
        let i = self
            .transactions
            .iter()
            .position(|t| t.id == id && t.server == from)
            .ok_or(ClientError::Unsolicited)?;
        if msg.has_fingerprint() {
            msg.check_fingerprint()?;
        }
        // Read everything before ending the transaction: a malformed answer
        // leaves it running (the genuine one may still come) and is an error.
        let outcome = if msg.class() == Class::ErrorResponse {
            Err(ClientError::ErrorResponse(
                msg.error_code()?.map_or(0, |(c, _)| c),
            ))
        } else {
            match msg.xor_mapped_address()? {
                Some(a) => Ok(a),
                None => Ok(msg.mapped_address()?.ok_or(ClientError::NoAddress)?),
            }
        };
        let t = self.transactions.swap_remove(i);
        let reflexive = match outcome {
            Ok(a) => a,
            Err(error) => {
                self.events.push_back(Event::Failed {
                    server: t.server,
                    error,
                });
                return Ok(());
            }
        };
        let rtt = now.saturating_duration_since(t.started);
        self.events.push_back(Event::Mapped {
            server: t.server,
            reflexive,
            rtt,
        });
        self.record(t.server, reflexive);
        Ok(())
    }

    fn record(&mut self, server: SocketAddr, reflexive: SocketAddr) {
        self.results.retain(|(s, _)| *s != server);
        if self.results.len() == MAX_RESULTS {
            self.results.remove(0);
        }
        self.results.push((server, reflexive));
        // Mapping behaviour needs two different server addresses (RFC 5780
        // asks for two IPs; different ports of one host would also do).
        if self.results.len() < 2 {
            return;
        }
        let first = self.results[0].1;
        let verdict = if self.results.iter().all(|(_, r)| *r == first) {
            MappingBehavior::EndpointIndependent { reflexive: first }
        } else {
            MappingBehavior::EndpointDependent
        };
        if self.mapping != Some(verdict) {
            self.mapping = Some(verdict);
            self.events.push_back(Event::Mapping(verdict));
        }
    }

    /// Retransmits and expires what is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.transactions.len() {
            if self.transactions[i].next > now {
                i += 1;
                continue;
            }
            if self.transactions[i].sent >= self.config.rc {
                let t = self.transactions.swap_remove(i);
                self.events.push_back(Event::Failed {
                    server: t.server,
                    error: ClientError::Timeout,
                });
                continue;
            }
            let t = &mut self.transactions[i];
            t.sent += 1;
            t.rto *= 2;
            t.next += t.rto;
            self.transmits
                .push_back(Transmit::to(t.server, t.request.clone()));
            if t.sent >= self.config.rc {
                self.last_wait(i);
            }
            i += 1;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.transactions.iter().map(|t| t.next).min()
    }

    /// The NAT's mapping behaviour, once two servers have answered.
    pub fn mapping_behavior(&self) -> Option<MappingBehavior> {
        self.mapping
    }

    /// Transactions still waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.transactions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{answer, Answer};

    const US: &str = "198.51.100.10:40000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    /// Our server's answer to `t`, as if `t` had come from `seen_as`.
    fn reply(t: &Transmit, seen_as: SocketAddr) -> Vec<u8> {
        let mut out = [0u8; 256];
        let Answer::Reply(n) = answer(&t.contents, seen_as, &mut out) else {
            panic!("server ignored request")
        };
        out[..n].to_vec()
    }

    #[allow(clippy::disallowed_methods)] // a fake clock needs one real origin
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn query_answered_gives_the_reflexive_address_and_rtt() {
        let t0 = origin();
        let server = addr("192.0.2.1:3478");
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, server, TransactionId([1; 12])).expect("query");
        let tx = c.poll_transmit().expect("request");
        assert_eq!(tx.destination, server);
        let now = t0 + Duration::from_millis(30);
        c.handle_input(now, server, &reply(&tx, addr(US)))
            .expect("response");
        assert_eq!(
            c.poll_event(),
            Some(Event::Mapped {
                server,
                reflexive: addr(US),
                rtt: Duration::from_millis(30)
            })
        );
        assert_eq!(c.in_flight(), 0);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn retransmission_schedule_and_timeout_follow_rfc8489() {
        let t0 = origin();
        let server = addr("192.0.2.1:3478");
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, server, TransactionId([2; 12])).expect("query");
        let mut sends = Vec::new();
        let mut failed_at = None;
        // Walk the fake clock from deadline to deadline, losing everything.
        while let Some(t) = c.poll_timeout() {
            while c.poll_transmit().is_some() {
                sends.push(0);
            }
            c.handle_timeout(t);
            while c.poll_transmit().is_some() {
                sends.push(t.duration_since(t0).as_millis());
            }
            if let Some(Event::Failed { error, .. }) = c.poll_event() {
                assert_eq!(error, ClientError::Timeout);
                failed_at = Some(t.duration_since(t0).as_millis());
            }
        }
        assert_eq!(
            sends,
            vec![0, 500, 1500, 3500, 7500, 15500, 31500],
            "Rc = 7, RTO doubling from 500 ms"
        );
        assert_eq!(
            failed_at,
            Some(39_500),
            "Rm x RTO = 8 s after the last request"
        );
        // Configurable: Rc = 3, RTO 100 ms, Rm = 4.
        let mut c = BindingClient::new(ClientConfig {
            rto: Duration::from_millis(100),
            rc: 3,
            rm: 4,
            ..Default::default()
        });
        c.query(t0, server, TransactionId([3; 12])).expect("query");
        let mut times = Vec::new();
        while let Some(t) = c.poll_timeout() {
            c.handle_timeout(t);
            times.push(t.duration_since(t0).as_millis());
        }
        assert_eq!(
            times,
            vec![100, 300, 700],
            "sends at 0, 100, 300; gives up 400 ms later"
        );
    }

    #[test]
    fn loss_then_success_duplicates_late_and_foreign_responses() {
        let t0 = origin();
        let server = addr("192.0.2.1:3478");
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, server, TransactionId([4; 12])).expect("query");
        let first = c.poll_transmit().expect("request");
        // The first two requests are lost; the third is answered.
        c.handle_timeout(t0 + Duration::from_millis(500));
        c.handle_timeout(t0 + Duration::from_millis(1500));
        assert_eq!(
            c.poll_transmit().map(|t| t.contents),
            Some(first.contents.clone())
        );
        assert_eq!(
            c.poll_transmit().map(|t| t.contents),
            Some(first.contents.clone()),
            "same id on retransmit"
        );
        let resp = reply(&first, addr(US));
        // From the wrong source: not ours.
        assert_eq!(
            c.handle_input(t0, addr("203.0.113.1:3478"), &resp),
            Err(ClientError::Unsolicited)
        );
        c.handle_input(t0 + Duration::from_millis(1600), server, &resp)
            .expect("response");
        assert!(matches!(c.poll_event(), Some(Event::Mapped { .. })));
        // The duplicate, and a late one after the end: ignored, no event.
        assert_eq!(
            c.handle_input(t0 + Duration::from_millis(1700), server, &resp),
            Err(ClientError::Unsolicited)
        );
        assert_eq!(c.poll_event(), None);
        // Garbage and requests are errors, never panics.
        assert!(c.handle_input(t0, server, &[0u8; 7]).is_err());
        assert_eq!(
            c.handle_input(t0, server, &first.contents),
            Err(ClientError::Unsolicited)
        );
        // Error responses end the transaction with their code.
        c.query(t0, server, TransactionId([5; 12])).expect("query");
        let req = c.poll_transmit().expect("request");
        let mut out = [0u8; 64];
        let n = {
            let mut b = MessageBuilder::new(
                &mut out,
                Class::ErrorResponse,
                METHOD_BINDING,
                TransactionId([5; 12]),
            )
            .expect("b");
            b.error_code(420, "").expect("ec");
            b.finish()
        };
        let _ = req;
        c.handle_input(t0, server, &out[..n])
            .expect("error response");
        assert_eq!(
            c.poll_event(),
            Some(Event::Failed {
                server,
                error: ClientError::ErrorResponse(420)
            })
        );
    }

    #[test]
    fn mapping_behavior_from_two_servers() {
        let t0 = origin();
        let (s1, s2) = (addr("192.0.2.1:3478"), addr("192.0.2.2:3478"));
        // Endpoint-independent NAT: both servers see the same mapping.
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, s1, TransactionId([6; 12])).expect("q1");
        c.query(t0, s2, TransactionId([7; 12])).expect("q2");
        let (r1, r2) = (
            c.poll_transmit().expect("r1"),
            c.poll_transmit().expect("r2"),
        );
        c.handle_input(t0, s1, &reply(&r1, addr(US))).expect("a1");
        assert_eq!(c.mapping_behavior(), None, "one server is not enough");
        c.handle_input(t0, s2, &reply(&r2, addr(US))).expect("a2");
        assert_eq!(
            c.mapping_behavior(),
            Some(MappingBehavior::EndpointIndependent {
                reflexive: addr(US)
            })
        );
        // Symmetric NAT: a different port toward each server.
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, s1, TransactionId([8; 12])).expect("q1");
        c.query(t0, s2, TransactionId([9; 12])).expect("q2");
        let (r1, r2) = (
            c.poll_transmit().expect("r1"),
            c.poll_transmit().expect("r2"),
        );
        c.handle_input(t0, s1, &reply(&r1, addr(US))).expect("a1");
        c.handle_input(t0, s2, &reply(&r2, addr("198.51.100.10:40001")))
            .expect("a2");
        assert_eq!(
            c.mapping_behavior(),
            Some(MappingBehavior::EndpointDependent)
        );
        let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(events.contains(&Event::Mapping(MappingBehavior::EndpointDependent)));
    }

    #[test]
    fn malformed_answer_with_our_id_keeps_the_transaction_running() {
        let t0 = origin();
        let server = addr("192.0.2.1:3478");
        let mut c = BindingClient::new(ClientConfig::default());
        c.query(t0, server, TransactionId([10; 12])).expect("query");
        let req = c.poll_transmit().expect("request");
        // Success class, our id, but an XOR-MAPPED-ADDRESS of the wrong size.
        let mut out = [0u8; 64];
        let n = {
            let mut b = MessageBuilder::new(
                &mut out,
                Class::SuccessResponse,
                METHOD_BINDING,
                TransactionId([10; 12]),
            )
            .expect("b");
            b.attribute(crate::wire::ATTR_XOR_MAPPED_ADDRESS, &[0, 1, 2])
                .expect("attr");
            b.finish()
        };
        assert!(c.handle_input(t0, server, &out[..n]).is_err());
        assert_eq!(c.in_flight(), 1, "still waiting for the genuine answer");
        assert_eq!(c.poll_event(), None);
        c.handle_input(t0, server, &reply(&req, addr(US)))
            .expect("genuine");
        assert!(matches!(c.poll_event(), Some(Event::Mapped { .. })));
    }

    #[test]
    fn transactions_in_flight_are_bounded() {
        let t0 = origin();
        let mut c = BindingClient::new(ClientConfig {
            max_transactions: 2,
            ..Default::default()
        });
        c.query(t0, addr("192.0.2.1:1"), TransactionId([1; 12]))
            .expect("1");
        c.query(t0, addr("192.0.2.1:2"), TransactionId([2; 12]))
            .expect("2");
        assert_eq!(
            c.query(t0, addr("192.0.2.1:3"), TransactionId([3; 12])),
            Err(ClientError::TooManyTransactions)
        );
    }
}
