//! Packet protection of an established session: counter nonces, the replay window, and key
//! updates.
//!
//! This module owns the keys of one session in both directions and nothing else: it seals a
//! plaintext into a DATA packet and opens a DATA packet into its plaintext. It never decides
//! what the plaintext means, never queues, and never reads a clock (`now` comes in).
//!
//! Key updates follow the Noise REKEY function: each direction's sender moves to the next key
//! generation after a packet count or a time limit and says so with the key-phase byte; the
//! receiver derives the next key when it first sees the new phase, and keeps the previous key
//! for an overlap so that packets reordered across the switch still open.

use alloc::boxed::Box;
use core::fmt;
use core::time::Duration;

use crate::crypto::{rekey, PacketKey, SharedProvider, KEY_LEN, TAG_LEN};
use crate::replay::{Replay, ReplayWindow};
use crate::time::Instant;
use crate::wire::{write_data_header, DataHeader, DATA_HEADER_LEN, DATA_OVERHEAD};

/// Counters stop here: the next one would come too close to the nonce reserved for REKEY.
pub const COUNTER_LIMIT: u64 = u64::MAX - 1;

/// When each direction switches keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Packets sent under one key before the next.
    pub after_packets: u64,
    /// Time under one key before the next.
    pub after_time: Duration,
    /// How long the receiver keeps the previous key after the sender switched.
    pub overlap: Duration,
}

/// Why sealing failed. Nothing was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The buffer cannot hold header, plaintext and tag.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// Every counter of this session is used; it must end.
    Exhausted,
}

/// Why a DATA packet was refused. The session is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// The counter was seen before.
    Duplicate,
    /// The counter is older than the replay window.
    TooOld,
    /// The key phase matches no key this side holds.
    KeyPhase,
    /// The AEAD refused the packet.
    Auth,
}

impl From<Replay> for OpenFailure {
    fn from(r: Replay) -> Self {
        match r {
            Replay::Duplicate => OpenFailure::Duplicate,
            Replay::TooOld => OpenFailure::TooOld,
        }
    }
}

struct SendState {
    key: Box<dyn PacketKey>,
    generation: u64,
    packets_in_generation: u64,
    generation_started: Instant,
    next_counter: u64,
}

struct RecvState {
    key: Box<dyn PacketKey>,
    generation: u64,
    previous: Option<(Box<dyn PacketKey>, Instant)>,
    replay: ReplayWindow,
}

/// Both directions' keys of one session.
pub struct PacketProtection {
    provider: SharedProvider,
    remote_index: u32,
    policy: RekeyPolicy,
    send: SendState,
    recv: RecvState,
}

impl fmt::Debug for PacketProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketProtection")
            .field("remote_index", &self.remote_index)
            .field("send_generation", &self.send.generation)
            .field("next_counter", &self.send.next_counter)
            .field("recv_generation", &self.recv.generation)
            .field("recv_top", &self.recv.replay.top())
            .finish()
    }
}

impl PacketProtection {
    /// Keys from a completed handshake. `remote_index` goes into every sealed header.
    #[must_use]
    pub fn new(
        provider: SharedProvider,
        send_key: &[u8; KEY_LEN],
        recv_key: &[u8; KEY_LEN],
        remote_index: u32,
        policy: RekeyPolicy,
        now: Instant,
    ) -> PacketProtection {
        PacketProtection {
            send: SendState {
                key: provider.packet_key(send_key),
                generation: 0,
                packets_in_generation: 0,
                generation_started: now,
                next_counter: 0,
            },
            recv: RecvState {
                key: provider.packet_key(recv_key),
                generation: 0,
                previous: None,
                replay: ReplayWindow::new(),
            },
            provider,
            remote_index,
            policy,
        }
    }

    /// Seals the `plaintext_len` bytes at `buf[16..]` into a DATA packet in place: writes the
    /// header into `buf[..16]` and the tag after the plaintext. Returns the packet length.
    pub fn seal(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SealError> {
        let total = plaintext_len.saturating_add(DATA_OVERHEAD);
        if buf.len() < total {
            return Err(SealError::BufferTooSmall { needed: total });
        }
        if self.send.next_counter >= COUNTER_LIMIT {
            return Err(SealError::Exhausted);
        }
        self.maybe_rekey_send(now);
        let counter = self.send.next_counter;
        let header = DataHeader {
            key_phase: self.send.generation as u8,
            receiver_index: self.remote_index,
            counter,
        };
        let (head, rest) = buf.split_at_mut(DATA_HEADER_LEN);
        let (body, rest) = rest.split_at_mut(plaintext_len);
        let tag_dst = rest.get_mut(..TAG_LEN);
        let (Some(()), Some(tag_dst)) = (write_data_header(head, &header), tag_dst) else {
            return Err(SealError::BufferTooSmall { needed: total });
        };
        let tag = self.send.key.seal(counter, &[], body);
        tag_dst.copy_from_slice(&tag);
        self.send.next_counter += 1;
        self.send.packets_in_generation += 1;
        Ok(total)
    }

    fn maybe_rekey_send(&mut self, now: Instant) {
        let by_count = self.send.packets_in_generation >= self.policy.after_packets;
        let by_time =
            now.saturating_duration_since(self.send.generation_started) >= self.policy.after_time;
        if by_count || by_time {
            let next = rekey(&*self.send.key);
            self.send.key = self.provider.packet_key(&next);
            self.send.generation = self.send.generation.wrapping_add(1);
            self.send.packets_in_generation = 0;
            self.send.generation_started = now;
        }
    }

    /// Opens a DATA packet whose ciphertext (tag included) is in `buf`, in place. Returns the
    /// plaintext length (the plaintext is `buf[..len]`). On failure the session is unchanged
    /// and the contents of `buf` are unspecified.
    pub fn open(
        &mut self,
        now: Instant,
        header: &DataHeader,
        buf: &mut [u8],
    ) -> Result<usize, OpenFailure> {
        self.recv.replay.check(header.counter)?;
        let body_len = buf.len().checked_sub(TAG_LEN).ok_or(OpenFailure::Auth)?;
        let (body, tag) = buf.split_at_mut(body_len);
        let mut tag_arr = [0u8; TAG_LEN];
        tag_arr.copy_from_slice(tag);
        let current = self.recv.generation as u8;
        if let Some((_, expires)) = &self.recv.previous {
            if now >= *expires {
                self.recv.previous = None;
            }
        }
        if header.key_phase == current {
            self.recv
                .key
                .open(header.counter, &[], body, &tag_arr)
                .map_err(|_| OpenFailure::Auth)?;
        } else if header.key_phase == current.wrapping_sub(1) {
            let Some((prev, _)) = &self.recv.previous else {
                return Err(OpenFailure::KeyPhase);
            };
            prev.open(header.counter, &[], body, &tag_arr)
                .map_err(|_| OpenFailure::Auth)?;
        } else if header.key_phase == current.wrapping_add(1) {
            let next = self.provider.packet_key(&rekey(&*self.recv.key));
            next.open(header.counter, &[], body, &tag_arr)
                .map_err(|_| OpenFailure::Auth)?;
            let old = core::mem::replace(&mut self.recv.key, next);
            self.recv.previous = Some((old, now.saturating_add(self.policy.overlap)));
            self.recv.generation = self.recv.generation.wrapping_add(1);
        } else {
            return Err(OpenFailure::KeyPhase);
        }
        self.recv.replay.commit(header.counter);
        Ok(body_len)
    }

    /// The next counter this side will send.
    #[must_use]
    pub fn next_counter(&self) -> u64 {
        self.send.next_counter
    }

    /// Key generations so far: (sending, receiving).
    #[must_use]
    pub fn generations(&self) -> (u64, u64) {
        (self.send.generation, self.recv.generation)
    }

    /// When the previous receive key stops being accepted, if one is held.
    #[must_use]
    pub fn overlap_deadline(&self) -> Option<Instant> {
        self.recv.previous.as_ref().map(|(_, at)| *at)
    }

    /// Drops the previous receive key if its overlap has passed.
    pub fn expire(&mut self, now: Instant) {
        if matches!(&self.recv.previous, Some((_, at)) if now >= *at) {
            self.recv.previous = None;
        }
    }

    /// When the sending key switches by time (it may switch earlier by count).
    #[must_use]
    pub fn rekey_deadline(&self) -> Instant {
        self.send
            .generation_started
            .saturating_add(self.policy.after_time)
    }

    /// Sets the next sending counter (tests and fuzzing use it to reach the counter limit).
    #[doc(hidden)]
    pub fn set_next_counter(&mut self, counter: u64) {
        self.send.next_counter = counter;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::RustCrypto;
    use crate::wire::{decode, Packet};
    use alloc::sync::Arc;
    use alloc::vec;
    use alloc::vec::Vec;

    fn pair(policy: RekeyPolicy) -> (PacketProtection, PacketProtection) {
        let p: SharedProvider = Arc::new(RustCrypto);
        let a = PacketProtection::new(p.clone(), &[1; 32], &[2; 32], 77, policy, Instant::ZERO);
        let b = PacketProtection::new(p, &[2; 32], &[1; 32], 66, policy, Instant::ZERO);
        (a, b)
    }

    fn policy() -> RekeyPolicy {
        RekeyPolicy {
            after_packets: 1 << 40,
            after_time: Duration::from_secs(1000),
            overlap: Duration::from_secs(5),
        }
    }

    fn seal(p: &mut PacketProtection, now: Instant, msg: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; msg.len() + DATA_OVERHEAD];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + msg.len()].copy_from_slice(msg);
        let n = p.seal(now, &mut buf, msg.len()).unwrap();
        buf.truncate(n);
        buf
    }

    fn open(p: &mut PacketProtection, now: Instant, pkt: &[u8]) -> Result<Vec<u8>, OpenFailure> {
        let Ok(Packet::Data(h, ct)) = decode(pkt) else {
            panic!("not data")
        };
        let mut buf = ct.to_vec();
        let n = p.open(now, &h, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    #[test]
    fn round_trip_and_replay() {
        let (mut a, mut b) = pair(policy());
        let pkt = seal(&mut a, Instant::ZERO, b"hello");
        assert_eq!(pkt.len(), 5 + 32);
        assert_eq!(&pkt[4..8], &77u32.to_le_bytes());
        assert_eq!(open(&mut b, Instant::ZERO, &pkt).unwrap(), b"hello");
        assert_eq!(
            open(&mut b, Instant::ZERO, &pkt),
            Err(OpenFailure::Duplicate)
        );
        let mut bad = seal(&mut a, Instant::ZERO, b"x");
        bad[20] ^= 1;
        assert_eq!(open(&mut b, Instant::ZERO, &bad), Err(OpenFailure::Auth));
        // The tampered counter was not committed: the genuine packet still opens.
        bad[20] ^= 1;
        assert_eq!(open(&mut b, Instant::ZERO, &bad).unwrap(), b"x");
    }

    #[test]
    fn seal_refuses_small_buffers_without_consuming_a_counter() {
        let (mut a, _) = pair(policy());
        let mut buf = [0u8; 40];
        assert_eq!(
            a.seal(Instant::ZERO, &mut buf, 9),
            Err(SealError::BufferTooSmall { needed: 41 })
        );
        assert_eq!(a.next_counter(), 0);
        a.set_next_counter(COUNTER_LIMIT);
        assert_eq!(
            a.seal(Instant::ZERO, &mut buf, 1),
            Err(SealError::Exhausted)
        );
    }

    #[test]
    fn rekey_by_count_with_reordering_across_the_switch() {
        let mut pol = policy();
        pol.after_packets = 3;
        let (mut a, mut b) = pair(pol);
        let pkts: Vec<_> = (0..10u8)
            .map(|i| seal(&mut a, Instant::ZERO, &[i]))
            .collect();
        assert_eq!(a.generations().0, 3);
        // Deliver generation 1 before the tail of generation 0.
        for i in [3usize, 4, 0, 1, 2, 5, 6, 7, 8, 9] {
            assert_eq!(
                open(&mut b, Instant::ZERO, &pkts[i]).unwrap(),
                [i as u8],
                "{i}"
            );
        }
        assert_eq!(b.generations().1, 3);
    }

    #[test]
    fn rekey_by_time_and_overlap_expiry() {
        let mut pol = policy();
        pol.after_time = Duration::from_secs(10);
        let (mut a, mut b) = pair(pol);
        let old = seal(&mut a, Instant::ZERO, b"old");
        let t = Instant::from_millis(10_000);
        let new = seal(&mut a, t, b"new");
        assert_eq!(a.generations().0, 1);
        assert_eq!(open(&mut b, t, &new).unwrap(), b"new");
        assert_eq!(b.overlap_deadline(), Some(t + Duration::from_secs(5)));
        // After the overlap, the old generation is gone.
        let late = t + Duration::from_secs(6);
        assert_eq!(open(&mut b, late, &old), Err(OpenFailure::KeyPhase));
        assert_eq!(b.overlap_deadline(), None);
    }

    #[test]
    fn unknown_phase_is_refused_without_change() {
        let (mut a, mut b) = pair(policy());
        let mut pkt = seal(&mut a, Instant::ZERO, b"p");
        pkt[2] = 7;
        assert_eq!(
            open(&mut b, Instant::ZERO, &pkt),
            Err(OpenFailure::KeyPhase)
        );
        pkt[2] = 1;
        assert_eq!(open(&mut b, Instant::ZERO, &pkt), Err(OpenFailure::Auth));
        assert_eq!(b.generations().1, 0);
        pkt[2] = 0;
        assert_eq!(open(&mut b, Instant::ZERO, &pkt).unwrap(), b"p");
    }
}
