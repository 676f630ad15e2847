//! The newest hello timestamp each peer has proven live, so a recorded
//! first handshake message is turned away before it is answered. Bounded:
//! a full table forgets an arbitrary entry (that peer's stale replays then
//! get as far as the handshake's confirmation, which they cannot pass).

use std::collections::HashMap;

#[derive(Debug)]
pub struct HelloTimes {
    newest: HashMap<[u8; 32], u64>,
    capacity: usize,
}

impl HelloTimes {
    pub fn new(capacity: usize) -> Self {
        Self {
            newest: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `timestamp` is newer than every confirmed hello of `peer`.
    pub fn is_fresh(&self, peer: &[u8; 32], timestamp: u64) -> bool {
        self.newest.get(peer).is_none_or(|&t| timestamp > t)
    }

    /// A session with this hello was confirmed live.
    pub fn confirm(&mut self, peer: [u8; 32], timestamp: u64) {
        if !self.newest.contains_key(&peer) && self.newest.len() >= self.capacity {
            if let Some(victim) = self.newest.keys().next().copied() {
                self.newest.remove(&victim);
            }
        }
        let t = self.newest.entry(peer).or_insert(timestamp);
        *t = (*t).max(timestamp);
    }

    pub fn forget(&mut self, peer: &[u8; 32]) {
        self.newest.remove(peer);
    }

    pub fn len(&self) -> usize {
        self.newest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_newer_hellos_are_fresh_and_the_table_stays_bounded() {
        let mut t = HelloTimes::new(2);
        assert!(t.is_fresh(&[1; 32], 5));
        t.confirm([1; 32], 5);
        assert!(!t.is_fresh(&[1; 32], 5), "the same hello again");
        assert!(!t.is_fresh(&[1; 32], 4));
        assert!(t.is_fresh(&[1; 32], 6));
        t.confirm([1; 32], 3);
        assert!(!t.is_fresh(&[1; 32], 5), "never moves back");
        t.confirm([2; 32], 1);
        t.confirm([3; 32], 1);
        assert_eq!(t.len(), 2);
        t.forget(&[3; 32]);
        assert!(t.is_fresh(&[3; 32], 0));
    }
}
