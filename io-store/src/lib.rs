//! Storage for the Net drivers: [`FileLog`], a replicated-log store on files with an fsync
//! policy.
//!
//! This crate owns the on-disk layout of a log (`docs/wire.md` section 15) and when it is
//! synced. It is the std layer under the drivers (`io-tokio`, `io-smol` and applications with
//! their own loop): the core ([`proto_core::replication`]) asks a store to persist and never
//! touches a file; this store does, synchronously, inside [`LogStore::persist`], or, after
//! [`FileLog::background_syncs`], by queuing the sync for another thread and answering
//! [`Sync::Later`] (the async drivers run the queue on a thread of its own with
//! `io_async::Log::serve_persistence`, so the drive loop never waits for the disk).
//!
//! A log is a directory with two files: `events`, an append-only sequence of checksummed
//! records (an event, or a skip-ahead marker), and `state`, the term and vote, replaced
//! atomically (written aside, synced by the policy, renamed). The retained events are also
//! held in memory for reads, so a log's memory is bounded by its retention. On open, a torn or
//! corrupt tail of `events` (a crash in the middle of a write) is cut off; a corrupt `state`
//! is an error, because forgetting a vote could let this node vote twice. Whole records are
//! never cut: records that retention had dropped but the file still holds age out again,
//! oldest first, when there are more than `max_events`, and an event larger than
//! `max_event_bytes` (a log reopened with a smaller limit) is an error.
//!
//! Only [`FsyncPolicy::Always`] gives the guarantees `docs/replication.md` argues from (a
//! write acknowledged on a majority survives any minority of crashes, one vote per term). The
//! other policies trade them for throughput, as the seed system's do: what they acknowledge
//! may be lost if the machine (not just the process) fails before the next sync.
//!
//! A sync that fails is never reported done: the log stops acknowledging and voting
//! (fail-stop; a retry after a failed fsync can claim durability the disk no longer has), and
//! [`FileLog::last_error`] says why.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use proto_core::replication::store::{Event, HardState, LogStore, MemLog, Retention, StoreError};
use proto_core::replication::Sync;
use proto_core::{Instant, NodeId};

/// Record type of an event.
const EVENT: u8 = 0xE1;
/// Record type of a skip-ahead: the log continues at `seq`.
const SKIP: u8 = 0xE2;
/// Type byte of the state file.
const STATE: u8 = 0x53;
/// An event record without its payload: type, seq, term, at, len, and the checksum.
pub const EVENT_OVERHEAD: usize = 1 + 8 + 8 + 8 + 4 + 4;
/// A skip record: type, seq, checksum.
pub const SKIP_LEN: usize = 1 + 8 + 4;
/// The state file: type, term, has-vote, vote, checksum.
pub const STATE_LEN: usize = 1 + 8 + 1 + 16 + 4;
/// Buffered record bytes beyond which an append writes them out before the next persist.
const WRITE_BUFFER: usize = 256 << 10;
/// Dead bytes (records before the first retained event) beyond which, once they are also
/// half the file, the file is rewritten without them.
const COMPACT_AFTER: u64 = 1 << 20;

/// When the events and the state are synced to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// On every persist: what is acknowledged is on the disk.
    Always,
    /// On every `n`th persist (and the state whenever it changes with one of them).
    EveryN(u32),
    /// When the last sync is at least this old.
    Interval(Duration),
    /// Never: the operating system writes back when it likes.
    Never,
}

/// How a [`FileLog`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLogConfig {
    /// When to sync.
    pub policy: FsyncPolicy,
    /// Events held at most (the in-memory bound; retention keeps the log under it).
    pub max_events: usize,
    /// The largest event accepted.
    pub max_event_bytes: usize,
}

impl Default for FileLogConfig {
    fn default() -> Self {
        FileLogConfig {
            policy: FsyncPolicy::Always,
            max_events: 1 << 20,
            max_event_bytes: 1 << 20,
        }
    }
}

/// Counters of a [`FileLog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileLogStats {
    /// Persist requests.
    pub persists: u64,
    /// `fsync`s of the events file.
    pub syncs: u64,
    /// Rewrites of the state file.
    pub state_writes: u64,
    /// Rewrites of the events file without its dead prefix.
    pub compactions: u64,
    /// Bytes cut off a torn or corrupt tail when the log was opened.
    pub torn_bytes: u64,
    /// Events aged out, oldest first, when the log was opened: records that retention had
    /// already dropped from memory but that were still in the file (it is compacted only
    /// once they are many), beyond what `max_events` holds.
    pub aged_on_open: u64,
}

/// A replicated-log store on files (see the crate docs).
#[derive(Debug)]
pub struct FileLog {
    dir: PathBuf,
    cfg: FileLogConfig,
    mem: MemLog,
    file: File,
    /// Bytes in the file, and records not written to it yet.
    len: u64,
    buffer: Vec<u8>,
    /// The file offset of each retained event's record.
    offsets: VecDeque<u64>,
    state: HardState,
    last_sync: WallInstant,
    error: Option<io::Error>,
    stats: FileLogStats,
    /// Set by [`FileLog::background_syncs`]: syncs are queued here instead of done in place.
    background: Option<Syncs>,
}

/// The syncs a [`FileLog`] in background mode leaves for another thread: each
/// [`Sync::Later`] it answered queued one [`SyncJob`]. Run them in order, off the thread
/// that drives the node, then report the ticket the node asked with
/// (`Node::log_persisted`, or `io_async::Log::persisted`).
#[derive(Debug, Clone, Default)]
pub struct Syncs {
    inner: std::sync::Arc<std::sync::Mutex<SyncsInner>>,
}

#[derive(Debug, Default)]
struct SyncsInner {
    jobs: VecDeque<SyncJob>,
    failed: bool,
    completed: u64,
}

/// One deferred sync: the events file's data, and the state file when it changed.
#[derive(Debug)]
pub struct SyncJob {
    events: File,
    state: Option<(PathBuf, HardState)>,
}

impl SyncJob {
    /// Makes the job's events and state durable (`fdatasync` of the events file; the state
    /// written aside, synced, renamed over the old one, and the directory synced).
    ///
    /// # Errors
    /// The I/O error; the log then stops acknowledging (fail-stop).
    pub fn run(self) -> io::Result<()> {
        self.events.sync_data()?;
        if let Some((dir, state)) = self.state {
            let aside = dir.join("state.new");
            let mut f = File::create(&aside)?;
            f.write_all(&encode_state(state))?;
            f.sync_all()?;
            fs::rename(&aside, dir.join("state"))?;
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Syncs {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncsInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs every queued job, in order. Call it on a thread that may block, once per
    /// persistence ticket; when it returns `Ok`, everything the ticket covers is durable.
    ///
    /// # Errors
    /// The first failure: the log is then stopped and every later persist is refused
    /// (nothing is acknowledged that is not on the disk).
    pub fn run_pending(&self) -> io::Result<usize> {
        let mut done = 0;
        loop {
            let job = {
                let mut g = self.lock();
                if g.failed {
                    return Err(io::Error::other("an earlier background sync failed"));
                }
                g.jobs.pop_front()
            };
            let Some(job) = job else {
                return Ok(done);
            };
            if let Err(e) = job.run() {
                self.lock().failed = true;
                return Err(e);
            }
            self.lock().completed += 1;
            done += 1;
        }
    }

    /// Jobs run to completion so far.
    #[must_use]
    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    /// Jobs queued and not run yet.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.lock().jobs.len()
    }
}

fn check(bytes: &[u8]) -> u32 {
    // FNV-1a: enough to tell a torn write from a whole one (not an integrity MAC).
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

fn seal(out: &mut Vec<u8>, start: usize) {
    let c = check(out.get(start..).unwrap_or(&[]));
    out.extend_from_slice(&c.to_le_bytes());
}

/// Appends an event record.
pub fn encode_event(out: &mut Vec<u8>, seq: u64, term: u64, at: Instant, payload: &[u8]) {
    let start = out.len();
    out.push(EVENT);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(&at.as_nanos().to_le_bytes());
    // Events are bounded by `max_event_bytes`, checked before encoding.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    seal(out, start);
}

/// Appends a skip record.
pub fn encode_skip(out: &mut Vec<u8>, seq: u64) {
    let start = out.len();
    out.push(SKIP);
    out.extend_from_slice(&seq.to_le_bytes());
    seal(out, start);
}

/// The state file's bytes.
#[must_use]
pub fn encode_state(s: HardState) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATE_LEN);
    out.push(STATE);
    out.extend_from_slice(&s.term.to_le_bytes());
    out.push(u8::from(s.voted_for.is_some()));
    out.extend_from_slice(&s.voted_for.map_or([0; 16], |n| n.0));
    seal(&mut out, 0);
    out
}

fn decode_state(b: &[u8]) -> Option<HardState> {
    if b.len() != STATE_LEN || b.first() != Some(&STATE) {
        return None;
    }
    let (body, sum) = b.split_at(STATE_LEN - 4);
    if check(body).to_le_bytes() != *sum {
        return None;
    }
    let term = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let vote: [u8; 16] = body.get(10..26)?.try_into().ok()?;
    let voted_for = match body.get(9)? {
        0 => None,
        1 => Some(NodeId(vote)),
        _ => return None,
    };
    Some(HardState { term, voted_for })
}

/// One record read back: the event (or the skip's sequence) and its length.
enum Record {
    Event(Event),
    Skip(u64),
}

fn decode_record(b: &[u8]) -> Option<(Record, usize)> {
    let u64_at = |i: usize| {
        b.get(i..i + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let sealed = |n: usize| -> Option<()> {
        let sum = b.get(n..n + 4)?;
        (check(b.get(..n)?).to_le_bytes() == *sum).then_some(())
    };
    match *b.first()? {
        SKIP => {
            sealed(SKIP_LEN - 4)?;
            Some((Record::Skip(u64_at(1)?), SKIP_LEN))
        }
        EVENT => {
            let len = u32::from_le_bytes(b.get(25..29)?.try_into().ok()?) as usize;
            let n = EVENT_OVERHEAD - 4 + len;
            sealed(n)?;
            let e = Event {
                seq: u64_at(1)?,
                term: u64_at(9)?,
                at: Instant::from_nanos(u64_at(17)?),
                payload: b.get(29..29 + len)?.to_vec(),
            };
            Some((Record::Event(e), n + 4))
        }
        _ => None,
    }
}

impl FileLog {
    /// Opens (or creates) the log in `dir`: its events, term and vote as last written. A torn
    /// tail is cut off (counted in `torn_bytes`); a corrupt state file is an error.
    pub fn open(dir: impl AsRef<Path>, cfg: FileLogConfig) -> io::Result<FileLog> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let state = match fs::read(dir.join("state")) {
            Ok(b) => decode_state(&b).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the log's state file is corrupt: restore it, or remove the node from the replica set",
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HardState::default(),
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("events"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut mem = MemLog::new(cfg.max_events, cfg.max_event_bytes);
        let mut offsets = VecDeque::new();
        let mut pos = 0usize;
        let mut aged = 0u64;
        while let Some((rec, used)) = bytes.get(pos..).and_then(decode_record) {
            let ok = match rec {
                Record::Skip(seq) => {
                    offsets.clear();
                    mem.skip_to(seq).is_ok()
                }
                Record::Event(e) => {
                    if e.payload.len() > cfg.max_event_bytes {
                        // A whole record, written under a larger limit: cutting the file
                        // here would destroy it and everything after it.
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "event {} holds {} bytes, more than max_event_bytes ({}): \
                                 reopen the log with the limit it was written with",
                                e.seq,
                                e.payload.len(),
                                cfg.max_event_bytes
                            ),
                        ));
                    }
                    if cfg.max_events == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "the log holds events and max_events is 0: reopen it with a limit",
                        ));
                    }
                    if mem.next_seq() - mem.first_seq() >= cfg.max_events as u64 {
                        // The file still holds records that retention dropped (it is
                        // compacted only once they are many): the oldest ages out again.
                        let keep = Retention {
                            max_events: Some((cfg.max_events as u64).saturating_sub(1)),
                            ..Retention::default()
                        };
                        let dropped = mem.apply_retention(&keep, Instant::ZERO, u64::MAX);
                        offsets.drain(..(dropped as usize).min(offsets.len()));
                        aged += dropped;
                    }
                    let ok = mem.append(e.seq, e.term, e.at, &e.payload).is_ok();
                    if ok {
                        offsets.push_back(pos as u64);
                    }
                    ok
                }
            };
            // A record out of sequence is corruption that the checksum missed: the tail from
            // it on is cut as a torn one.
            if !ok {
                break;
            }
            pos += used;
        }
        let torn = (bytes.len() - pos) as u64;
        if torn > 0 {
            file.set_len(pos as u64)?;
        }
        file.seek(SeekFrom::Start(pos as u64))?;
        Ok(FileLog {
            dir,
            cfg,
            mem,
            file,
            len: pos as u64,
            buffer: Vec::new(),
            offsets,
            state,
            last_sync: WallInstant::now(),
            error: None,
            stats: FileLogStats {
                torn_bytes: torn,
                aged_on_open: aged,
                ..FileLogStats::default()
            },
            background: None,
        })
    }

    /// Switches the log to background syncs: a persist that must sync writes its records,
    /// queues the sync in the returned [`Syncs`] and answers [`Sync::Later`], so the thread
    /// that drives the node never waits for the disk. Whoever handles the node's
    /// `PersistRequested` runs [`Syncs::run_pending`] on a blocking thread and then reports
    /// the ticket. Persists that need no sync under the policy (and change no term or vote)
    /// still answer `Done`.
    pub fn background_syncs(&mut self) -> Syncs {
        let syncs = Syncs::default();
        self.background = Some(syncs.clone());
        syncs
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> FileLogStats {
        self.stats
    }

    /// The I/O error that stopped the log, if one did.
    #[must_use]
    pub fn last_error(&self) -> Option<&io::Error> {
        self.error.as_ref()
    }

    fn fail(&mut self, e: io::Error) -> StoreError {
        self.error = Some(e);
        StoreError::Io
    }

    /// Writes the buffered records to the file.
    fn write_out(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.write_all(&self.buffer)?;
            self.len += self.buffer.len() as u64;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Cuts the file at `at` (an offset of a record boundary) and continues writing there.
    fn cut(&mut self, at: u64) -> io::Result<()> {
        self.write_out()?;
        self.file.set_len(at)?;
        self.file.seek(SeekFrom::Start(at))?;
        self.len = at;
        Ok(())
    }

    fn should_sync(&self) -> bool {
        match self.cfg.policy {
            FsyncPolicy::Always => true,
            FsyncPolicy::EveryN(n) => self.stats.persists % u64::from(n.max(1)) == 0,
            FsyncPolicy::Interval(d) => self.last_sync.elapsed() >= d,
            _ => false,
        }
    }

    fn write_state(&mut self, state: HardState, sync: bool) -> io::Result<()> {
        let aside = self.dir.join("state.new");
        let mut f = File::create(&aside)?;
        f.write_all(&encode_state(state))?;
        if sync {
            f.sync_all()?;
        }
        fs::rename(&aside, self.dir.join("state"))?;
        if sync {
            // The rename itself is durable once the directory is.
            File::open(&self.dir)?.sync_all()?;
        }
        self.stats.state_writes += 1;
        Ok(())
    }

    /// Background mode: writes, and queues the sync instead of doing it.
    fn persist_later(&mut self, syncs: &Syncs, state: HardState) -> Sync {
        if syncs.lock().failed {
            self.error = Some(io::Error::other("a background sync failed"));
            return Sync::Later;
        }
        self.stats.persists += 1;
        if let Err(e) = self.write_out() {
            self.error = Some(e);
            return Sync::Later;
        }
        let changed = state != self.state;
        // A changed term or vote always goes through the queue, so that only the sync
        // thread ever writes the state file.
        if !changed && !self.should_sync() {
            return Sync::Done;
        }
        let events = match self.file.try_clone() {
            Ok(f) => f,
            Err(e) => {
                self.error = Some(e);
                return Sync::Later;
            }
        };
        if changed {
            self.state = state;
            self.stats.state_writes += 1;
        }
        self.stats.syncs += 1;
        self.last_sync = WallInstant::now();
        syncs.lock().jobs.push_back(SyncJob {
            events,
            state: changed.then(|| (self.dir.clone(), state)),
        });
        Sync::Later
    }

    fn persist_io(&mut self, state: HardState) -> io::Result<()> {
        self.stats.persists += 1;
        let sync = self.should_sync();
        self.write_out()?;
        if sync {
            self.file.sync_data()?;
            self.stats.syncs += 1;
            self.last_sync = WallInstant::now();
        }
        if state != self.state {
            self.write_state(state, sync)?;
            self.state = state;
        }
        Ok(())
    }

    /// Rewrites the events file without the records before the first retained event, once
    /// they are many and half the file.
    fn compact(&mut self) -> io::Result<()> {
        let dead = self
            .offsets
            .front()
            .copied()
            .unwrap_or(self.len + self.buffer.len() as u64);
        if dead < COMPACT_AFTER || dead * 2 < self.len {
            return Ok(());
        }
        self.write_out()?;
        let mut rest = Vec::new();
        self.file.seek(SeekFrom::Start(dead))?;
        self.file.read_to_end(&mut rest)?;
        let mut out = Vec::with_capacity(SKIP_LEN + rest.len());
        encode_skip(&mut out, self.mem.first_seq());
        out.extend_from_slice(&rest);
        let aside = self.dir.join("events.new");
        let mut f = File::create(&aside)?;
        f.write_all(&out)?;
        f.sync_all()?;
        fs::rename(&aside, self.dir.join("events"))?;
        File::open(&self.dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join("events"))?;
        self.file.seek(SeekFrom::End(0))?;
        self.len = out.len() as u64;
        let shift = dead - SKIP_LEN as u64;
        for o in &mut self.offsets {
            *o -= shift;
        }
        self.stats.compactions += 1;
        Ok(())
    }
}

impl LogStore for FileLog {
    fn append(
        &mut self,
        seq: u64,
        term: u64,
        at: Instant,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        if self.error.is_some() {
            return Err(StoreError::Io);
        }
        self.mem.append(seq, term, at, payload)?;
        self.offsets.push_back(self.len + self.buffer.len() as u64);
        encode_event(&mut self.buffer, seq, term, at, payload);
        if self.buffer.len() >= WRITE_BUFFER {
            if let Err(e) = self.write_out() {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    fn term_at(&self, seq: u64) -> Option<u64> {
        self.mem.term_at(seq)
    }

    fn read(&self, from: u64, max_events: usize, max_bytes: usize) -> Vec<Event> {
        self.mem.read(from, max_events, max_bytes)
    }

    fn first_seq(&self) -> u64 {
        self.mem.first_seq()
    }

    fn next_seq(&self) -> u64 {
        self.mem.next_seq()
    }

    fn skip_to(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq < self.mem.next_seq() {
            return Err(StoreError::BadRange);
        }
        let mut rec = Vec::with_capacity(SKIP_LEN);
        encode_skip(&mut rec, seq);
        let r = self.cut(0).and_then(|()| {
            self.buffer.extend_from_slice(&rec);
            self.write_out()
        });
        if let Err(e) = r {
            return Err(self.fail(e));
        }
        self.offsets.clear();
        self.mem.skip_to(seq)
    }

    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        let i = from
            .checked_sub(self.mem.first_seq())
            .and_then(|i| usize::try_from(i).ok())
            .filter(|_| from <= self.mem.next_seq())
            .ok_or(StoreError::BadRange)?;
        let at = self
            .offsets
            .get(i)
            .copied()
            .unwrap_or(self.len + self.buffer.len() as u64);
        if let Err(e) = self.cut(at) {
            return Err(self.fail(e));
        }
        self.offsets.truncate(i);
        self.mem.truncate_from(from)
    }

    fn apply_retention(&mut self, retention: &Retention, now: Instant, keep_from: u64) -> u64 {
        let dropped = self.mem.apply_retention(retention, now, keep_from);
        self.offsets
            .drain(..(dropped as usize).min(self.offsets.len()));
        if dropped > 0 {
            if let Err(e) = self.compact() {
                self.error = Some(e);
            }
        }
        dropped
    }

    fn bytes(&self) -> u64 {
        self.mem.bytes()
    }

    fn persist(&mut self, _upto: u64, state: HardState) -> Sync {
        if self.error.is_some() {
            return Sync::Later;
        }
        if let Some(syncs) = self.background.clone() {
            return self.persist_later(&syncs, state);
        }
        match self.persist_io(state) {
            Ok(()) => Sync::Done,
            Err(e) => {
                // Never reported done: the log stops acknowledging (fail-stop).
                self.error = Some(e);
                Sync::Later
            }
        }
    }

    fn hard_state(&self) -> HardState {
        self.state
    }
}
