//! Anti-replay sliding window (RFC 6479): a ring of 64-bit blocks, so
//! moving the window forward clears whole words instead of shifting bits.

use crate::timers::REJECT_AFTER_MESSAGES;

const BLOCK_BITS: u64 = 64;
const RING_BLOCKS: u64 = 128;
/// Counters this far behind the newest one are still accepted once.
pub const REPLAY_WINDOW: u64 = (RING_BLOCKS - 1) * BLOCK_BITS;
// The floor: reordering of 2048 packets must never cause a drop.
const _: () = assert!(REPLAY_WINDOW >= 2048);

#[derive(Clone)]
pub(crate) struct ReplayWindow {
    newest: u64,
    ring: [u64; RING_BLOCKS as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            newest: 0,
            ring: [0; RING_BLOCKS as usize],
        }
    }
}

impl ReplayWindow {
    /// A cheap check before decryption: could this counter be fresh?
    pub(crate) fn may_accept(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.newest {
            return true;
        }
        if self.newest - counter > REPLAY_WINDOW {
            return false;
        }
        let (block, bit) = Self::position(counter);
        self.ring[block] & bit == 0
    }

    /// Records an authenticated counter; `false` if it was seen before or is
    /// too old. Must only be called after the packet authenticated, or an
    /// attacker could move the window.
    pub(crate) fn accept(&mut self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.newest {
            let current = self.newest / BLOCK_BITS;
            let target = counter / BLOCK_BITS;
            let clear = (target - current).min(RING_BLOCKS);
            for i in 1..=clear {
                self.ring[((current + i) % RING_BLOCKS) as usize] = 0;
            }
            self.newest = counter;
        } else if self.newest - counter > REPLAY_WINDOW {
            return false;
        }
        let (block, bit) = Self::position(counter);
        let fresh = self.ring[block] & bit == 0;
        self.ring[block] |= bit;
        fresh
    }

    fn position(counter: u64) -> (usize, u64) {
        (
            ((counter / BLOCK_BITS) % RING_BLOCKS) as usize,
            1 << (counter % BLOCK_BITS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::default();
        for c in [0u64, 2, 1, 5, 3, 4, 100, 99, 64, 63] {
            assert!(w.may_accept(c), "{c}");
            assert!(w.accept(c), "{c}");
            assert!(!w.may_accept(c), "{c} replay");
            assert!(!w.accept(c), "{c} replay");
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::default();
        let top = 10_000;
        assert!(w.accept(top));
        assert!(w.accept(top - REPLAY_WINDOW), "oldest in-window counter");
        assert!(!w.may_accept(top - REPLAY_WINDOW - 1), "just outside");
        assert!(!w.accept(top - REPLAY_WINDOW - 1));
        // A big jump forward clears stale bits: an old bit must not survive
        // in a recycled block.
        assert!(w.accept(top + 3 * REPLAY_WINDOW));
        assert!(w.accept(top + 3 * REPLAY_WINDOW - 1));
        assert!(!w.accept(top), "far behind now");
    }

    #[test]
    fn window_is_at_least_2048_and_exact_for_8000_reordered() {
        let mut w = ReplayWindow::default();
        // Deliver 8000 counters in a scrambled order within the window.
        let n = 8000u64;
        let mut order: Vec<u64> = (0..n).collect();
        let mut x = 12345u64;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        // Accept the highest first so every other one is "behind".
        assert!(w.accept(n - 1));
        for c in order.into_iter().filter(|&c| c != n - 1) {
            assert!(w.accept(c), "{c}");
        }
        for c in 0..n {
            assert!(!w.may_accept(c));
        }
    }

    #[test]
    fn rejects_at_reject_after_messages() {
        let mut w = ReplayWindow::default();
        assert!(!w.may_accept(REJECT_AFTER_MESSAGES));
        assert!(!w.accept(REJECT_AFTER_MESSAGES));
        assert!(w.accept(REJECT_AFTER_MESSAGES - 1));
    }
}
