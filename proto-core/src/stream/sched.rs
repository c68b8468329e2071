//! Fair scheduling across streams: deficit round robin with per-stream weights that can change
//! at runtime.
//!
//! This module owns the rotation and the deficits. It never holds data: the caller says which
//! keys (streams, or sessions) have something to send and, when asked, how large the next
//! packet of a key would be. A bulk stream therefore cannot starve a small one: every active
//! key is visited once per round and may send `quantum * weight` bytes then.

use alloc::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, Copy)]
struct Slot {
    weight: u32,
    deficit: u64,
    active: bool,
}

/// A deficit-round-robin scheduler over keys `K`.
#[derive(Debug, Clone)]
pub struct Scheduler<K: Ord + Copy> {
    quantum: u64,
    slots: BTreeMap<K, Slot>,
    ring: VecDeque<K>,
    /// Whether the key at the front of the ring has had its quantum for this visit.
    front_credited: bool,
}

impl<K: Ord + Copy> Scheduler<K> {
    /// A scheduler giving each active key `quantum * weight` bytes per round.
    #[must_use]
    pub fn new(quantum: u64) -> Scheduler<K> {
        Scheduler {
            quantum: quantum.max(1),
            slots: BTreeMap::new(),
            ring: VecDeque::new(),
            front_credited: false,
        }
    }

    /// Sets a key's weight (at least 1; default 1). Takes effect at its next visit.
    pub fn set_weight(&mut self, key: K, weight: u32) {
        self.slots
            .entry(key)
            .or_insert(Slot {
                weight: 1,
                deficit: 0,
                active: false,
            })
            .weight = weight.max(1);
    }

    /// The key has something to send.
    pub fn activate(&mut self, key: K) {
        let slot = self.slots.entry(key).or_insert(Slot {
            weight: 1,
            deficit: 0,
            active: false,
        });
        if !slot.active {
            slot.active = true;
            self.ring.push_back(key);
        }
    }

    /// Forgets a key entirely.
    pub fn remove(&mut self, key: K) {
        self.slots.remove(&key);
        if self.ring.front() == Some(&key) {
            self.front_credited = false;
        }
        self.ring.retain(|k| *k != key);
    }

    /// Active keys.
    #[must_use]
    pub fn active(&self) -> usize {
        self.ring.len()
    }

    /// The active keys in rotation order.
    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.ring.iter().copied()
    }

    /// Gives back credit charged by [`Scheduler::next`] for a packet that was not sent after
    /// all (it did not fit); the key keeps its turn.
    pub fn refund(&mut self, key: K, size: u64) {
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.deficit = slot.deficit.saturating_add(size);
        }
    }

    /// A key's weight, if it is known.
    #[must_use]
    pub fn weight(&self, key: K) -> Option<u32> {
        self.slots.get(&key).map(|s| s.weight)
    }

    /// Picks the key that sends next and charges it the size of its next packet.
    /// `head_size(key)` is that size, or `None` if the key has nothing left (it is then
    /// deactivated). Returns `None` only when no key has anything to send. A packet larger than
    /// a key's credit waits while the credit grows by a quantum per round, so the loop ends
    /// after at most `size / quantum` rounds.
    pub fn next(&mut self, mut head_size: impl FnMut(K) -> Option<u64>) -> Option<K> {
        while let Some(&key) = self.ring.front() {
            let Some(size) = head_size(key) else {
                self.ring.pop_front();
                self.front_credited = false;
                if let Some(slot) = self.slots.get_mut(&key) {
                    slot.active = false;
                    slot.deficit = 0;
                }
                continue;
            };
            let Some(slot) = self.slots.get_mut(&key) else {
                self.ring.pop_front();
                self.front_credited = false;
                continue;
            };
            if !self.front_credited {
                slot.deficit = slot
                    .deficit
                    .saturating_add(self.quantum.saturating_mul(u64::from(slot.weight)));
                self.front_credited = true;
            }
            if size <= slot.deficit {
                slot.deficit -= size;
                return Some(key);
            }
            // Not enough credit left this round: the next key's turn.
            self.ring.rotate_left(1);
            self.front_credited = false;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn weights_share_bytes_in_proportion() {
        let mut s = Scheduler::new(1_200);
        s.set_weight(1u32, 3);
        s.activate(1u32);
        s.activate(2u32);
        let mut sent = [0u64; 3];
        for _ in 0..4_000 {
            let k = s.next(|_| Some(1_200)).unwrap();
            sent[k as usize] += 1_200;
        }
        let ratio = sent[1] as f64 / sent[2] as f64;
        assert!((2.9..3.1).contains(&ratio), "{sent:?}");
    }

    #[test]
    fn a_bulk_stream_does_not_starve_a_small_one() {
        let mut s = Scheduler::new(1_200);
        s.activate(1u32); // bulk: always a full packet
        let mut order = Vec::new();
        for i in 0..100 {
            if i == 37 {
                s.activate(2u32); // one small message arrives
            }
            let small_pending = !order.contains(&2u32);
            let k = s
                .next(|k| match k {
                    1 => Some(1_200),
                    _ if small_pending => Some(50),
                    _ => None,
                })
                .unwrap();
            order.push(k);
        }
        let served = order.iter().position(|k| *k == 2).unwrap();
        assert!(
            served <= 39,
            "the small message waited {} packets",
            served - 37
        );
        assert_eq!(order.iter().filter(|k| **k == 2).count(), 1);
    }

    #[test]
    fn idle_keys_drop_out_and_weights_change_at_runtime() {
        let mut s = Scheduler::new(1_000);
        s.activate(1u32);
        s.activate(2u32);
        assert_eq!(s.next(|k| (k == 2).then_some(500)), Some(2));
        assert_eq!(s.active(), 1);
        s.set_weight(2, 4);
        let mut twos = 0;
        for _ in 0..40 {
            if s.next(|_| Some(1_000)) == Some(2) {
                twos += 1;
            }
        }
        assert_eq!(s.active(), 1);
        assert_eq!(twos, 40);
        s.activate(1);
        let mut counts = [0u32; 3];
        for _ in 0..500 {
            counts[s.next(|_| Some(1_000)).unwrap() as usize] += 1;
        }
        assert_eq!(counts[2], 4 * counts[1]);
        s.remove(2);
        assert_eq!(s.next(|_| Some(1_000)), Some(1));
        assert_eq!(s.next(|_| None), None);
        assert_eq!(s.active(), 0);
    }

    #[test]
    fn a_packet_larger_than_one_quantum_still_goes_out() {
        let mut s = Scheduler::new(100);
        s.activate(7u32);
        // Credit accumulates over rounds until the big packet fits.
        assert_eq!(s.next(|_| Some(1_000)), Some(7));
    }
}
