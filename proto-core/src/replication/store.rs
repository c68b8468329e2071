//! The log itself: a storage trait for an append-only sequence of events, and the in-memory
//! implementation the core and the simulator use.
//!
//! It owns events and their sequence numbers, and retention. It never replicates, never
//! persists by itself (persistence leaves the core as an action the driver acknowledges), and
//! never reads a clock: ages are measured against the `now` the caller passes.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::time::Instant;

/// How much of a log to keep. Each bound is optional; the oldest events go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many events.
    pub max_events: Option<u64>,
    /// Keep at most this many payload bytes.
    pub max_bytes: Option<u64>,
    /// Drop events older than this.
    pub max_age: Option<Duration>,
}

/// Why a log operation was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// An append whose sequence is not the log's next one.
    OutOfOrder {
        /// The sequence the log expected.
        expected: u64,
        /// The sequence offered.
        got: u64,
    },
    /// The log would exceed its hard capacity and retention could not make room.
    Full,
    /// `skip_to` backwards, or a truncation below the first retained event.
    BadRange,
    /// The event is larger than the store accepts.
    TooLarge {
        /// Its length.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The storage underneath failed (a file store's write or truncation); the store keeps
    /// what it had.
    Io,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::OutOfOrder { expected, got } => {
                write!(
                    f,
                    "append of sequence {got}, but the log's next is {expected}"
                )
            }
            StoreError::Full => f.write_str("log full: retention could not make room"),
            StoreError::BadRange => f.write_str("sequence range outside the log"),
            StoreError::TooLarge { len, max } => {
                write!(f, "event of {len} bytes exceeds the log's maximum of {max}")
            }
            StoreError::Io => f.write_str("the log's storage failed: see the store's last error"),
        }
    }
}

/// One stored event.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    /// Its sequence number.
    pub seq: u64,
    /// The leadership term in which it was first appended.
    pub term: u64,
    /// When it was appended (the appender's clock).
    pub at: Instant,
    /// The payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("seq", &self.seq)
            .field("term", &self.term)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// An append-only log of events numbered from 0 without gaps, of which a suffix is retained.
///
/// `first_seq()..next_seq()` are the retained events. `skip_to` moves an empty or trimmed log
/// forward (a replica catching up past the leader's retention); `truncate_from` removes a
/// suffix (a deposed leader's unacknowledged writes).
pub trait LogStore {
    /// Appends `payload` as event `seq` of `term`; `seq` must be `next_seq()`.
    fn append(
        &mut self,
        seq: u64,
        term: u64,
        at: Instant,
        payload: &[u8],
    ) -> Result<(), StoreError>;
    /// The term of retained event `seq`.
    fn term_at(&self, seq: u64) -> Option<u64>;
    /// Up to `max_events` events from `from`, at most `max_bytes` payload bytes in all (but at
    /// least one event if `from` is retained). Empty if `from` is outside the retained range.
    fn read(&self, from: u64, max_events: usize, max_bytes: usize) -> Vec<Event>;
    /// The first retained sequence (equal to `next_seq()` when nothing is retained).
    fn first_seq(&self) -> u64;
    /// The sequence the next append gets.
    fn next_seq(&self) -> u64;
    /// Drops everything and continues at `seq` (at least `next_seq()`).
    fn skip_to(&mut self, seq: u64) -> Result<(), StoreError>;
    /// Removes events `from..` (from at least `first_seq()`).
    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError>;
    /// Applies `retention` at `now`, never dropping event `keep_from` or any later one (the
    /// replication machine passes its commit point: only committed events age out); returns
    /// how many events went.
    fn apply_retention(&mut self, retention: &Retention, now: Instant, keep_from: u64) -> u64;
    /// Payload bytes retained.
    fn bytes(&self) -> u64;
    /// Makes the events below `upto` and `state` durable. A store that does it before
    /// returning (memory, a file synced in place, or a policy that does not sync) answers
    /// [`Sync::Done`]; one that syncs elsewhere answers [`Sync::Later`], and its driver reports
    /// completion (`Node::log_persisted`). Until then nothing the replica sends afterwards
    /// leaves. The default keeps `state` in memory only.
    fn persist(&mut self, upto: u64, state: HardState) -> Sync {
        let _ = (upto, state);
        Sync::Done
    }
    /// The term and vote last persisted (zero and none for a new log), read when a log is
    /// reopened over this store.
    fn hard_state(&self) -> HardState {
        HardState::default()
    }
}

/// The part of a replica's state besides its events that must survive a crash: the term it
/// knows and the vote it cast in it (a replica that forgot its vote could vote twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// The current term.
    pub term: u64,
    /// The vote cast in `term`.
    pub voted_for: Option<crate::identity::NodeId>,
}

/// What [`LogStore::persist`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sync {
    /// Durable already.
    Done,
    /// The driver reports completion later.
    Later,
}

impl<T: LogStore + ?Sized> LogStore for alloc::boxed::Box<T> {
    fn append(
        &mut self,
        seq: u64,
        term: u64,
        at: Instant,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        (**self).append(seq, term, at, payload)
    }
    fn term_at(&self, seq: u64) -> Option<u64> {
        (**self).term_at(seq)
    }
    fn read(&self, from: u64, max_events: usize, max_bytes: usize) -> Vec<Event> {
        (**self).read(from, max_events, max_bytes)
    }
    fn first_seq(&self) -> u64 {
        (**self).first_seq()
    }
    fn next_seq(&self) -> u64 {
        (**self).next_seq()
    }
    fn skip_to(&mut self, seq: u64) -> Result<(), StoreError> {
        (**self).skip_to(seq)
    }
    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        (**self).truncate_from(from)
    }
    fn apply_retention(&mut self, retention: &Retention, now: Instant, keep_from: u64) -> u64 {
        (**self).apply_retention(retention, now, keep_from)
    }
    fn bytes(&self) -> u64 {
        (**self).bytes()
    }
    fn persist(&mut self, upto: u64, state: HardState) -> Sync {
        (**self).persist(upto, state)
    }
    fn hard_state(&self) -> HardState {
        (**self).hard_state()
    }
}

/// The in-memory log: a ring of events, bounded by `max_events_hard` and `max_event_bytes`.
#[derive(Debug, Clone)]
pub struct MemLog {
    events: VecDeque<Event>,
    first: u64,
    bytes: u64,
    max_events_hard: usize,
    max_event_bytes: usize,
    state: HardState,
}

impl MemLog {
    /// An empty log holding at most `max_events_hard` events of at most `max_event_bytes`.
    #[must_use]
    pub fn new(max_events_hard: usize, max_event_bytes: usize) -> MemLog {
        MemLog {
            events: VecDeque::new(),
            first: 0,
            bytes: 0,
            max_events_hard,
            max_event_bytes,
            state: HardState::default(),
        }
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.events.pop_front() {
            self.bytes -= e.payload.len() as u64;
            self.first += 1;
        }
    }
}

impl LogStore for MemLog {
    fn append(
        &mut self,
        seq: u64,
        term: u64,
        at: Instant,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        let expected = self.next_seq();
        if seq != expected {
            return Err(StoreError::OutOfOrder { expected, got: seq });
        }
        if payload.len() > self.max_event_bytes {
            return Err(StoreError::TooLarge {
                len: payload.len(),
                max: self.max_event_bytes,
            });
        }
        if self.events.len() >= self.max_events_hard {
            return Err(StoreError::Full);
        }
        self.bytes += payload.len() as u64;
        self.events.push_back(Event {
            seq,
            term,
            at,
            payload: payload.to_vec(),
        });
        Ok(())
    }

    fn read(&self, from: u64, max_events: usize, max_bytes: usize) -> Vec<Event> {
        let Some(start) = from
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for e in self.events.iter().skip(start).take(max_events) {
            if !out.is_empty() && bytes + e.payload.len() > max_bytes {
                break;
            }
            bytes += e.payload.len();
            out.push(e.clone());
        }
        out
    }

    fn term_at(&self, seq: u64) -> Option<u64> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.events.get(i).map(|e| e.term)
    }

    fn first_seq(&self) -> u64 {
        self.first
    }

    fn next_seq(&self) -> u64 {
        self.first + self.events.len() as u64
    }

    fn skip_to(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq < self.next_seq() {
            return Err(StoreError::BadRange);
        }
        self.events.clear();
        self.bytes = 0;
        self.first = seq;
        Ok(())
    }

    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        if from < self.first || from > self.next_seq() {
            return Err(StoreError::BadRange);
        }
        while self.next_seq() > from {
            if let Some(e) = self.events.pop_back() {
                self.bytes -= e.payload.len() as u64;
            }
        }
        Ok(())
    }

    fn apply_retention(&mut self, r: &Retention, now: Instant, keep_from: u64) -> u64 {
        let mut dropped = 0;
        while let Some(front) = self.events.front().filter(|e| e.seq < keep_from) {
            let too_many = r.max_events.is_some_and(|m| self.events.len() as u64 > m);
            let too_big = r.max_bytes.is_some_and(|m| self.bytes > m);
            let too_old = r
                .max_age
                .is_some_and(|a| now.saturating_duration_since(front.at) > a);
            if !(too_many || too_big || too_old) {
                break;
            }
            self.pop_front();
            dropped += 1;
        }
        dropped
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn persist(&mut self, _upto: u64, state: HardState) -> Sync {
        self.state = state;
        Sync::Done
    }

    fn hard_state(&self) -> HardState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn append_read_and_order() {
        let mut l = MemLog::new(100, 16);
        for i in 0..5u64 {
            l.append(i, 1, t(i), &[i as u8; 4]).unwrap();
        }
        assert_eq!(
            l.append(7, 1, t(9), b"x"),
            Err(StoreError::OutOfOrder {
                expected: 5,
                got: 7
            })
        );
        assert_eq!(
            l.append(5, 1, t(9), &[0; 17]),
            Err(StoreError::TooLarge { len: 17, max: 16 })
        );
        assert_eq!((l.first_seq(), l.next_seq(), l.bytes()), (0, 5, 20));
        let r = l.read(1, 10, 8);
        assert_eq!(r.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        // At least one event even when it alone exceeds the byte cap.
        assert_eq!(l.read(3, 10, 1).len(), 1);
        assert!(l.read(5, 10, 100).is_empty());
        assert!(l.read(99, 10, 100).is_empty());
    }

    #[test]
    fn retention_by_count_bytes_and_age() {
        let mut l = MemLog::new(100, 64);
        for i in 0..10u64 {
            l.append(i, 1, t(i * 100), &[0; 10]).unwrap();
        }
        let by_count = Retention {
            max_events: Some(8),
            ..Retention::default()
        };
        assert_eq!(l.apply_retention(&by_count, t(0), u64::MAX), 2);
        assert_eq!(l.first_seq(), 2);
        let by_bytes = Retention {
            max_bytes: Some(50),
            ..Retention::default()
        };
        assert_eq!(l.apply_retention(&by_bytes, t(0), u64::MAX), 3);
        assert_eq!((l.first_seq(), l.bytes()), (5, 50));
        let by_age = Retention {
            max_age: Some(Duration::from_millis(250)),
            ..Retention::default()
        };
        // At 1000 ms, events appended before 750 ms are too old: 5, 6 and 7.
        assert_eq!(l.apply_retention(&by_age, t(1000), u64::MAX), 3);
        assert_eq!((l.first_seq(), l.next_seq()), (8, 10));
        // Nothing at or beyond `keep_from` goes, however old.
        assert_eq!(l.apply_retention(&by_age, t(9000), 9), 1);
        assert_eq!(l.first_seq(), 9);
    }

    #[test]
    fn skip_ahead_and_truncate() {
        let mut l = MemLog::new(3, 8);
        for i in 0..3u64 {
            l.append(i, 2, t(0), b"a").unwrap();
        }
        assert_eq!(l.append(3, 2, t(0), b"a"), Err(StoreError::Full));
        assert_eq!(l.truncate_from(1), Ok(()));
        assert_eq!(l.next_seq(), 1);
        assert_eq!(l.truncate_from(5), Err(StoreError::BadRange));
        assert_eq!(l.skip_to(0), Err(StoreError::BadRange), "never backwards");
        l.skip_to(40).unwrap();
        assert_eq!((l.first_seq(), l.next_seq(), l.bytes()), (40, 40, 0));
        l.append(40, 3, t(1), b"b").unwrap();
        assert_eq!(l.read(40, 1, 1)[0].payload, b"b");
        assert_eq!(
            (l.term_at(40), l.term_at(39), l.term_at(41)),
            (Some(3), None, None)
        );
    }
}
