//! The file-backed log: what it writes survives a reopen, truncation and skip-ahead are
//! durable, a torn tail is cut off, the fsync policy is followed, retention compacts, and a
//! `Node` runs a log on it across a close and a reopen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use io_store::{encode_event, encode_skip, encode_state, FileLog, FileLogConfig, FsyncPolicy};
use proto_core::replication::store::{HardState, LogStore, Retention};
use proto_core::replication::{
    Durability, LogEvent, LogSpec, Placement, ReplicationConfig, Role, Sync,
};
use proto_core::{Config, Event, Identity, Instant, Node, NodeId, Seed};

/// A fresh directory under the system's temporary one, removed when dropped.
struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Tmp {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Tmp {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "io-store-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    Tmp(d)
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn payloads(l: &FileLog) -> Vec<Vec<u8>> {
    l.read(l.first_seq(), usize::MAX, usize::MAX)
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

#[test]
fn the_record_layouts_are_pinned() {
    let mut out = Vec::new();
    encode_event(&mut out, 1, 2, Instant::from_nanos(3), b"ab");
    assert_eq!(
        &out[..out.len() - 4],
        &[
            0xE1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0,
            0, b'a', b'b'
        ]
    );
    assert_eq!(out.len(), io_store::EVENT_OVERHEAD + 2);
    let mut skip = Vec::new();
    encode_skip(&mut skip, 7);
    assert_eq!(&skip[..9], &[0xE2, 7, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(skip.len(), io_store::SKIP_LEN);
    let s = encode_state(HardState {
        term: 5,
        voted_for: Some(NodeId([9; 16])),
    });
    assert_eq!(&s[..10], &[0x53, 5, 0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&s[10..26], &[9; 16]);
    assert_eq!(s.len(), io_store::STATE_LEN);
    // The checksum is FNV-1a over the record before it.
    let fnv = |b: &[u8]| {
        b.iter().fold(0x811c_9dc5u32, |h, x| {
            (h ^ u32::from(*x)).wrapping_mul(0x0100_0193)
        })
    };
    assert_eq!(skip[9..], fnv(&skip[..9]).to_le_bytes());
}

#[test]
fn events_terms_and_the_vote_survive_a_reopen() {
    let d = dir("reopen");
    let state = HardState {
        term: 4,
        voted_for: Some(NodeId([3; 16])),
    };
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        for i in 0..5u64 {
            l.append(i, 1 + i / 3, t(i), &[i as u8; 10]).unwrap();
        }
        assert_eq!(l.persist(5, state), Sync::Done);
        // Appended but never persisted: written out on drop at the OS's leisure, not promised.
    }
    let l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!((l.first_seq(), l.next_seq()), (0, 5));
    assert_eq!(l.term_at(4), Some(2));
    assert_eq!(l.hard_state(), state);
    assert_eq!(payloads(&l)[3], vec![3u8; 10]);
    assert_eq!(l.stats().torn_bytes, 0);
}

#[test]
fn truncation_and_skip_ahead_are_durable() {
    let d = dir("cut");
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        for i in 0..6u64 {
            l.append(i, 1, t(0), b"x").unwrap();
        }
        l.truncate_from(4).unwrap();
        l.append(4, 2, t(0), b"y").unwrap();
        assert_eq!(l.persist(5, HardState::default()), Sync::Done);
    }
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        assert_eq!(l.next_seq(), 5);
        assert_eq!((l.term_at(3), l.term_at(4)), (Some(1), Some(2)));
        assert_eq!(
            l.truncate_from(9),
            Err(proto_core::replication::StoreError::BadRange)
        );
        l.skip_to(100).unwrap();
        l.append(100, 3, t(0), b"z").unwrap();
        assert_eq!(l.persist(101, HardState::default()), Sync::Done);
    }
    let l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!((l.first_seq(), l.next_seq()), (100, 101));
    assert_eq!(payloads(&l), [b"z".to_vec()]);
}

#[test]
fn a_torn_tail_is_cut_off_and_a_corrupt_state_refused() {
    let d = dir("torn");
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        for i in 0..3u64 {
            l.append(i, 1, t(0), b"abc").unwrap();
        }
        assert_eq!(l.persist(3, HardState::default()), Sync::Done);
    }
    // A crash in the middle of the fourth record's write.
    let mut partial = Vec::new();
    encode_event(&mut partial, 3, 1, t(0), b"abc");
    let events = d.join("events");
    let mut bytes = std::fs::read(&events).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&partial[..partial.len() - 3]);
    std::fs::write(&events, &bytes).unwrap();
    let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!(l.next_seq(), 3);
    assert_eq!(l.stats().torn_bytes as usize, partial.len() - 3);
    assert_eq!(std::fs::metadata(&events).unwrap().len() as usize, whole);
    // It continues after the last whole record.
    l.append(3, 1, t(0), b"def").unwrap();
    assert_eq!(l.persist(4, HardState::default()), Sync::Done);
    drop(l);
    assert_eq!(
        FileLog::open(&d, FileLogConfig::default())
            .unwrap()
            .next_seq(),
        4
    );
    // A flipped byte in the state file is an error, never a forgotten vote.
    let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!(
        l.persist(
            4,
            HardState {
                term: 2,
                voted_for: None
            }
        ),
        Sync::Done
    );
    drop(l);
    let mut s = std::fs::read(d.join("state")).unwrap();
    s[3] ^= 1;
    std::fs::write(d.join("state"), &s).unwrap();
    let e = FileLog::open(&d, FileLogConfig::default()).unwrap_err();
    assert!(e.to_string().contains("state file is corrupt"), "{e}");
}

#[test]
fn a_reopen_keeps_the_newest_events_when_retention_left_dead_records_in_the_file() {
    let d = dir("dead");
    let cfg = FileLogConfig {
        max_events: 100,
        ..FileLogConfig::default()
    };
    let keep = Retention {
        max_events: Some(50),
        ..Retention::default()
    };
    {
        let mut l = FileLog::open(&d, cfg).unwrap();
        for i in 0..100u64 {
            l.append(i, 1, t(i), &i.to_le_bytes()).unwrap();
        }
        // Retention drops the oldest 50 from memory; the file is too small to compact, so
        // their records stay in it, dead.
        assert_eq!(l.apply_retention(&keep, t(0), 100), 50);
        assert_eq!(l.stats().compactions, 0);
        for i in 100..150u64 {
            l.append(i, 2, t(i), &i.to_le_bytes()).unwrap();
        }
        assert_eq!(l.persist(150, HardState::default()), Sync::Done);
    }
    // The file holds 150 records for a log bounded at 100: the reopen ages the oldest out
    // as retention did, and never cuts the newest (acknowledged, maybe uncommitted) ones.
    let l = FileLog::open(&d, cfg).unwrap();
    assert_eq!((l.first_seq(), l.next_seq()), (50, 150));
    assert_eq!(l.term_at(149), Some(2));
    assert_eq!(l.stats().torn_bytes, 0);
    assert_eq!(l.stats().aged_on_open, 50);
    drop(l);
    let l = FileLog::open(&d, cfg).unwrap();
    assert_eq!(l.next_seq(), 150);
    assert_eq!(l.read(149, 1, 8)[0].payload, 149u64.to_le_bytes());
}

#[test]
fn a_reopen_with_a_smaller_event_limit_is_refused_and_destroys_nothing() {
    let d = dir("limit");
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        l.append(0, 1, t(0), b"small").unwrap();
        l.append(1, 1, t(0), &[9u8; 4096]).unwrap();
        l.append(2, 1, t(0), b"after").unwrap();
        assert_eq!(l.persist(3, HardState::default()), Sync::Done);
    }
    let events = d.join("events");
    let len = std::fs::metadata(&events).unwrap().len();
    let small = FileLogConfig {
        max_event_bytes: 1024,
        ..FileLogConfig::default()
    };
    let e = FileLog::open(&d, small).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("max_event_bytes"), "{e}");
    assert_eq!(std::fs::metadata(&events).unwrap().len(), len);
    let l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!(l.next_seq(), 3);
}

#[test]
fn the_fsync_policy_decides_when_to_sync() {
    let run = |policy| {
        let d = dir("policy");
        let mut l = FileLog::open(
            &d,
            FileLogConfig {
                policy,
                ..FileLogConfig::default()
            },
        )
        .unwrap();
        for i in 0..9u64 {
            l.append(i, 1, t(0), b"e").unwrap();
            assert_eq!(l.persist(i + 1, HardState::default()), Sync::Done);
        }
        l.stats()
    };
    assert_eq!(run(FsyncPolicy::Always).syncs, 9);
    assert_eq!(run(FsyncPolicy::EveryN(3)).syncs, 3);
    assert_eq!(run(FsyncPolicy::Never).syncs, 0);
    assert_eq!(
        run(FsyncPolicy::Interval(Duration::from_secs(3600))).syncs,
        0
    );
    assert_eq!(run(FsyncPolicy::Interval(Duration::ZERO)).syncs, 9);
    assert_eq!(run(FsyncPolicy::Never).persists, 9);
}

#[test]
fn retention_compacts_the_file_and_a_reopen_starts_at_the_first_kept_event() {
    let d = dir("compact");
    let big = vec![7u8; 4096];
    {
        let mut l = FileLog::open(&d, FileLogConfig::default()).unwrap();
        for i in 0..1000u64 {
            l.append(i, 1, t(i), &big).unwrap();
        }
        assert_eq!(l.persist(1000, HardState::default()), Sync::Done);
        let keep = Retention {
            max_events: Some(100),
            ..Retention::default()
        };
        // Only events below `keep_from` may go.
        assert_eq!(l.apply_retention(&keep, t(0), 850), 850);
        assert_eq!(l.first_seq(), 850);
        assert_eq!(l.stats().compactions, 1);
        let len = std::fs::metadata(d.join("events")).unwrap().len() as usize;
        assert_eq!(
            len,
            io_store::SKIP_LEN + 150 * (io_store::EVENT_OVERHEAD + 4096)
        );
        // Writes after a compaction land in the new file.
        l.append(1000, 2, t(0), b"after").unwrap();
        l.truncate_from(1000).unwrap();
        l.append(1000, 3, t(0), b"again").unwrap();
        assert_eq!(l.persist(1001, HardState::default()), Sync::Done);
    }
    let l = FileLog::open(&d, FileLogConfig::default()).unwrap();
    assert_eq!((l.first_seq(), l.next_seq()), (850, 1001));
    assert_eq!(l.term_at(1000), Some(3));
    assert_eq!(l.read(1000, 1, 100)[0].payload, b"again");
}

#[test]
fn a_node_runs_a_log_on_files_across_a_close_and_a_reopen() {
    let d = dir("node");
    let mut c = Config::new(Seed::from_u64(1));
    c.strict_drain = false;
    let id = Identity::from_seed(&Seed::from_u64(2));
    let mut node = Node::new(c, id.clone(), Instant::ZERO).unwrap();
    let me = node.node_id();
    let cfg = ReplicationConfig {
        factor: 1,
        placement: Placement::Pinned(vec![me]),
        ..ReplicationConfig::default()
    };
    let open = |node: &mut Node, now| {
        let store = FileLog::open(&d, FileLogConfig::default()).unwrap();
        node.open_log(now, "ledger", LogSpec::new(cfg.clone(), Box::new(store)))
            .unwrap()
    };
    let log = open(&mut node, Instant::ZERO);
    let mut now = Instant::ZERO;
    while node.log_status(log).unwrap().role != Role::Leader {
        now = node.poll_timeout().unwrap().at;
        node.handle_timeout(now).unwrap();
        assert!(now < t(10_000), "a single-node log elects itself");
    }
    for i in 0..10u8 {
        node.log_append(now, log, &[i], Durability::Local).unwrap();
    }
    let acked = std::iter::from_fn(|| node.poll_event())
        .filter(|e| matches!(e, Event::Log(LogEvent::Acked { .. })))
        .count();
    assert_eq!(acked, 10);
    let term = node.log_status(log).unwrap().term;
    drop(node.close_log(now, log).unwrap());
    // A new node process over the same directory: the events, and the term it led.
    let mut node = Node::new(Config::new(Seed::from_u64(3)), id, now).unwrap();
    let log = open(&mut node, now);
    let s = node.log_status(log).unwrap();
    assert_eq!((s.next_seq, s.term), (10, term));
}

#[test]
fn background_syncs_answer_later_and_make_the_write_durable_when_run() {
    let d = dir("background");
    let vote = HardState {
        term: 3,
        voted_for: None,
    };
    {
        let mut log = FileLog::open(&d, FileLogConfig::default()).expect("open");
        let syncs = log.background_syncs();
        log.append(0, 3, Instant::ZERO, b"deferred")
            .expect("append");
        assert_eq!(
            log.persist(1, vote),
            Sync::Later,
            "the sync is left to another thread"
        );
        assert_eq!(syncs.queued(), 1);
        assert_eq!(syncs.run_pending().expect("sync"), 1);
        assert_eq!((syncs.queued(), syncs.completed()), (0, 1));
        // Nothing new: under Always a persist still syncs, but no state is rewritten.
        assert_eq!(log.persist(1, vote), Sync::Later);
        assert_eq!(syncs.run_pending().expect("sync"), 1);
    }
    let log = FileLog::open(&d, FileLogConfig::default()).expect("reopen");
    assert_eq!(log.next_seq(), 1);
    assert_eq!(
        log.hard_state(),
        vote,
        "the state file was written by the sync"
    );
    assert_eq!(log.read(0, 1, 1 << 10)[0].payload, b"deferred");
}
