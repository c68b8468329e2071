//! The logs of one node: opening by name with placement, the persistence gate, tail reads,
//! status and metrics, as one sans-IO table the [`crate::Node`] drives.
//!
//! It owns every [`LogReplica`] of the node with its store, the per-log persistence tickets and
//! the messages held behind them, the queue of messages to peers and the queue of
//! [`LogEvent`]s. It never touches a stream or a session (the node carries its messages, see
//! `node/logs.rs`) and never reads a clock.
//!
//! Persistence: after every input the replica's `Persist` requests go to its store
//! ([`LogStore::persist`]). A store that is durable at once lets the replica continue there and
//! then; one that syncs elsewhere gets a ticket ([`LogEvent::PersistRequested`]) and the driver
//! reports it done with `Node::log_persisted`. One ticket per log is outstanding at a time
//! (later requests are merged into the next one: group commit), and every message the replica
//! produced after the request is held until the ticket is done, because the term and vote must
//! be durable before a vote or an acknowledgement leaves.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use super::config::{Placement, ReplicationConfig, ReplicationConfigError};
use super::machine::{AppendError, Durability, LogReplica, Output};
use super::metrics::{LogMetrics, Registry, MAX_REGISTERED_LOGS};
use super::role::Role;
use super::store::{Event, LogStore, Retention, StoreError, Sync};
use crate::identity::NodeId;
use crate::time::Instant;
use crate::wire::sync as ws;

/// Messages one log holds behind an outstanding persistence ticket; older ones are dropped
/// first (the protocol repeats what matters: requests, heartbeats, votes on retry).
pub const MAX_HELD: usize = 1024;

/// A log's id on the wire: a 64-bit FNV-1a hash of its name, so every node derives the same id
/// from the same name with no coordination. Two names with one id on a node are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId(pub u64);

impl LogId {
    /// The id of the log called `name`.
    #[must_use]
    pub fn from_name(name: &str) -> LogId {
        LogId(fnv1a(name.as_bytes(), 0xcbf2_9ce4_8422_2325))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What to open a log with.
pub struct LogSpec {
    /// The replication settings (validated; a reopen must repeat them).
    pub config: ReplicationConfig,
    /// The nodes placement chooses among (`Standard`) or that hold the colocated data
    /// (`ColocationStrict`); ignored for `Pinned`. This node is always a candidate.
    pub candidates: Vec<NodeId>,
    /// What ages out of the log (only committed events ever do).
    pub retention: Retention,
    /// The link capacity, bytes per second, that catch-up takes its budget share of.
    pub link_rate: u64,
    /// The log's storage, holding what it persisted before (events, term and vote).
    pub store: Box<dyn LogStore + Send>,
}

impl LogSpec {
    /// A spec with `config` over `store`, no candidates, no retention, a 1 Gbit/s link.
    #[must_use]
    pub fn new(config: ReplicationConfig, store: Box<dyn LogStore + Send>) -> LogSpec {
        LogSpec {
            config,
            candidates: Vec::new(),
            retention: Retention::default(),
            link_rate: 125_000_000,
            store,
        }
    }

    /// The nodes placement chooses among.
    #[must_use]
    pub fn with_candidates(mut self, candidates: Vec<NodeId>) -> LogSpec {
        self.candidates = candidates;
        self
    }

    /// What ages out.
    #[must_use]
    pub fn with_retention(mut self, retention: Retention) -> LogSpec {
        self.retention = retention;
        self
    }
}

impl fmt::Debug for LogSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSpec")
            .field("config", &self.config)
            .field("candidates", &self.candidates.len())
            .field("retention", &self.retention)
            .field("link_rate", &self.link_rate)
            .field("stored", &self.store.next_seq())
            .finish()
    }
}

/// A log operation refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The config breaks a bound, or a reopen gave a different one.
    Config(ReplicationConfigError),
    /// No log of this id is open here.
    Unknown(LogId),
    /// Another name already holds this id on this node (a hash collision: rename one).
    NameCollision {
        /// The name that holds it.
        existing: Arc<str>,
    },
    /// Placement did not choose this node: these nodes hold the log.
    NotPlaced {
        /// The replica set placement chose.
        replicas: Vec<NodeId>,
    },
    /// Placement needs `need` candidates (this node included) and had `have`.
    TooFewCandidates {
        /// Candidates offered.
        have: usize,
        /// The factor.
        need: usize,
    },
    /// This node does not lead the log; `leader` is who it believes does.
    NotLeader {
        /// The believed leader.
        leader: Option<NodeId>,
    },
    /// The store refused.
    Store(StoreError),
    /// An empty payload (empty events are the term markers new leaders write).
    EmptyPayload,
    /// The node holds [`MAX_REGISTERED_LOGS`] logs already.
    TooManyLogs,
    /// A batch append stopped part-way: `appended` went in (and will be acknowledged as
    /// usual), the next was refused for `cause`.
    Partial {
        /// The sequences appended.
        appended: core::ops::Range<u64>,
        /// Why the next one was refused.
        cause: StoreError,
    },
    /// `log_persisted` named a ticket that was never issued.
    UnknownTicket {
        /// The ticket given.
        ticket: u64,
        /// The latest issued.
        issued: u64,
    },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Config(e) => write!(f, "replication config refused: {e:?}"),
            LogError::Unknown(id) => write!(f, "no log {id} is open on this node: open_log it first"),
            LogError::NameCollision { existing } => write!(
                f,
                "the log id is already taken by {existing:?} on this node: choose another name"
            ),
            LogError::NotPlaced { replicas } => write!(
                f,
                "placement chose {} other nodes for this log: open it on one of them",
                replicas.len()
            ),
            LogError::TooFewCandidates { have, need } => write!(
                f,
                "placement needs {need} candidate nodes and was given {have}: list more, or lower the factor"
            ),
            LogError::NotLeader { leader: Some(l) } => {
                write!(f, "this node does not lead the log: append on {l}")
            }
            LogError::NotLeader { leader: None } => {
                f.write_str("the log has no leader right now: retry after its next election")
            }
            LogError::Store(e) => write!(f, "log store: {e}"),
            LogError::EmptyPayload => f.write_str(
                "an event needs a payload: empty events are the term markers a new leader writes",
            ),
            LogError::Partial { appended, cause } => write!(
                f,
                "appended {} of the batch (up to sequence {}); the next was refused: {cause}",
                appended.end - appended.start,
                appended.end
            ),
            LogError::TooManyLogs => write!(
                f,
                "this node holds {MAX_REGISTERED_LOGS} logs already: close one first"
            ),
            LogError::UnknownTicket { ticket, issued } => write!(
                f,
                "persistence ticket {ticket} was never issued (latest {issued}): pass the ticket of a PersistRequested event"
            ),
        }
    }
}

impl From<AppendError> for LogError {
    fn from(e: AppendError) -> LogError {
        match e {
            AppendError::NotLeader { leader } => LogError::NotLeader { leader },
            AppendError::Store(s) => LogError::Store(s),
            AppendError::Empty => LogError::EmptyPayload,
        }
    }
}

/// Something happened to a log, pulled with `Node::poll_event`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogEvent {
    /// An append is durable as its mode asked.
    Acked {
        /// The log.
        log: LogId,
        /// The append's sequence.
        seq: u64,
    },
    /// This node stopped leading before the append was acknowledged: it may or may not
    /// survive. Retry idempotently, or read the log to find out.
    Abandoned {
        /// The log.
        log: LogId,
        /// The append's sequence.
        seq: u64,
    },
    /// The role, term or leader changed.
    Role {
        /// The log.
        log: LogId,
        /// This node's role now.
        role: Role,
        /// The term.
        term: u64,
        /// Who leads, if known.
        leader: Option<NodeId>,
    },
    /// Events below `upto` are committed: a tail may read them (`Node::log_read`).
    Committed {
        /// The log.
        log: LogId,
        /// The commit point.
        upto: u64,
    },
    /// The store asked for a sync it does ([`Sync::Later`]): make its events below `upto` and
    /// its term and vote durable, then call `Node::log_persisted` with `ticket`.
    PersistRequested {
        /// The log.
        log: LogId,
        /// Pass back when done.
        ticket: u64,
        /// Events below this.
        upto: u64,
    },
}

/// A snapshot of one log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStatus {
    /// Its name.
    pub name: Arc<str>,
    /// Its id.
    pub id: LogId,
    /// This node's role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// Who leads, if known.
    pub leader: Option<NodeId>,
    /// The replica set.
    pub members: Vec<NodeId>,
    /// Events below this are committed.
    pub commit: u64,
    /// The first retained event.
    pub first_seq: u64,
    /// The sequence of the next append (the tail).
    pub next_seq: u64,
    /// A persistence ticket is outstanding.
    pub persisting: bool,
    /// Counters and gauges.
    pub metrics: LogMetrics,
}

/// Messages the log layer refused, for the whole node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogHostStats {
    /// Messages too short to name a log, or framed badly on a log stream.
    pub malformed: u64,
    /// Messages for a log this node does not hold.
    pub unknown_log: u64,
    /// Messages dropped because a peer had no session or its send buffer was full.
    pub send_dropped: u64,
    /// Held messages dropped because a log's hold queue was full.
    pub held_dropped: u64,
}

struct Hosted {
    name: Arc<str>,
    retention: Retention,
    /// Its entry in the timer index.
    due: Option<Instant>,
    replica: LogReplica<Box<dyn LogStore + Send>>,
    /// Tickets issued and completed; messages are held while they differ.
    issued: u64,
    done: u64,
    /// The `upto` of the outstanding ticket, and a merged request waiting for it.
    outstanding: u64,
    wanted: Option<u64>,
    held: VecDeque<(NodeId, Vec<u8>)>,
    reported: (Role, u64, Option<NodeId>, u64),
}

/// The node's logs.
#[derive(Default)]
pub(crate) struct Logs {
    logs: BTreeMap<LogId, Hosted>,
    /// When each log wants its next tick (Idle logs want none), so that the node's
    /// `poll_timeout` after every datagram looks at one entry, not every log.
    timers: BTreeSet<(Instant, LogId)>,
    /// Messages for peers, drained by the node onto their log streams.
    pub(crate) out: VecDeque<(NodeId, Vec<u8>)>,
    /// Events for the application.
    pub(crate) events: VecDeque<LogEvent>,
    pub(crate) stats: LogHostStats,
}

impl fmt::Debug for Logs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logs")
            .field("logs", &self.logs.len())
            .field("out", &self.out.len())
            .field("events", &self.events.len())
            .finish()
    }
}

/// The replica set of `name` by `placement` among `candidates` and `me`.
pub fn place(
    name: &str,
    me: NodeId,
    config: &ReplicationConfig,
    candidates: &[NodeId],
) -> Result<Vec<NodeId>, LogError> {
    let mut all: Vec<NodeId> = candidates.to_vec();
    all.push(me);
    all.sort_unstable();
    all.dedup();
    let need = usize::from(config.factor);
    let chosen = match &config.placement {
        Placement::Pinned(nodes) => nodes.clone(),
        Placement::ColocationStrict => {
            // Exactly the nodes holding the colocated data; no filter chooses among them.
            if all.len() != need {
                return Err(LogError::TooFewCandidates {
                    have: all.len(),
                    need,
                });
            }
            all
        }
        _ => {
            // Rendezvous hashing: every node with the same candidates picks the same set, and
            // adding or removing a candidate moves as few logs as possible.
            if all.len() < need {
                return Err(LogError::TooFewCandidates {
                    have: all.len(),
                    need,
                });
            }
            let seed = fnv1a(name.as_bytes(), 0xcbf2_9ce4_8422_2325);
            all.sort_by_key(|n| (core::cmp::Reverse(mix(fnv1a(&n.0, seed))), *n));
            all.truncate(need);
            all.sort_unstable();
            all
        }
    };
    if !chosen.contains(&me) {
        return Err(LogError::NotPlaced { replicas: chosen });
    }
    Ok(chosen)
}

/// A finaliser so that nearby FNV values spread (splitmix64's).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Logs {
    /// Opens `name` (or returns the open one if `spec.config` is the same).
    pub(crate) fn open(
        &mut self,
        now: Instant,
        me: NodeId,
        name: &str,
        spec: LogSpec,
    ) -> Result<LogId, LogError> {
        spec.config.validate().map_err(LogError::Config)?;
        let id = LogId::from_name(name);
        if let Some(h) = self.logs.get(&id) {
            if &*h.name != name {
                return Err(LogError::NameCollision {
                    existing: Arc::clone(&h.name),
                });
            }
            h.replica
                .config()
                .check_reopen(&spec.config)
                .map_err(LogError::Config)?;
            return Ok(id);
        }
        if self.logs.len() >= MAX_REGISTERED_LOGS {
            return Err(LogError::TooManyLogs);
        }
        let members = place(name, me, &spec.config, &spec.candidates)?;
        let hard = spec.store.hard_state();
        let mut replica = LogReplica::new(
            spec.config,
            id.0,
            me,
            members,
            spec.store,
            hard.term,
            hard.voted_for,
            spec.link_rate,
            now,
        );
        // Leave room for the framing and the stream: responses of at most 256 KiB.
        replica.set_chunk_limits(ws::MAX_EVENTS, 256 << 10);
        let reported = (
            replica.role(),
            replica.term(),
            replica.leader(),
            replica.commit(),
        );
        self.logs.insert(
            id,
            Hosted {
                name: Arc::from(name),
                retention: spec.retention,
                due: None,
                replica,
                issued: 0,
                done: 0,
                outstanding: 0,
                wanted: None,
                held: VecDeque::new(),
                reported,
            },
        );
        self.drain(now, id);
        Ok(id)
    }

    /// Closes a log: it leaves its replica set and its store is handed back.
    pub(crate) fn close(&mut self, now: Instant, id: LogId) -> Option<Box<dyn LogStore + Send>> {
        if let Some(h) = self.logs.get_mut(&id) {
            h.replica.close();
        }
        self.drain(now, id);
        let h = self.logs.remove(&id)?;
        if let Some(at) = h.due {
            self.timers.remove(&(at, id));
        }
        Some(h.replica.into_store())
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = LogId> + '_ {
        self.logs.keys().copied()
    }

    /// A message from `from` on a log stream.
    pub(crate) fn on_message(&mut self, now: Instant, from: NodeId, msg: &[u8]) {
        let Some(id) = ws::log_of(msg).map(LogId) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(h) = self.logs.get_mut(&id) else {
            self.stats.unknown_log += 1;
            return;
        };
        if h.replica.on_message(now, from, msg).is_err() {
            self.stats.malformed += 1;
            return;
        }
        self.drain(now, id);
    }

    /// The earliest instant a log wants a tick.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Ticks every log that is due, with the RTTs the sessions measured.
    pub(crate) fn tick(&mut self, now: Instant, rtt: impl Fn(&NodeId) -> Option<Duration>) {
        let due: Vec<LogId> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in due {
            if let Some(h) = self.logs.get_mut(&id) {
                let members: Vec<NodeId> = h.replica.members().to_vec();
                for m in members {
                    if let Some(r) = rtt(&m) {
                        h.replica.set_rtt(m, r);
                    }
                }
                let retention = h.retention;
                if retention != Retention::default() {
                    h.replica.retain(&retention, now);
                }
                h.replica.on_tick(now);
            }
            self.drain(now, id);
        }
    }

    pub(crate) fn append(
        &mut self,
        now: Instant,
        id: LogId,
        payload: &[u8],
        durability: Durability,
    ) -> Result<u64, LogError> {
        let h = self.logs.get_mut(&id).ok_or(LogError::Unknown(id))?;
        let seq = h.replica.append(now, payload, durability)?;
        self.drain(now, id);
        Ok(seq)
    }

    /// Appends `payloads` in order with one persistence request for all of them. Stops at the
    /// first the store refuses: nothing was appended if it was the first, otherwise
    /// [`LogError::Partial`] says which went in.
    pub(crate) fn append_batch<'p>(
        &mut self,
        now: Instant,
        id: LogId,
        payloads: impl IntoIterator<Item = &'p [u8]>,
        durability: Durability,
    ) -> Result<core::ops::Range<u64>, LogError> {
        let h = self.logs.get_mut(&id).ok_or(LogError::Unknown(id))?;
        let first = h.replica.store().next_seq();
        let mut failed = None;
        for p in payloads {
            if let Err(e) = h.replica.append(now, p, durability) {
                failed = Some(e);
                break;
            }
        }
        let end = h.replica.store().next_seq();
        self.drain(now, id);
        match failed {
            None => Ok(first..end),
            Some(e) if end == first => Err(e.into()),
            Some(AppendError::Store(cause)) => Err(LogError::Partial {
                appended: first..end,
                cause,
            }),
            Some(e) => Err(e.into()),
        }
    }

    pub(crate) fn persisted(
        &mut self,
        now: Instant,
        id: LogId,
        ticket: u64,
    ) -> Result<(), LogError> {
        let h = self.logs.get_mut(&id).ok_or(LogError::Unknown(id))?;
        if ticket > h.issued {
            return Err(LogError::UnknownTicket {
                ticket,
                issued: h.issued,
            });
        }
        if ticket <= h.done {
            return Ok(());
        }
        h.done = ticket;
        let upto = h.outstanding;
        h.replica.on_persisted(now, upto);
        if let Some(w) = h.wanted.take() {
            // Requests merged while the ticket was out: one more ticket covers them all.
            Self::request_persist(&mut self.events, id, h, now, w);
        }
        self.drain(now, id);
        Ok(())
    }

    /// Committed events from `from` (at least the first retained one).
    pub(crate) fn read(
        &self,
        id: LogId,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<Event>, LogError> {
        let h = self.logs.get(&id).ok_or(LogError::Unknown(id))?;
        let r = &h.replica;
        let from = from.max(r.store().first_seq());
        let commit = r.commit();
        if from >= commit {
            return Ok(Vec::new());
        }
        let room = usize::try_from(commit - from).unwrap_or(usize::MAX);
        Ok(r.store().read(from, max_events.min(room), max_bytes))
    }

    pub(crate) fn status(&self, id: LogId) -> Option<LogStatus> {
        let h = self.logs.get(&id)?;
        let r = &h.replica;
        Some(LogStatus {
            name: Arc::clone(&h.name),
            id,
            role: r.role(),
            term: r.term(),
            leader: r.leader(),
            members: r.members().to_vec(),
            commit: r.commit(),
            first_seq: r.store().first_seq(),
            next_seq: r.store().next_seq(),
            persisting: h.done < h.issued,
            metrics: r.metrics,
        })
    }

    pub(crate) fn prometheus_text(&self) -> String {
        let mut reg = Registry::default();
        for h in self.logs.values() {
            if let Some(m) = reg.entry(&h.name) {
                *m = h.replica.metrics;
            }
        }
        reg.prometheus_text()
    }

    fn request_persist(
        events: &mut VecDeque<LogEvent>,
        id: LogId,
        h: &mut Hosted,
        now: Instant,
        upto: u64,
    ) {
        if h.done < h.issued {
            h.wanted = Some(h.wanted.map_or(upto, |w| w.max(upto)));
            return;
        }
        let state = h.replica.hard_state();
        match h.replica.store_mut().persist(upto, state) {
            Sync::Done => h.replica.on_persisted(now, upto),
            _ => {
                h.issued += 1;
                h.outstanding = upto;
                events.push_back(LogEvent::PersistRequested {
                    log: id,
                    ticket: h.issued,
                    upto,
                });
            }
        }
    }

    /// Moves a replica's outputs: messages out (or held behind a ticket), persistence to the
    /// store, and events.
    fn drain(&mut self, now: Instant, id: LogId) {
        let Logs {
            logs,
            timers,
            out,
            events,
            stats,
        } = self;
        let Some(h) = logs.get_mut(&id) else {
            return;
        };
        // Runs of persistence requests merge into one (a batch of appends is one sync), but
        // every request is carried out before any message that follows it.
        let mut want: Option<u64> = None;
        loop {
            while let Some(o) = h.replica.poll_output() {
                match o {
                    Output::Send { to, bytes } => {
                        if let Some(upto) = want.take() {
                            Self::request_persist(events, id, h, now, upto);
                        }
                        if h.done < h.issued {
                            if h.held.len() >= MAX_HELD {
                                h.held.pop_front();
                                stats.held_dropped += 1;
                            }
                            h.held.push_back((to, bytes));
                        } else {
                            out.push_back((to, bytes));
                        }
                    }
                    Output::Persist { upto } => want = Some(want.map_or(upto, |w| w.max(upto))),
                    Output::Acked { seq } => events.push_back(LogEvent::Acked { log: id, seq }),
                    Output::Abandoned { seq } => {
                        events.push_back(LogEvent::Abandoned { log: id, seq });
                    }
                    _ => {}
                }
            }
            // A store durable at once continues the replica, which may have more to say.
            match want.take() {
                Some(upto) => Self::request_persist(events, id, h, now, upto),
                None => break,
            }
        }
        if h.done == h.issued {
            out.extend(h.held.drain(..));
        }
        let r = &h.replica;
        let (role, term, leader, commit) = (r.role(), r.term(), r.leader(), r.commit());
        if (role, term, leader) != (h.reported.0, h.reported.1, h.reported.2) {
            events.push_back(LogEvent::Role {
                log: id,
                role,
                term,
                leader,
            });
        }
        if commit > h.reported.3 {
            events.push_back(LogEvent::Committed {
                log: id,
                upto: commit,
            });
        }
        h.reported = (role, term, leader, commit);
        // Every change to a replica comes through here: keep its timer entry current.
        let due = (role != Role::Idle).then(|| r.poll_timeout());
        if due != h.due {
            if let Some(at) = h.due {
                timers.remove(&(at, id));
            }
            if let Some(at) = due {
                timers.insert((at, id));
            }
            h.due = due;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::store::{HardState, MemLog};
    use alloc::string::ToString;
    use alloc::vec;

    fn id(n: u8) -> NodeId {
        NodeId([n; 16])
    }

    fn single() -> ReplicationConfig {
        ReplicationConfig {
            factor: 1,
            placement: Placement::Pinned(vec![id(1)]),
            ..ReplicationConfig::default()
        }
    }

    /// A store whose syncs the test completes, and that remembers the state it was given.
    #[derive(Debug, Default)]
    struct Deferred {
        mem: Option<MemLog>,
        synced: Vec<(u64, HardState)>,
    }

    impl Deferred {
        fn mem(&mut self) -> &mut MemLog {
            self.mem.get_or_insert_with(|| MemLog::new(1000, 1000))
        }
    }

    impl LogStore for Deferred {
        fn append(&mut self, seq: u64, term: u64, at: Instant, p: &[u8]) -> Result<(), StoreError> {
            self.mem().append(seq, term, at, p)
        }
        fn term_at(&self, seq: u64) -> Option<u64> {
            self.mem.as_ref()?.term_at(seq)
        }
        fn read(&self, from: u64, n: usize, b: usize) -> Vec<Event> {
            self.mem
                .as_ref()
                .map(|m| m.read(from, n, b))
                .unwrap_or_default()
        }
        fn first_seq(&self) -> u64 {
            self.mem.as_ref().map_or(0, LogStore::first_seq)
        }
        fn next_seq(&self) -> u64 {
            self.mem.as_ref().map_or(0, LogStore::next_seq)
        }
        fn skip_to(&mut self, seq: u64) -> Result<(), StoreError> {
            self.mem().skip_to(seq)
        }
        fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
            self.mem().truncate_from(from)
        }
        fn apply_retention(&mut self, r: &Retention, now: Instant, keep: u64) -> u64 {
            self.mem().apply_retention(r, now, keep)
        }
        fn bytes(&self) -> u64 {
            self.mem.as_ref().map_or(0, LogStore::bytes)
        }
        fn persist(&mut self, upto: u64, state: HardState) -> Sync {
            self.synced.push((upto, state));
            Sync::Later
        }
    }

    fn mem() -> Box<dyn LogStore + Send> {
        Box::new(MemLog::new(1000, 1000))
    }

    #[test]
    fn placement_is_deterministic_and_says_why_it_refuses() {
        let cands: Vec<NodeId> = (1..=6).map(id).collect();
        let cfg = ReplicationConfig::default();
        // Every candidate computes the same set of three, whatever order it lists them in.
        let mut sets = Vec::new();
        for me in 1..=6u8 {
            let mut c = cands.clone();
            c.reverse();
            match place("orders", id(me), &cfg, &c) {
                Ok(s) => sets.push(s),
                Err(LogError::NotPlaced { replicas }) => sets.push(replicas),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(sets.windows(2).all(|w| w[0] == w[1]), "{sets:?}");
        assert_eq!(sets[0].len(), 3);
        // Another name spreads elsewhere (not every name lands on the same three).
        let spread: BTreeSet<Vec<NodeId>> = ["a", "b", "c", "d", "e", "f", "g"]
            .iter()
            .filter_map(|n| match place(n, id(1), &cfg, &cands) {
                Ok(s) | Err(LogError::NotPlaced { replicas: s }) => Some(s),
                Err(_) => None,
            })
            .collect();
        assert!(spread.len() > 1);
        assert_eq!(
            place("x", id(1), &cfg, &[id(2)]),
            Err(LogError::TooFewCandidates { have: 2, need: 3 })
        );
        let strict = ReplicationConfig {
            placement: Placement::ColocationStrict,
            ..cfg.clone()
        };
        assert_eq!(
            place("x", id(1), &strict, &[id(2), id(3)]),
            Ok(vec![id(1), id(2), id(3)])
        );
        assert!(matches!(
            place("x", id(1), &strict, &[id(2), id(3), id(4)]),
            Err(LogError::TooFewCandidates { have: 4, need: 3 })
        ));
        let pinned = ReplicationConfig {
            placement: Placement::Pinned(vec![id(2), id(3), id(4)]),
            ..cfg
        };
        assert_eq!(
            place("x", id(1), &pinned, &[]),
            Err(LogError::NotPlaced {
                replicas: vec![id(2), id(3), id(4)]
            })
        );
        assert!(LogError::TooFewCandidates { have: 2, need: 3 }
            .to_string()
            .contains("lower the factor"));
    }

    #[test]
    fn reopen_with_another_config_or_a_colliding_name_is_refused() {
        let mut logs = Logs::default();
        let now = Instant::ZERO;
        let a = logs
            .open(now, id(1), "a", LogSpec::new(single(), mem()))
            .unwrap();
        assert_eq!(
            logs.open(now, id(1), "a", LogSpec::new(single(), mem())),
            Ok(a)
        );
        let other = ReplicationConfig {
            heartbeat_ms: 900,
            ..single()
        };
        assert_eq!(
            logs.open(now, id(1), "a", LogSpec::new(other, mem())),
            Err(LogError::Config(
                ReplicationConfigError::DifferentFromOriginal
            ))
        );
        let bad = ReplicationConfig {
            heartbeat_ms: 1,
            ..single()
        };
        assert!(matches!(
            logs.open(now, id(1), "b", LogSpec::new(bad, mem())),
            Err(LogError::Config(_))
        ));
        assert_eq!(
            logs.append(now, LogId(7), b"x", Durability::Local),
            Err(LogError::Unknown(LogId(7)))
        );
        assert_eq!(LogId::from_name("a"), a);
        assert_ne!(LogId::from_name("b"), a);
    }

    #[test]
    fn a_single_node_log_acks_commits_and_tails() {
        let mut logs = Logs::default();
        let mut now = Instant::ZERO;
        let log = logs
            .open(now, id(1), "solo", LogSpec::new(single(), mem()))
            .unwrap();
        // Alone, it elects itself once the silence window passes.
        while logs.status(log).unwrap().role != Role::Leader {
            now = logs.next_deadline().unwrap();
            logs.tick(now, |_| None);
            assert!(now < Instant::from_millis(10_000), "no leader");
        }
        logs.events.clear();
        for i in 0..5u8 {
            assert_eq!(
                logs.append(now, log, &[i], Durability::Quorum),
                Ok(u64::from(i))
            );
        }
        let ev: Vec<LogEvent> = logs.events.drain(..).collect();
        assert!(ev.contains(&LogEvent::Acked { log, seq: 4 }), "{ev:?}");
        assert!(ev.contains(&LogEvent::Committed { log, upto: 5 }), "{ev:?}");
        let tail = logs.read(log, 2, 10, 1 << 20).unwrap();
        assert_eq!(
            tail.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert!(logs.read(log, 5, 10, 1 << 20).unwrap().is_empty());
        assert!(logs.out.is_empty(), "no one else to tell");
        let text = logs.prometheus_text();
        assert!(text.contains("solo"), "{text}");
        let store = logs.close(now, log).unwrap();
        assert_eq!(store.next_seq(), 5);
        assert_eq!(logs.status(log), None);
    }

    #[test]
    fn messages_wait_for_the_sync_of_the_term_and_vote() {
        let mut logs = Logs::default();
        let mut now = Instant::ZERO;
        let cfg = ReplicationConfig {
            placement: Placement::Pinned(vec![id(1), id(2), id(3)]),
            ..ReplicationConfig::default()
        };
        let log = logs
            .open(
                now,
                id(1),
                "l",
                LogSpec::new(cfg, Box::new(Deferred::default())),
            )
            .unwrap();
        logs.events.clear();
        logs.out.clear();
        // Silence: id(1) stands, which moves its term and votes for itself: that must be
        // durable before the VOTE_REQUEST leaves.
        let ticket = loop {
            now = logs.next_deadline().unwrap();
            logs.tick(now, |_| None);
            if let Some(t) = logs.events.iter().find_map(|e| match e {
                LogEvent::PersistRequested { ticket, .. } => Some(*ticket),
                _ => None,
            }) {
                break t;
            }
            assert!(now < Instant::from_millis(30_000), "never stood");
        };
        let status = logs.status(log).unwrap();
        assert!(status.persisting && status.term > 0);
        let asks = |out: &VecDeque<(NodeId, Vec<u8>)>| {
            out.iter()
                .filter(|(_, m)| m.first() == Some(&ws::ty::VOTE_REQUEST))
                .count()
        };
        assert_eq!(
            asks(&logs.out),
            0,
            "a vote request left before the vote was durable"
        );
        assert_eq!(
            logs.persisted(now, log, ticket + 1),
            Err(LogError::UnknownTicket {
                ticket: ticket + 1,
                issued: ticket
            })
        );
        logs.persisted(now, log, ticket).unwrap();
        assert_eq!(asks(&logs.out), 2, "both peers are asked once it is");
        assert!(!logs.status(log).unwrap().persisting);
        // A ticket done twice changes nothing.
        assert_eq!(logs.persisted(now, log, ticket), Ok(()));
    }

    /// Elects the single node of `log` by ticking it through its silence window.
    fn lead_alone(logs: &mut Logs, log: LogId) -> Instant {
        let mut now = Instant::ZERO;
        while logs.status(log).unwrap().role != Role::Leader {
            now = logs.next_deadline().unwrap();
            logs.tick(now, |_| None);
            assert!(now < Instant::from_millis(10_000), "no leader");
        }
        now
    }

    #[test]
    fn a_batch_is_one_sync_and_a_refusal_part_way_says_what_went_in() {
        let mut logs = Logs::default();
        let log = logs
            .open(
                Instant::ZERO,
                id(1),
                "b",
                LogSpec::new(single(), Box::new(Deferred::default())),
            )
            .unwrap();
        let mut now = lead_alone(&mut logs, log);
        // Complete the syncs of the election.
        while let Some(t) = logs.events.iter().find_map(|e| match e {
            LogEvent::PersistRequested { ticket, .. } => Some(*ticket),
            _ => None,
        }) {
            logs.events.clear();
            logs.persisted(now, log, t).unwrap();
        }
        logs.events.clear();
        now = now.saturating_add(Duration::from_millis(1));
        let batch: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i]).collect();
        let r = logs.append_batch(
            now,
            log,
            batch.iter().map(Vec::as_slice),
            Durability::Quorum,
        );
        assert_eq!(r, Ok(0..10));
        let tickets: Vec<u64> = logs
            .events
            .iter()
            .filter_map(|e| match e {
                LogEvent::PersistRequested { ticket, upto, .. } => Some((*ticket, *upto)),
                _ => None,
            })
            .map(|(t, upto)| {
                assert_eq!(upto, 10);
                t
            })
            .collect();
        assert_eq!(
            tickets.len(),
            1,
            "one sync for the batch: {:?}",
            logs.events
        );
        logs.persisted(now, log, tickets[0]).unwrap();
        let acked = logs
            .events
            .iter()
            .filter(|e| matches!(e, LogEvent::Acked { .. }))
            .count();
        assert_eq!(acked, 10);

        // A store with room for 3 events refuses the 4th.
        let mut logs = Logs::default();
        let small = Box::new(MemLog::new(3, 100));
        let log = logs
            .open(Instant::ZERO, id(1), "s", LogSpec::new(single(), small))
            .unwrap();
        let now = lead_alone(&mut logs, log);
        let r = logs.append_batch(now, log, [&b"a"[..], b"b", b"c", b"d"], Durability::Local);
        assert_eq!(
            r,
            Err(LogError::Partial {
                appended: 0..3,
                cause: StoreError::Full
            })
        );
        assert_eq!(
            logs.append_batch(now, log, [&b"e"[..]], Durability::Local),
            Err(LogError::Store(StoreError::Full))
        );
    }

    #[test]
    fn messages_for_other_logs_or_too_short_are_counted() {
        let mut logs = Logs::default();
        let now = Instant::ZERO;
        let _ = logs
            .open(now, id(1), "solo", LogSpec::new(single(), mem()))
            .unwrap();
        let mut vote = Vec::new();
        ws::write_vote(&mut vote, 12345, 1, true);
        logs.on_message(now, id(2), &vote);
        logs.on_message(now, id(2), &[0x25, 1]);
        let mut bad = Vec::new();
        ws::write_vote(&mut bad, LogId::from_name("solo").0, 1, true);
        bad.push(0);
        logs.on_message(now, id(2), &bad);
        assert_eq!(logs.stats.unknown_log, 1);
        assert_eq!(logs.stats.malformed, 2);
    }
}
