//! Anti-replay with 64-bit extended sequence numbers (RFC 4303 §3.4.3 and
//! Appendix A). Only the low 32 bits travel; the high 32 are inferred from
//! where the window is. A packet is checked before its integrity is
//! verified and recorded only after, so forgeries never move the window.

/// Smallest window we accept (RFC 4303 recommends 64; we want more for
/// fast links with reordering).
pub const MIN_WINDOW: u64 = 64;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted (0: none yet).
    top: u64,
    /// Bit i set: `top - i` was received.
    bits: Vec<u64>,
    size: u64,
    esn: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Acceptable; this is the full 64-bit sequence number to authenticate with.
    Fresh(u64),
    Replayed,
    TooOld,
}

impl ReplayWindow {
    /// A window of `size` packets (rounded up to a multiple of 64, at least
    /// 64). `esn`: the SA negotiated extended sequence numbers.
    pub fn new(size: u64, esn: bool) -> Self {
        let size = size.max(MIN_WINDOW).div_ceil(64) * 64;
        Self {
            top: 0,
            bits: vec![0; (size / 64) as usize],
            size,
            esn,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The full sequence number a received low half stands for.
    pub fn infer(&self, low: u32) -> u64 {
        if !self.esn {
            return u64::from(low);
        }
        let (th, tl) = (self.top >> 32, self.top as u32);
        let w = self.size as u32;
        let sh = if tl >= w - 1 {
            // The window lies within one 2^32 subspace.
            if low >= tl - (w - 1) {
                th
            } else {
                th + 1
            }
        } else if low >= tl.wrapping_sub(w - 1) {
            // The window spans two subspaces; `low` is in the lower one.
            th.wrapping_sub(1)
        } else {
            th
        };
        sh << 32 | u64::from(low)
    }

    fn bit(&self, seq: u64) -> bool {
        let i = self.top - seq;
        self.bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }

    pub fn check(&self, low: u32) -> Check {
        let seq = self.infer(low);
        if seq == 0 {
            return Check::TooOld; // sequence numbers start at 1
        }
        if seq > self.top {
            return Check::Fresh(seq);
        }
        if self.top - seq >= self.size {
            return Check::TooOld;
        }
        if self.bit(seq) {
            Check::Replayed
        } else {
            Check::Fresh(seq)
        }
    }

    /// Records `seq` (from `check`, after the packet authenticated).
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            if shift >= self.size {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                self.shift_left(shift);
            }
            self.top = seq;
            self.bits[0] |= 1;
        } else if self.top - seq < self.size {
            let i = self.top - seq;
            self.bits[(i / 64) as usize] |= 1 << (i % 64);
        }
    }

    /// Moves every bit `n` places toward older (index + n).
    fn shift_left(&mut self, n: u64) {
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let src = i.checked_sub(words);
            let hi = src.map_or(0, |s| self.bits[s]);
            let lo = src
                .and_then(|s| s.checked_sub(1))
                .map_or(0, |s| self.bits[s]);
            self.bits[i] = if bits == 0 {
                hi
            } else {
                hi << bits | lo >> (64 - bits)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(w: &mut ReplayWindow, low: u32) -> Check {
        let c = w.check(low);
        if let Check::Fresh(s) = c {
            w.accept(s);
        }
        c
    }

    #[test]
    fn replays_and_old_packets_are_refused_and_reordering_within_the_window_is_fine() {
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(w.size(), 1024);
        assert_eq!(take(&mut w, 0), Check::TooOld, "0 is never valid");
        assert_eq!(take(&mut w, 1), Check::Fresh(1));
        assert_eq!(take(&mut w, 1), Check::Replayed);
        assert_eq!(take(&mut w, 5000), Check::Fresh(5000));
        assert_eq!(
            take(&mut w, 4000),
            Check::Fresh(4000),
            "1000 behind: inside"
        );
        assert_eq!(take(&mut w, 4000), Check::Replayed);
        assert_eq!(take(&mut w, 3976), Check::TooOld, "1024 behind: outside");
        assert_eq!(
            take(&mut w, 3977),
            Check::Fresh(3977),
            "1023 behind: last slot"
        );
        assert_eq!(take(&mut w, 4200), Check::Fresh(4200));
        for s in (5001..5200).rev() {
            assert_eq!(take(&mut w, s), Check::Fresh(u64::from(s)));
        }
        assert_eq!(take(&mut w, 5000), Check::Replayed, "bits survive shifts");
        assert_eq!(take(&mut w, 4200), Check::Replayed, "across words");
        assert_eq!(take(&mut w, 4000), Check::TooOld, "pushed out");
    }

    #[test]
    fn forgeries_checked_but_not_accepted_do_not_move_the_window() {
        let mut w = ReplayWindow::new(64, false);
        take(&mut w, 10);
        assert_eq!(w.check(1_000_000), Check::Fresh(1_000_000));
        // (authentication failed: not accepted)
        assert_eq!(take(&mut w, 9), Check::Fresh(9));
    }

    #[test]
    fn extended_sequence_numbers_cross_the_32_bit_boundary() {
        let mut w = ReplayWindow::new(128, true);
        let mut seq: u64 = u64::from(u32::MAX) - 5;
        w.accept(seq);
        for _ in 0..10 {
            seq += 1;
            assert_eq!(take(&mut w, seq as u32), Check::Fresh(seq), "seq {seq:#x}");
        }
        assert!(seq > u64::from(u32::MAX));
        // A late packet from before the wrap is still placed correctly.
        let late = u64::from(u32::MAX) - 50;
        assert_eq!(w.infer(late as u32), late);
        assert_eq!(take(&mut w, late as u32), Check::Fresh(late));
        assert_eq!(
            take(&mut w, (u64::from(u32::MAX) - 2) as u32),
            Check::Replayed
        );
    }
}
