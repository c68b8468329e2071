//! The anti-replay window of a session's receive direction.
//!
//! This module owns the sliding bitmap only (the block-ring layout of RFC 6479): whether a
//! counter may be accepted, and marking it seen once its packet authenticated. It never decrypts
//! and never decides what a rejection means.

/// Blocks of 64 counters in the ring.
const BLOCKS: usize = 33;
/// Counters less than this far behind the highest accepted one are tracked (the highest and
/// the `WINDOW - 1` below it); older ones are rejected. At least 2048, as the session contract
/// promises.
pub const WINDOW: u64 = ((BLOCKS as u64) - 1) * 64;
const _: () = assert!(
    WINDOW >= 2048,
    "the replay window must cover at least 2048 packets"
);

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Already accepted once.
    Duplicate,
    /// Older than the window.
    TooOld,
}

/// A 2048-packet anti-replay window (264 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest accepted counter, if any.
    top: Option<u64>,
    bits: [u64; BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::new()
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .finish()
    }
}

fn slot(counter: u64) -> (usize, u64) {
    // `counter / 64 % BLOCKS` is below BLOCKS, so the cast cannot truncate.
    let block = ((counter / 64) % BLOCKS as u64) as usize;
    (block, 1u64 << (counter % 64))
}

impl ReplayWindow {
    /// An empty window.
    #[must_use]
    pub const fn new() -> ReplayWindow {
        ReplayWindow {
            top: None,
            bits: [0; BLOCKS],
        }
    }

    /// Whether `counter` would be accepted. Changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        let Some(top) = self.top else { return Ok(()) };
        if counter > top {
            return Ok(());
        }
        if top - counter >= WINDOW {
            return Err(Replay::TooOld);
        }
        let (block, mask) = slot(counter);
        match self.bits.get(block) {
            Some(b) if b & mask == 0 => Ok(()),
            _ => Err(Replay::Duplicate),
        }
    }

    /// Marks `counter` seen (call only after its packet authenticated and passed `check`).
    pub fn commit(&mut self, counter: u64) {
        if self.check(counter).is_err() {
            return;
        }
        let advance = match self.top {
            None => true,
            Some(top) => counter > top,
        };
        if advance {
            let first_new_block = match self.top {
                None => counter / 64,
                Some(top) => top / 64 + 1,
            };
            let new_block = counter / 64;
            let span = new_block.saturating_sub(first_new_block).saturating_add(1);
            if self.top.is_none() || span >= BLOCKS as u64 {
                self.bits = [0; BLOCKS];
            } else {
                for b in first_new_block..=new_block {
                    let (i, _) = slot(b * 64);
                    if let Some(w) = self.bits.get_mut(i) {
                        *w = 0;
                    }
                }
            }
            self.top = Some(counter);
        }
        let (block, mask) = slot(counter);
        if let Some(w) = self.bits.get_mut(block) {
            *w |= mask;
        }
    }

    /// The highest accepted counter.
    #[must_use]
    pub fn top(&self) -> Option<u64> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_old_counters_are_rejected() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Ok(()));
        w.commit(0);
        assert_eq!(w.check(0), Err(Replay::Duplicate));
        w.commit(5);
        assert_eq!(w.check(3), Ok(()));
        w.commit(3);
        assert_eq!(w.check(3), Err(Replay::Duplicate));
        w.commit(10_000);
        assert_eq!(w.check(10_000 - WINDOW), Err(Replay::TooOld));
        assert_eq!(w.check(10_000 - WINDOW + 1), Ok(()));
        assert_eq!(w.check(5), Err(Replay::TooOld));
        assert_eq!(w.top(), Some(10_000));
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new();
        let top = 5_000u64;
        w.commit(top);
        for c in (top - WINDOW + 1..top).rev() {
            assert_eq!(w.check(c), Ok(()), "{c}");
            w.commit(c);
        }
        for c in top - WINDOW + 1..=top {
            assert_eq!(w.check(c), Err(Replay::Duplicate), "{c}");
        }
    }

    #[test]
    fn matches_a_reference_set() {
        // Model check against a plain set of every accepted counter.
        let mut w = ReplayWindow::new();
        let mut seen = alloc::collections::BTreeSet::new();
        let mut r = crate::rng::Seed::from_u64(4).rng("replay", 0);
        let mut base = 0u64;
        for _ in 0..20_000 {
            base += r.below(40);
            let c = base.saturating_sub(r.below(3000));
            let top = seen.iter().next_back().copied();
            let expect = match top {
                None => true,
                Some(t) => c > t || (t - c < WINDOW && !seen.contains(&c)),
            };
            assert_eq!(w.check(c).is_ok(), expect, "counter {c} top {top:?}");
            if expect {
                w.commit(c);
                seen.insert(c);
            }
        }
    }

    #[test]
    fn huge_jumps_do_not_wrap() {
        let mut w = ReplayWindow::new();
        w.commit(u64::MAX - 1);
        assert_eq!(w.check(u64::MAX - 1), Err(Replay::Duplicate));
        assert_eq!(w.check(0), Err(Replay::TooOld));
        assert_eq!(w.check(u64::MAX), Ok(()));
    }
}
