//! The on-disk replicated log (`io_store::FileLog`) against a reference model: operations
//! through its API, process crashes that lose what was not written out yet, and damage to
//! the files a crash can leave (a torn tail, a flipped byte, garbage after the last record, a
//! corrupt or half-written state file), each followed by a reopen.
//!
//! The model keeps the records the file must hold (in order, with their encoded lengths)
//! and the term and vote last persisted; an in-memory [`MemLog`] with the same bounds is the
//! reference for what the API answers. Checked:
//! - **after every operation**: the file log answers as the `MemLog` does (accepted or
//!   refused, the events read back, the sequence range, the events retention drops);
//! - **after every reopen**: nothing before the damage is lost and nothing after it is
//!   invented: the events are the model's records up to the first damaged one, replayed (the
//!   oldest aged out beyond `max_events`, as retention did), with the counters
//!   (`torn_bytes`, `aged_on_open`) and the file's length to match; the term and vote are the
//!   last persisted; a flipped byte in `state` is refused (and the log opens once it is
//!   restored), a half-written `state.new` is ignored;
//! - **at the end**: one more reopen without damage finds the same log and cuts nothing.
//!
//! The files live in a fresh directory under the system's temporary one, removed at the end.
//! The log runs with [`FsyncPolicy::Never`]: a process crash keeps what was written to the
//! operating system whatever the policy, so syncs change nothing here (the policies are
//! tested in `io-store/tests/filelog.rs`).

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use io_store::{encode_state, FileLog, FileLogConfig, FsyncPolicy, EVENT_OVERHEAD, SKIP_LEN};
use proto_core::replication::store::{HardState, LogStore, Retention};
use proto_core::replication::MemLog;
use proto_core::{Instant, NodeId};

const MAX_STEPS: usize = 256;

/// One step of a [`log_file`] input.
#[derive(Arbitrary, Debug)]
pub enum FileOp {
    /// Appends the next event, `len` payload bytes (more than the limit is refused), in the
    /// current term or the next.
    Append {
        /// Payload length, modulo the limit plus two.
        len: u8,
        /// Whether the term goes up first.
        new_term: bool,
    },
    /// Appends at the next sequence plus `delta` (other than 0: refused, out of order).
    AppendAt {
        /// Distance from the next sequence.
        delta: i8,
    },
    /// Truncates from `back` events before the next sequence.
    Truncate {
        /// How far back.
        back: u8,
    },
    /// Skips to the next sequence plus `ahead` minus one (0: refused, behind the log).
    Skip {
        /// How far ahead.
        ahead: u8,
    },
    /// Applies retention of at most `keep` events, never dropping from `from_back` events
    /// before the next sequence on.
    Retain {
        /// Events kept.
        keep: u8,
        /// Where the commit point is, counted back from the next sequence.
        from_back: u8,
    },
    /// Persists everything appended, with the term (raised when `new_term`) and a vote.
    Persist {
        /// Whether the term goes up.
        new_term: bool,
        /// A vote for node `v`, or none.
        vote: Option<u8>,
    },
    /// The process crashes (what was not written out is lost), the files are damaged, and
    /// the log is opened again.
    Crash(Damage),
}

/// What a crash leaves in the files.
#[derive(Arbitrary, Debug)]
pub enum Damage {
    /// Nothing.
    None,
    /// The last `n` bytes (modulo the length plus one) of `events` are gone.
    Tear(u16),
    /// The byte at `at` (modulo the length) of `events` is XORed with `mask` (0 counts as 1).
    Flip {
        /// Where.
        at: u16,
        /// How.
        mask: u8,
    },
    /// Bytes after the last record that are not the start of one.
    Garbage(Vec<u8>),
    /// A byte of `state` flipped.
    StateFlip {
        /// Where, modulo its length.
        at: u8,
        /// How (0 counts as 1).
        mask: u8,
    },
    /// A `state.new` left half-written by a crash during a state write.
    StaleStateAside(Vec<u8>),
}

/// A record of the events file as the model knows it.
#[derive(Debug, Clone)]
enum Rec {
    Event {
        seq: u64,
        term: u64,
        at: Instant,
        payload: Vec<u8>,
    },
    Skip(u64),
}

impl Rec {
    fn len(&self) -> usize {
        match self {
            Rec::Event { payload, .. } => EVENT_OVERHEAD + payload.len(),
            Rec::Skip(_) => SKIP_LEN,
        }
    }
}

struct Model {
    cfg: FileLogConfig,
    /// Records in the file.
    records: Vec<Rec>,
    /// Appended but still in the log's buffer (written out by a persist, a truncation or a
    /// skip; a crash loses them).
    pending: Vec<Rec>,
    /// The term and vote last persisted.
    state: HardState,
    /// What the API must answer.
    reference: MemLog,
}

/// The log the records replay to: (first sequence, events, events aged out).
fn replay(records: &[Rec], max_events: usize) -> (u64, VecDeque<Rec>, u64) {
    let (mut first, mut events, mut aged) = (0u64, VecDeque::new(), 0u64);
    for r in records {
        match r {
            Rec::Skip(s) => {
                events.clear();
                first = *s;
            }
            Rec::Event { .. } => {
                if events.len() >= max_events {
                    events.pop_front();
                    first += 1;
                    aged += 1;
                }
                events.push_back(r.clone());
            }
        }
    }
    (first, events, aged)
}

impl Model {
    /// The reference after a reopen: the records replayed.
    fn reopened_reference(&self) -> (MemLog, u64) {
        let (first, events, aged) = replay(&self.records, self.cfg.max_events);
        let mut m = MemLog::new(self.cfg.max_events, self.cfg.max_event_bytes);
        assert!(m.skip_to(first).is_ok());
        for e in events {
            if let Rec::Event {
                seq,
                term,
                at,
                payload,
            } = e
            {
                // The records came through the API, so they fit its bounds.
                assert!(m.append(seq, term, at, &payload).is_ok(), "replay of {seq}");
            }
        }
        (m, aged)
    }

    /// Appends through the log and the reference, which must agree; an accepted event waits
    /// in the buffer.
    fn append(&mut self, log: &mut FileLog, seq: u64, term: u64, at: Instant, payload: Vec<u8>) {
        let got = log.append(seq, term, at, &payload);
        assert_eq!(
            got,
            self.reference.append(seq, term, at, &payload),
            "append {seq}"
        );
        if got.is_ok() {
            self.pending.push(Rec::Event {
                seq,
                term,
                at,
                payload,
            });
        }
    }

    fn flush(&mut self) {
        self.records.append(&mut self.pending);
    }
}

fn same(log: &FileLog, reference: &MemLog, what: &str) {
    assert_eq!(
        (log.first_seq(), log.next_seq()),
        (reference.first_seq(), reference.next_seq()),
        "{what}: range"
    );
    assert_eq!(
        log.read(log.first_seq(), usize::MAX, usize::MAX),
        reference.read(reference.first_seq(), usize::MAX, usize::MAX),
        "{what}: events"
    );
    assert_eq!(log.bytes(), reference.bytes(), "{what}: bytes");
    assert!(log.last_error().is_none(), "{what}: {:?}", log.last_error());
}

/// A fresh directory for one input, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "net-fuzz-log-file-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the log after a crash and checks it against the model, which it brings up to date.
fn reopen(m: &mut Model, dir: &Dir, damage: &Damage) -> FileLog {
    m.pending.clear();
    let events = dir.0.join("events");
    let mut bytes = std::fs::read(&events).unwrap_or_default();
    let whole: usize = m.records.iter().map(Rec::len).sum();
    assert_eq!(bytes.len(), whole, "the file holds the records written out");
    // Where the first damaged byte is: records wholly before it survive.
    let mut cut = bytes.len();
    match damage {
        Damage::None | Damage::StateFlip { .. } | Damage::StaleStateAside(_) => {}
        Damage::Tear(n) => {
            cut = bytes.len() - usize::from(*n) % (bytes.len() + 1);
            bytes.truncate(cut);
        }
        Damage::Flip { at, mask } => {
            if !bytes.is_empty() {
                cut = usize::from(*at) % bytes.len();
                if let Some(b) = bytes.get_mut(cut) {
                    *b ^= (*mask).max(1);
                }
            }
        }
        Damage::Garbage(g) => {
            let mut g = g.clone();
            if let Some(b) = g.first_mut() {
                // Not a record type, so no garbage can pass for a record.
                if *b == 0xE1 || *b == 0xE2 {
                    *b = 0;
                }
            }
            bytes.extend_from_slice(&g);
        }
    }
    std::fs::write(&events, &bytes).expect("write the damaged events file");
    let (mut kept, mut at) = (0, 0);
    for r in &m.records {
        if at + r.len() > cut {
            break;
        }
        at += r.len();
        kept += 1;
    }
    m.records.truncate(kept);
    let torn = bytes.len() - at;

    let state = dir.0.join("state");
    match damage {
        Damage::StateFlip { at, mask } => {
            if let Ok(mut s) = std::fs::read(&state) {
                let i = usize::from(*at) % s.len().max(1);
                if let Some(b) = s.get_mut(i) {
                    *b ^= (*mask).max(1);
                }
                std::fs::write(&state, &s).expect("write the damaged state file");
                let e = FileLog::open(&dir.0, m.cfg).expect_err("a corrupt state file opened");
                assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
                assert_eq!(
                    std::fs::metadata(&events).map(|md| md.len()).ok(),
                    Some(bytes.len() as u64),
                    "a refused open changed the events file"
                );
                // The operator restores it from elsewhere.
                std::fs::write(&state, encode_state(m.state)).expect("restore the state file");
            }
        }
        Damage::StaleStateAside(b) => {
            std::fs::write(dir.0.join("state.new"), b).expect("write state.new");
        }
        _ => {}
    }

    let log = FileLog::open(&dir.0, m.cfg).expect("a damaged events file opens");
    let (reference, aged) = m.reopened_reference();
    m.reference = reference;
    same(&log, &m.reference, "after a reopen");
    assert_eq!(log.hard_state(), m.state, "term and vote after a reopen");
    assert_eq!(log.stats().torn_bytes as usize, torn, "torn bytes");
    assert_eq!(log.stats().aged_on_open, aged, "events aged out on open");
    assert_eq!(
        std::fs::metadata(&events).map(|md| md.len()).ok(),
        Some(at as u64),
        "the file is cut after the last whole record"
    );
    log
}

/// Runs one `log_file` input (see the module docs for what it checks).
pub fn log_file(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_events = usize::from(u.int_in_range(1u8..=16).unwrap_or(4));
    let max_event_bytes = usize::from(u.int_in_range(0u8..=64).unwrap_or(16));
    let ops = std::iter::from_fn(|| FileOp::arbitrary(&mut u).ok()).take(MAX_STEPS);
    run(max_events, max_event_bytes, ops);
}

/// Runs operations on a fresh log, checking after each; returns the counters of the log at
/// each reopen.
fn run(
    max_events: usize,
    max_event_bytes: usize,
    ops: impl IntoIterator<Item = FileOp>,
) -> Vec<io_store::FileLogStats> {
    let mut reopens = Vec::new();
    let cfg = FileLogConfig {
        policy: FsyncPolicy::Never,
        max_events,
        max_event_bytes,
    };
    let dir = Dir::new();
    let mut m = Model {
        cfg,
        records: Vec::new(),
        pending: Vec::new(),
        state: HardState::default(),
        reference: MemLog::new(max_events, max_event_bytes),
    };
    let mut log = FileLog::open(&dir.0, cfg).expect("a new log opens");
    let mut term = 1u64;
    let mut clock = 0u64;
    for op in ops {
        clock += 1;
        let next = m.reference.next_seq();
        match op {
            FileOp::Append { len, new_term } => {
                term += u64::from(new_term);
                let len = usize::from(len) % (max_event_bytes + 2);
                let payload = vec![clock as u8; len];
                m.append(&mut log, next, term, Instant::from_millis(clock), payload);
            }
            FileOp::AppendAt { delta } => {
                let seq = next.saturating_add_signed(i64::from(delta));
                m.append(
                    &mut log,
                    seq,
                    term,
                    Instant::from_millis(clock),
                    b"x".to_vec(),
                );
            }
            FileOp::Truncate { back } => {
                let from = next.saturating_sub(u64::from(back));
                let got = log.truncate_from(from);
                assert_eq!(got, m.reference.truncate_from(from), "truncate from {from}");
                if got.is_ok() {
                    m.flush();
                    // Cut at the record of event `from`, after the last skip.
                    let start = m
                        .records
                        .iter()
                        .rposition(|r| matches!(r, Rec::Skip(_)))
                        .map_or(0, |i| i + 1);
                    if let Some(i) = m
                        .records
                        .iter()
                        .skip(start)
                        .position(|r| matches!(r, Rec::Event { seq, .. } if *seq == from))
                    {
                        m.records.truncate(start + i);
                    }
                }
            }
            FileOp::Skip { ahead } => {
                let seq = (next + u64::from(ahead)).saturating_sub(1);
                let got = log.skip_to(seq);
                assert_eq!(got, m.reference.skip_to(seq), "skip to {seq}");
                if got.is_ok() {
                    m.pending.clear();
                    m.records = vec![Rec::Skip(seq)];
                }
            }
            FileOp::Retain { keep, from_back } => {
                let r = Retention {
                    max_events: Some(u64::from(keep)),
                    ..Retention::default()
                };
                let keep_from = next.saturating_sub(u64::from(from_back));
                let now = Instant::from_millis(clock);
                assert_eq!(
                    log.apply_retention(&r, now, keep_from),
                    m.reference.apply_retention(&r, now, keep_from),
                    "events retention drops"
                );
                // An input writes at most 256 records of at most 97 bytes, far below the
                // 1 MiB of dead records that starts a compaction: the file is unchanged.
                assert_eq!(log.stats().compactions, 0);
            }
            FileOp::Persist { new_term, vote } => {
                term += u64::from(new_term);
                let state = HardState {
                    term,
                    voted_for: vote.map(|v| NodeId([v; 16])),
                };
                let _ = log.persist(next, state);
                m.flush();
                m.state = state;
                assert_eq!(log.hard_state(), state);
            }
            FileOp::Crash(damage) => {
                drop(log);
                log = reopen(&mut m, &dir, &damage);
                reopens.push(log.stats());
                continue;
            }
        }
        same(&log, &m.reference, "after an operation");
    }
    // A clean reopen finds the same log and cuts nothing.
    drop(log);
    let log = reopen(&mut m, &dir, &Damage::None);
    assert_eq!(log.stats().torn_bytes, 0);
    reopens.push(log.stats());
    reopens
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model is not vacuous: the reopen check fails on a file log that loses the newest
    /// events (here, a file cut one record short behind the log's back).
    #[test]
    fn the_model_catches_a_lost_record() {
        let dir = Dir::new();
        let cfg = FileLogConfig {
            policy: FsyncPolicy::Never,
            max_events: 8,
            max_event_bytes: 8,
        };
        let mut log = FileLog::open(&dir.0, cfg).unwrap();
        let mut reference = MemLog::new(8, 8);
        let mut records = Vec::new();
        for seq in 0..3u64 {
            let at = Instant::from_millis(seq);
            log.append(seq, 1, at, b"ab").unwrap();
            reference.append(seq, 1, at, b"ab").unwrap();
            records.push(Rec::Event {
                seq,
                term: 1,
                at,
                payload: b"ab".to_vec(),
            });
        }
        let _ = log.persist(3, HardState::default());
        drop(log);
        let mut m = Model {
            cfg,
            records,
            pending: Vec::new(),
            state: HardState::default(),
            reference,
        };
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reopen(&mut m, &dir, &Damage::None);
        }))
        .is_ok());
        // Behind the model's back, the last record goes.
        let events = dir.0.join("events");
        let bytes = std::fs::read(&events).unwrap();
        std::fs::write(&events, &bytes[..bytes.len() - EVENT_OVERHEAD - 2]).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reopen(&mut m, &dir, &Damage::None);
        }));
        assert!(caught.is_err());
    }

    #[test]
    fn every_kind_of_damage_reopens_to_the_model() {
        // A log bounded at four events: four appends of 5 bytes (38 bytes a record),
        // retention down to two (their records stay in the file, dead), two more appends and
        // a persist (six records in the file), retention to three and an append left in the
        // buffer, then a crash with the damage, and retention and an append on the reopened
        // log.
        let append = |len| FileOp::Append {
            len,
            new_term: false,
        };
        let retain = |keep| FileOp::Retain { keep, from_back: 0 };
        let with = |damage: Damage| {
            let mut ops: Vec<FileOp> = (0..4).map(|_| append(5)).collect();
            ops.extend([retain(2), append(5), append(5)]);
            ops.push(FileOp::Persist {
                new_term: true,
                vote: Some(7),
            });
            ops.extend([
                retain(3),
                append(5),
                FileOp::Crash(damage),
                retain(2),
                append(3),
            ]);
            run(4, 16, ops)
        };
        // Six records for a bound of four: two age out on every reopen.
        let s = with(Damage::None);
        assert_eq!((s[0].torn_bytes, s[0].aged_on_open), (0, 2));
        // Half of the last record torn off: five events remain, four kept.
        let s = with(Damage::Tear(19));
        assert_eq!((s[0].torn_bytes, s[0].aged_on_open), (19, 1));
        // A flip in the third record: two events remain.
        let s = with(Damage::Flip { at: 80, mask: 0x10 });
        assert_eq!((s[0].torn_bytes, s[0].aged_on_open), (228 - 76, 0));
        let s = with(Damage::Garbage(vec![0xE1, 1, 2, 3]));
        assert_eq!(s[0].torn_bytes, 4);
        let s = with(Damage::StateFlip { at: 3, mask: 1 });
        assert_eq!(s[0].torn_bytes, 0);
        let s = with(Damage::StaleStateAside(vec![0x53; 7]));
        assert_eq!(s[0].torn_bytes, 0);
        // On the reopened log (full: four events) the append is refused and retention
        // drops two from memory; the final clean reopen finds all six records in the file
        // and ages the oldest out again.
        assert_eq!((s[1].torn_bytes, s[1].aged_on_open), (0, 2), "{s:?}");
    }
}
