//! One node's replica of one log: terms, elections, appends, pull catch-up and the commit
//! point, as a sans-IO machine.
//!
//! It owns the replica's role and term, its vote, the log (through a [`LogStore`]), what it
//! knows of its peers, and, while leading, each replica's acknowledged position. Messages come
//! in as bytes with the peer's id and leave as [`Output::Send`]; persistence leaves as
//! [`Output::Persist`] and comes back as [`LogReplica::on_persisted`]; appends are acknowledged
//! by [`Output::Acked`] once durable locally or on a majority. It never sends, never persists
//! and never reads a clock itself.
//!
//! The rules (`docs/replication.md` has the argument):
//! - A term has at most one leader: a replica votes at most once per term (the vote is part of
//!   the state to persist before answering), and only for a candidate whose log is at least as
//!   up to date as its own; a candidate leads once a majority (itself included) voted.
//! - Every message carries the sender's term; a higher term makes the receiver a follower of
//!   it (a leader steps down), a lower one is answered with the current term and never acted on.
//! - A leader that has not heard from a majority for the silence window steps down.
//! - The commit point moves only over events of the leader's own term that a majority stored
//!   (what they acknowledged by pulling past them); older events commit with them.
//! - Replicas pull: SYNC_REQUEST names the next event wanted and the term of the one before it;
//!   a mismatch is answered BadRange with a hint, and the replica steps back (never below its
//!   commit point). Events of an old term that conflict are truncated, never committed ones.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use super::config::{ReplicationConfig, UnderCapacity};
use super::metrics::LogMetrics;
use super::role::{
    elect, Admission, BandwidthBudget, Coordinator, ElectionOutcome, HeartbeatTracker, PeerState,
    Role, Signal, Transition,
};
use super::store::{HardState, LogStore, Retention, StoreError};
use crate::identity::NodeId;
use crate::time::Instant;
use crate::wire::sync::{self as ws, NackCode, SyncMsg};
use crate::wire::WireError;

/// Events a replica asks for at a time.
const CHUNK_MAX: u32 = 256;
/// Payload bytes one response carries at most (well under the 64 MiB ceiling).
const CHUNK_BYTES: usize = 1 << 20;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Persisted in the leader's log.
    Local,
    /// Persisted on a majority of the replica set (it survives any minority of failures).
    Quorum,
}

/// Why an append was refused; nothing was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendError {
    /// This node does not lead the log; `leader` is who it believes does.
    NotLeader {
        /// The believed leader.
        leader: Option<NodeId>,
    },
    /// The store refused it (full, too large).
    Store(super::store::StoreError),
    /// An empty payload: empty events are the term markers a new leader writes.
    Empty,
}

/// What the machine asks of its driver, pulled with [`LogReplica::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send these bytes to `to` (one message).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Make the term, the vote and the log's events below `upto` durable, then call
    /// [`LogReplica::on_persisted`]. The term and vote must be durable before any `Send` that
    /// follows this output leaves.
    Persist {
        /// Events below this.
        upto: u64,
    },
    /// An append is done by its durability mode.
    Acked {
        /// Its sequence.
        seq: u64,
    },
    /// This node stopped leading before the append was acknowledged: it may or may not survive
    /// (the caller retries idempotently, or checks the log).
    Abandoned {
        /// Its sequence.
        seq: u64,
    },
    /// The role changed, in `term` (the term when it happened: a node that wins a term and
    /// then hears of a newer one reports both changes, each with its own term).
    Transition {
        /// The change.
        change: Transition,
        /// The term it happened in.
        term: u64,
    },
}

/// The fixed fields of a SYNC_RESPONSE.
#[derive(Debug, Clone, Copy)]
struct Response {
    first_seq: u64,
    prev_term: u64,
    leader_first_retained: u64,
    commit: u64,
    leader_next: u64,
}

/// One log's replica on one node.
#[derive(Debug)]
pub struct LogReplica<S: LogStore> {
    cfg: ReplicationConfig,
    log: u64,
    me: NodeId,
    members: Vec<NodeId>,
    store: S,
    coord: Coordinator,
    term: u64,
    voted_for: Option<NodeId>,
    commit: u64,
    durable: u64,
    leader: Option<NodeId>,
    leader_next: u64,
    last_leader: Instant,
    hb: HeartbeatTracker,
    rtts: BTreeMap<NodeId, Duration>,
    votes: BTreeSet<NodeId>,
    election_at: Option<Instant>,
    matched: BTreeMap<NodeId, u64>,
    heard: BTreeMap<NodeId, Instant>,
    next_heartbeat: Instant,
    pending: BTreeMap<u64, Durability>,
    pull_from: u64,
    /// Our log matches the current leader's below this (checked by a response in this term);
    /// only that part may be committed here.
    verified: u64,
    request_sent: Option<Instant>,
    budget: BandwidthBudget,
    notify: bool,
    out: VecDeque<Output>,
    last_election: Option<Instant>,
    /// Events one request asks for, and payload bytes one response carries at most.
    chunk: (u32, usize),
    /// Leading: when each replica last asked from the leader's tail (it held everything).
    caught_up: BTreeMap<NodeId, Instant>,
    /// Following: when this replica last held everything the leader announced.
    synced_at: Option<Instant>,
    /// Counters and gauges.
    pub metrics: LogMetrics,
}

impl<S: LogStore> LogReplica<S> {
    /// A replica of `log` on `me` among `members` (itself included), with what it persisted
    /// before: `term`, `voted_for` and `store` (its durable events). `link_rate` bytes per
    /// second is the link capacity the catch-up budget takes its share of.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: ReplicationConfig,
        log: u64,
        me: NodeId,
        mut members: Vec<NodeId>,
        store: S,
        term: u64,
        voted_for: Option<NodeId>,
        link_rate: u64,
        now: Instant,
    ) -> LogReplica<S> {
        members.sort_unstable();
        members.dedup();
        if !members.contains(&me) {
            members.push(me);
            members.sort_unstable();
        }
        let durable = store.next_seq();
        let mut coord = Coordinator::default();
        let _ = coord.apply(Signal::CapabilitySelected);
        let budget = BandwidthBudget::share(link_rate, cfg.budget_ppm, now);
        LogReplica {
            log,
            me,
            members,
            coord,
            term,
            voted_for,
            commit: store.first_seq(),
            durable,
            pull_from: durable,
            verified: 0,
            store,
            leader: None,
            leader_next: 0,
            last_leader: now,
            hb: HeartbeatTracker::default(),
            rtts: BTreeMap::new(),
            votes: BTreeSet::new(),
            election_at: None,
            matched: BTreeMap::new(),
            heard: BTreeMap::new(),
            next_heartbeat: now,
            pending: BTreeMap::new(),
            request_sent: None,
            budget,
            notify: false,
            out: VecDeque::new(),
            last_election: None,
            chunk: (CHUNK_MAX, CHUNK_BYTES),
            caught_up: BTreeMap::new(),
            synced_at: None,
            metrics: LogMetrics {
                role: Role::Replica,
                ..LogMetrics::default()
            },
            cfg,
        }
    }

    // ---- queries ----

    /// The current role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.coord.role()
    }
    /// The current term.
    #[must_use]
    pub fn term(&self) -> u64 {
        self.term
    }
    /// The vote cast in the current term.
    #[must_use]
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }
    /// Events below this are committed (on a majority).
    #[must_use]
    pub fn commit(&self) -> u64 {
        self.commit
    }
    /// The believed leader.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        if self.role() == Role::Leader {
            Some(self.me)
        } else {
            self.leader
        }
    }
    /// The log.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.store
    }
    /// The next output, if any. Pull until `None` after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }
    /// Limits catch-up chunks: events per request and payload bytes per response (at least
    /// one event always goes). A transport with small messages sets them low.
    pub fn set_chunk_limits(&mut self, events: u32, bytes: usize) {
        self.chunk = (events.clamp(1, ws::MAX_EVENTS), bytes.max(1));
    }

    /// The term and vote, as [`LogStore::persist`] makes them durable.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    /// Gives the store back (the log was closed).
    pub(crate) fn into_store(self) -> S {
        self.store
    }

    /// The settings the log was opened with.
    #[must_use]
    pub fn config(&self) -> &ReplicationConfig {
        &self.cfg
    }

    /// The log, for the host that persists it.
    pub(crate) fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The members of the replica set, in NodeId order.
    #[must_use]
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Applies `retention` to committed events (never to anything at or past the commit
    /// point, which replicas may still need to agree on). Replicas that need a trimmed event
    /// skip ahead to the leader's first one. Returns how many went.
    pub fn retain(&mut self, retention: &Retention, now: Instant) -> u64 {
        self.store.apply_retention(retention, now, self.commit)
    }

    /// Leaves the log for good (the channel closed): the role becomes Idle, pending appends
    /// are abandoned, and nothing more is sent or answered.
    pub fn close(&mut self) {
        if self.role() == Role::Leader {
            self.abandon_pending();
        }
        self.signal(Signal::ChannelClose);
    }

    /// The lag gauges: leading, how long since the furthest-behind replica last held the whole
    /// log; following, how long since this replica did. Unobserved until it first happens.
    fn update_lag(&mut self, now: Instant) {
        let micros = |t: &Instant| {
            u64::try_from(now.saturating_duration_since(*t).as_micros()).unwrap_or(u64::MAX)
        };
        match self.role() {
            Role::Leader => {
                let worst = self
                    .members
                    .iter()
                    .filter(|m| **m != self.me)
                    .filter_map(|m| self.caught_up.get(m))
                    .map(micros)
                    .max();
                if let Some(w) = worst {
                    LogMetrics::set_lag(&mut self.metrics.leader_lag_micros, w);
                }
            }
            Role::Replica if self.leader.is_some() => {
                if let Some(t) = self.synced_at {
                    LogMetrics::set_lag(&mut self.metrics.replica_lag_micros, micros(&t));
                }
            }
            _ => {}
        }
    }

    /// The store is full. EvictOldest: drop the oldest committed event to make room (true if
    /// one went). Withdraw (a replica): leave the replica role, so the others carry the log.
    fn evict_for_room(&mut self, now: Instant) -> bool {
        match self.cfg.on_under_capacity {
            UnderCapacity::EvictOldest => {
                let len = self.store.next_seq() - self.store.first_seq();
                let r = Retention {
                    max_events: Some(len.saturating_sub(1)),
                    ..Retention::default()
                };
                self.store.apply_retention(&r, now, self.commit) > 0
            }
            _ => {
                if self.role() == Role::Replica {
                    self.signal(Signal::DiskPressureWithdraw);
                }
                false
            }
        }
    }

    /// Appends to the store, applying the under-capacity policy once when it is full.
    fn store_event(
        &mut self,
        now: Instant,
        seq: u64,
        term: u64,
        payload: &[u8],
    ) -> Result<(), StoreError> {
        match self.store.append(seq, term, now, payload) {
            Err(StoreError::Full) => {
                self.metrics.under_capacity += 1;
                if self.evict_for_room(now) {
                    self.store.append(seq, term, now, payload)
                } else {
                    Err(StoreError::Full)
                }
            }
            r => r,
        }
    }

    /// Records a measured RTT to `peer` (for the election order).
    pub fn set_rtt(&mut self, peer: NodeId, rtt: Duration) {
        self.rtts.insert(peer, rtt);
    }

    /// When to call [`LogReplica::on_tick`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let silence = self.cfg.silence();
        let mut at = self.next_heartbeat;
        match self.role() {
            Role::Replica => at = at.min(self.last_leader.saturating_add(silence)),
            Role::Candidate => {
                if let Some(e) = self.election_at {
                    at = at.min(e);
                }
            }
            _ => {}
        }
        at
    }

    // ---- inputs ----

    /// Appends `payload` (leader only). The returned sequence is acknowledged by
    /// [`Output::Acked`] once durable as `durability` asks.
    pub fn append(
        &mut self,
        now: Instant,
        payload: &[u8],
        durability: Durability,
    ) -> Result<u64, AppendError> {
        if self.role() != Role::Leader {
            return Err(AppendError::NotLeader {
                leader: self.leader,
            });
        }
        if payload.is_empty() {
            return Err(AppendError::Empty);
        }
        let seq = self.store.next_seq();
        self.store_event(now, seq, self.term, payload)
            .map_err(AppendError::Store)?;
        self.pending.insert(seq, durability);
        if !self.notify {
            // Tell the replicas there is something to pull (once until one pulls). This may
            // leave before the event is durable here, as Raft's leaders send entries while
            // they write them: the leader counts itself towards a majority only once durable,
            // and no term or vote changed.
            self.notify = true;
            self.broadcast_heartbeat(now);
        }
        self.out.push_back(Output::Persist {
            upto: self.store.next_seq(),
        });
        Ok(seq)
    }

    /// The driver made events below `upto` (and the term and vote) durable.
    pub fn on_persisted(&mut self, now: Instant, upto: u64) {
        let upto = upto.min(self.store.next_seq());
        if upto <= self.durable {
            return;
        }
        self.durable = upto;
        if self.role() == Role::Leader {
            self.ack_local();
            self.advance_commit();
        } else if self.leader.is_some() {
            // Our durable position moved: pull again, which acknowledges it.
            self.request(now);
        }
    }

    /// Time passed.
    pub fn on_tick(&mut self, now: Instant) {
        if self.role() == Role::Idle {
            return;
        }
        let silence = self.cfg.silence();
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.saturating_add(self.cfg.heartbeat());
            self.broadcast_heartbeat(now);
            self.update_lag(now);
            if self.role() == Role::Leader {
                self.check_majority(now);
            } else if self.leader.is_some()
                && self
                    .request_sent
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.heartbeat())
            {
                self.request(now);
            }
        }
        match self.role() {
            Role::Replica if now.saturating_duration_since(self.last_leader) >= silence => {
                self.leader = None;
                if let Ok(t) = self.coord.apply(Signal::MissedHeartbeats) {
                    self.on_transition(t);
                }
                self.consider_election(now);
            }
            Role::Candidate if self.election_at.is_some_and(|e| now >= e) => {
                self.start_election(now);
            }
            _ => {}
        }
    }

    /// A message from `from`. A malformed one changes nothing and is returned as the decoder's
    /// error, for the caller to count.
    pub fn on_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), WireError> {
        let msg = ws::decode(bytes)?;
        self.on_decoded(now, from, msg);
        Ok(())
    }

    fn on_decoded(&mut self, now: Instant, from: NodeId, msg: SyncMsg<'_>) {
        if self.role() == Role::Idle {
            return;
        }
        if !self.members.contains(&from) || from == self.me {
            return;
        }
        let (log, term) = match msg {
            SyncMsg::Request { log, term, .. }
            | SyncMsg::Response { log, term, .. }
            | SyncMsg::Heartbeat { log, term, .. }
            | SyncMsg::Nack { log, term, .. }
            | SyncMsg::VoteRequest { log, term, .. }
            | SyncMsg::Vote { log, term, .. } => (log, term),
        };
        if log != self.log {
            return;
        }
        if term > self.term {
            self.adopt_term(now, term);
        }
        match msg {
            SyncMsg::Heartbeat {
                tail, commit, role, ..
            } => self.on_heartbeat(now, from, term, tail, commit, role),
            SyncMsg::VoteRequest {
                next, last_term, ..
            } => self.on_vote_request(now, from, term, next, last_term),
            SyncMsg::Vote { granted, .. } => self.on_vote(now, from, term, granted),
            SyncMsg::Request {
                since,
                prev_term,
                chunk_max,
                ..
            } => self.on_request(now, from, term, since, prev_term, chunk_max),
            SyncMsg::Response {
                first_seq,
                prev_term,
                leader_first_retained,
                commit,
                leader_next,
                events,
                ..
            } => {
                let evs: Vec<(u64, u64, &[u8])> = events.iter().collect();
                let r = Response {
                    first_seq,
                    prev_term,
                    leader_first_retained,
                    commit,
                    leader_next,
                };
                self.on_response(now, from, term, &r, &evs);
            }
            SyncMsg::Nack {
                since, code, term, ..
            } => self.on_nack(from, term, since, code),
        }
    }

    // ---- terms and elections ----

    fn on_transition(&mut self, t: Transition) {
        self.metrics.role = t.to;
        if (t.from == Role::Leader) != (t.to == Role::Leader) {
            self.metrics.leader_changes += 1;
        }
        self.out.push_back(Output::Transition {
            change: t,
            term: self.term,
        });
    }

    fn signal(&mut self, s: Signal) {
        if let Ok(t) = self.coord.apply(s) {
            self.on_transition(t);
        }
    }

    /// A newer term: follow it (a leader or candidate steps down).
    fn adopt_term(&mut self, _now: Instant, term: u64) {
        self.term = term;
        self.voted_for = None;
        self.verified = self.commit;
        self.votes.clear();
        self.caught_up.clear();
        self.synced_at = None;
        match self.role() {
            Role::Leader => {
                self.signal(Signal::SteppedDown);
                self.abandon_pending();
            }
            Role::Candidate => self.signal(Signal::ElectionLost),
            _ => {}
        }
        self.leader = None;
        self.out.push_back(Output::Persist { upto: self.durable });
    }

    fn last_term(&self) -> u64 {
        let next = self.store.next_seq();
        next.checked_sub(1)
            .and_then(|s| self.store.term_at(s))
            .unwrap_or(0)
    }

    /// Who tries first is deterministic: `elect` over the live members (nearest first, by RTT,
    /// then NodeId) when this node is its own choice; otherwise a node waits one heartbeat per
    /// live member ranked before it by NodeId (an order every node agrees on, unlike RTTs), so
    /// candidates do not split the vote, and a preferred node that cannot reach a majority
    /// does not block the log.
    fn consider_election(&mut self, now: Instant) {
        let silence = self.cfg.silence();
        let live: BTreeSet<NodeId> = self
            .members
            .iter()
            .filter(|n| **n == self.me || self.hb.is_alive(n, now, silence))
            .copied()
            .collect();
        if self
            .last_election
            .is_some_and(|t| now.saturating_duration_since(t) < silence * 2)
        {
            self.metrics.election_thrash += 1;
        }
        let rtts = &self.rtts;
        let outcome = elect(
            &self.members,
            self.me,
            self.cfg.leader_pinned,
            |n| rtts.get(n).copied(),
            |n| live.contains(n),
        );
        if outcome == ElectionOutcome::NoEligibleReplica {
            // Only the pinned leader may lead, and it is not live: wait for it.
            self.election_at = Some(now.saturating_add(silence));
            return;
        }
        let rank = live.iter().position(|n| *n == self.me).unwrap_or(0) as u32;
        if rank == 0 || self.cfg.leader_pinned == Some(self.me) {
            self.start_election(now);
        } else {
            self.election_at = Some(now.saturating_add(self.cfg.heartbeat() * rank));
        }
    }

    /// This node's stagger, in heartbeats, for the current term: different for every member
    /// and shifting with the term.
    fn spread(&self) -> u32 {
        let me = self.members.iter().position(|n| *n == self.me).unwrap_or(0) as u64;
        let n = self.members.len().max(1) as u64;
        u32::try_from((me + self.term) % n).unwrap_or(0)
    }

    fn start_election(&mut self, now: Instant) {
        if self.cfg.leader_pinned.is_some_and(|p| p != self.me) {
            self.election_at = Some(now.saturating_add(self.cfg.silence()));
            return;
        }
        self.last_election = Some(now);
        self.term += 1;
        self.voted_for = Some(self.me);
        self.votes.clear();
        self.votes.insert(self.me);
        self.leader = None;
        // Term and vote durable before the requests leave.
        self.out.push_back(Output::Persist { upto: self.durable });
        let (next, last_term) = (self.store.next_seq(), self.last_term());
        for peer in self.peers() {
            let mut b = Vec::with_capacity(ws::VOTE_REQUEST_LEN);
            ws::write_vote_request(&mut b, self.log, self.term, next, last_term);
            self.out.push_back(Output::Send { to: peer, bytes: b });
        }
        // If this attempt fails, the next waits the silence window plus a spread that differs
        // per node and per term (deterministic, from the member index), so candidates that
        // collided once do not keep colliding.
        let wait = self.cfg.silence() + self.cfg.heartbeat() * self.spread();
        self.election_at = Some(now.saturating_add(wait));
        self.maybe_win(now);
    }

    fn on_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        next: u64,
        last_term: u64,
    ) {
        let up_to_date = (last_term, next) >= (self.last_term(), self.store.next_seq());
        let granted = term == self.term
            && self.voted_for.is_none_or(|v| v == from)
            && up_to_date
            && self.role() != Role::Leader;
        if granted {
            self.voted_for = Some(from);
            // Granting a vote defers our own candidacy.
            self.last_leader = now;
            self.out.push_back(Output::Persist { upto: self.durable });
        }
        let mut b = Vec::with_capacity(ws::VOTE_LEN);
        ws::write_vote(&mut b, self.log, self.term, granted);
        self.out.push_back(Output::Send { to: from, bytes: b });
        if !up_to_date && term == self.term && self.leader.is_none() && self.role() != Role::Leader
        {
            // We refused a candidate whose log is behind ours: we are a better candidate, so
            // stand soon rather than wait our turn (otherwise less up-to-date candidates could
            // keep resetting us and none would ever win). Several may refuse at once: each
            // waits its own spread, so they do not split the vote among themselves.
            if self.role() == Role::Replica {
                self.signal(Signal::MissedHeartbeats);
            }
            if self.role() == Role::Candidate {
                let at = now.saturating_add(self.cfg.heartbeat() * self.spread());
                self.election_at = Some(self.election_at.map_or(at, |e| e.min(at)));
            }
        }
    }

    fn on_vote(&mut self, now: Instant, from: NodeId, term: u64, granted: bool) {
        if self.role() != Role::Candidate || term != self.term || !granted {
            return;
        }
        self.votes.insert(from);
        self.maybe_win(now);
    }

    fn maybe_win(&mut self, now: Instant) {
        if self.role() != Role::Candidate
            || self.votes.len() < self.cfg.quorum().min(self.members.len())
        {
            return;
        }
        self.signal(Signal::ElectionWon);
        self.election_at = None;
        self.leader = Some(self.me);
        self.matched.clear();
        self.heard.clear();
        for p in self.peers() {
            // A vote is contact: the leader starts with the voters heard now.
            if self.votes.contains(&p) {
                self.heard.insert(p, now);
            }
        }
        if self.store.next_seq() > self.commit {
            // Raft's no-op: a leader commits only events of its own term, so what earlier
            // terms left uncommitted would wait for the next write. An empty event of the new
            // term (a term marker; applications cannot append empty events) commits it now.
            let seq = self.store.next_seq();
            if self.store_event(now, seq, self.term, &[]).is_ok() {
                self.out.push_back(Output::Persist {
                    upto: self.store.next_seq(),
                });
            }
        }
        self.next_heartbeat = now.saturating_add(self.cfg.heartbeat());
        self.broadcast_heartbeat(now);
    }

    fn peers(&self) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|n| **n != self.me)
            .copied()
            .collect()
    }

    // ---- heartbeats ----

    fn broadcast_heartbeat(&mut self, _now: Instant) {
        let role = self.role();
        let (tail, commit) = (self.store.next_seq(), self.commit);
        for p in self.peers() {
            let mut b = Vec::with_capacity(ws::SYNC_HEARTBEAT_LEN);
            ws::write_heartbeat(&mut b, self.log, self.term, tail, commit, role, 0);
            self.out.push_back(Output::Send { to: p, bytes: b });
        }
    }

    fn on_heartbeat(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        tail: u64,
        commit: u64,
        role: Role,
    ) {
        self.hb.on_heartbeat(
            from,
            PeerState {
                last_seen: now,
                role,
                term,
                tail,
            },
        );
        if self.role() == Role::Leader {
            if term == self.term {
                self.heard.insert(from, now);
            } else if term < self.term {
                // A stale leader or candidate learns our term.
                let mut b = Vec::new();
                ws::write_heartbeat(
                    &mut b,
                    self.log,
                    self.term,
                    self.store.next_seq(),
                    self.commit,
                    Role::Leader,
                    0,
                );
                self.out.push_back(Output::Send { to: from, bytes: b });
            }
            return;
        }
        if role != Role::Leader || term != self.term {
            return;
        }
        self.follow(now, from);
        self.leader_next = tail;
        if tail <= self.durable {
            self.synced_at = Some(now);
        }
        self.set_commit(commit);
        if tail > self.durable || self.request_sent.is_none() {
            self.request(now);
        }
    }

    /// `from` leads our current term.
    fn follow(&mut self, now: Instant, from: NodeId) {
        if self.role() == Role::Candidate {
            self.signal(Signal::ElectionLost);
            self.election_at = None;
        }
        if self.leader != Some(from) {
            self.verified = self.commit;
        }
        self.leader = Some(from);
        self.last_leader = now;
    }

    fn set_commit(&mut self, leader_commit: u64) {
        // Only what we hold that matches the leader's log (checked by a response in this
        // term) can be committed here.
        let c = leader_commit.min(self.verified).min(self.durable);
        if c > self.commit {
            self.commit = c;
        }
    }

    // ---- pull catch-up ----

    fn request(&mut self, now: Instant) {
        let Some(leader) = self.leader else {
            return;
        };
        // Only durable, verified events are acknowledged (the commit point is both).
        let since = self.pull_from.min(self.durable).max(self.commit);
        let prev_term = since
            .checked_sub(1)
            .and_then(|s| self.store.term_at(s))
            .unwrap_or(0);
        let mut b = Vec::with_capacity(ws::SYNC_REQUEST_LEN);
        ws::write_request(&mut b, self.log, self.term, since, prev_term, self.chunk.0);
        self.out.push_back(Output::Send {
            to: leader,
            bytes: b,
        });
        self.request_sent = Some(now);
        self.metrics.sync_requests += 1;
    }

    fn nack(&mut self, to: NodeId, since: u64, code: NackCode, detail: &str) {
        let mut b = Vec::new();
        ws::write_nack(&mut b, self.log, self.term, since, code, detail);
        self.out.push_back(Output::Send { to, bytes: b });
        self.metrics.sync_nacks += 1;
    }

    fn on_request(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        since: u64,
        prev_term: u64,
        chunk_max: u32,
    ) {
        if self.role() != Role::Leader || term < self.term {
            self.nack(
                from,
                since,
                NackCode::NotLeader,
                "not the leader of this term",
            );
            return;
        }
        self.heard.insert(from, now);
        self.notify = false;
        let next = self.store.next_seq();
        let first = self.store.first_seq();
        if since > next {
            self.nack(from, next, NackCode::BadRange, "beyond the leader's log");
            return;
        }
        if let Some(prev) = since.checked_sub(1) {
            if prev >= first && self.store.term_at(prev) != Some(prev_term) {
                self.nack(from, prev, NackCode::BadRange, "logs differ before since");
                return;
            }
        }
        // Everything below `since` matches ours: the replica's acknowledgement.
        let m = self.matched.entry(from).or_insert(0);
        *m = (*m).max(since);
        if since >= next {
            self.caught_up.insert(from, now);
        }
        self.advance_commit();
        let start = since.max(first);
        let evs = self
            .store
            .read(start, chunk_max.min(ws::MAX_EVENTS) as usize, self.chunk.1);
        let bytes: u64 = evs.iter().map(|e| e.payload.len() as u64).sum();
        if bytes > 0 {
            if let Admission::Defer { .. } = self.budget.try_consume(bytes, now) {
                self.nack(from, since, NackCode::Backpressure, "catch-up budget spent");
                return;
            }
        }
        let mut b =
            Vec::with_capacity(ws::SYNC_RESPONSE_HEADER_LEN + bytes as usize + 20 * evs.len());
        let it = evs.iter().map(|e| (e.term, e.payload.as_slice()));
        let prev_term = start
            .checked_sub(1)
            .and_then(|p| self.store.term_at(p))
            .unwrap_or(0);
        if ws::write_response(
            &mut b,
            self.log,
            self.term,
            start,
            prev_term,
            first,
            self.commit,
            next,
            it,
        )
        .is_ok()
        {
            self.metrics.sync_responses += 1;
            self.metrics.sync_bytes += bytes;
            self.out.push_back(Output::Send { to: from, bytes: b });
        }
    }

    fn on_response(
        &mut self,
        now: Instant,
        from: NodeId,
        term: u64,
        resp: &Response,
        events: &[(u64, u64, &[u8])],
    ) {
        let Response {
            first_seq,
            prev_term,
            leader_first_retained,
            commit,
            leader_next,
        } = *resp;
        if term < self.term || self.role() == Role::Leader {
            return;
        }
        self.follow(now, from);
        self.request_sent = None;
        self.leader_next = leader_next;
        // Apply only where our log matches the leader's just before the events: a response
        // to an older request may arrive after our log changed there.
        let trimmed = first_seq > 0 && first_seq == leader_first_retained && prev_term == 0;
        if trimmed && first_seq > self.commit && self.store.next_seq() > self.commit {
            // The leader trimmed (committed) events below its first; what we hold there beyond
            // our commit point cannot be checked against it. Drop it and skip ahead, as a
            // replica installing a snapshot would.
            let from = self.commit.max(self.store.first_seq());
            if self.store.truncate_from(from).is_ok() {
                self.durable = self.durable.min(from);
            }
        }
        if let Some(prev) = first_seq.checked_sub(1).filter(|_| !trimmed) {
            let ours = self.store.term_at(prev);
            let committed_here = prev < self.commit;
            if ours.is_some() && !committed_here && ours != Some(prev_term) {
                self.pull_from = self.pull_from.min(first_seq).max(self.commit);
                self.request(now);
                return;
            }
        }
        if first_seq > self.store.next_seq() {
            if first_seq == leader_first_retained && self.store.skip_to(first_seq).is_ok() {
                // The leader trimmed what we lack: continue from its first event.
                self.metrics.skip_ahead += 1;
                self.durable = first_seq;
                self.commit = self.commit.max(first_seq.min(commit));
            } else {
                self.metrics.divergence += 1;
                return;
            }
        }
        let mut applied = 0u64;
        for &(seq, t, payload) in events {
            if seq < self.store.next_seq() {
                if self.store.term_at(seq) == Some(t) {
                    continue;
                }
                if seq < self.commit || self.store.truncate_from(seq).is_err() {
                    // A committed event never conflicts: refuse rather than lose it.
                    self.metrics.divergence += 1;
                    return;
                }
                self.durable = self.durable.min(seq);
            }
            if seq != self.store.next_seq() || self.store_event(now, seq, t, payload).is_err() {
                return;
            }
            applied += 1;
            self.metrics.applied_events += 1;
            self.metrics.applied_bytes += payload.len() as u64;
        }
        let end = first_seq + events.len() as u64;
        if end >= leader_next && self.store.next_seq() > leader_next && leader_next >= self.commit {
            // Beyond the leader's log: an old term's writes that never committed.
            let _ = self.store.truncate_from(leader_next);
            self.durable = self.durable.min(leader_next);
        }
        self.pull_from = end.min(self.store.next_seq());
        if self.pull_from >= leader_next {
            self.synced_at = Some(now);
        }
        // The leader answered a request whose `since` and `prev_term` matched its log, and we
        // now hold its events up to `end`: everything below matches.
        self.verified = self.pull_from;
        self.set_commit(commit);
        if applied > 0 || self.durable < self.store.next_seq() {
            self.out.push_back(Output::Persist {
                upto: self.store.next_seq(),
            });
        } else if self.pull_from < leader_next {
            self.request(now);
        }
    }

    fn on_nack(&mut self, from: NodeId, term: u64, since: u64, code: NackCode) {
        if Some(from) != self.leader {
            return;
        }
        self.request_sent = None;
        match code {
            NackCode::NotLeader if term >= self.term => self.leader = None,
            NackCode::BadRange => {
                // Step back (never below what is committed) and try again.
                self.pull_from = since.min(self.pull_from.saturating_sub(1)).max(self.commit);
            }
            _ => {}
        }
    }

    // ---- the leader's commit point ----

    fn advance_commit(&mut self) {
        if self.role() != Role::Leader {
            return;
        }
        let mut pos: Vec<u64> = self
            .members
            .iter()
            .map(|n| {
                if *n == self.me {
                    self.durable
                } else {
                    self.matched.get(n).copied().unwrap_or(0)
                }
            })
            .collect();
        pos.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&c) = pos.get(self.cfg.quorum().saturating_sub(1)) else {
            return;
        };
        let own_term = c
            .checked_sub(1)
            .and_then(|s| self.store.term_at(s))
            .is_some_and(|t| t == self.term);
        if c > self.commit && own_term {
            self.commit = c;
            self.ack_below(c, Durability::Quorum);
        }
    }

    fn ack_local(&mut self) {
        self.ack_below(self.durable, Durability::Local);
    }

    /// Acknowledges the pending appends of mode `d` below `upto`.
    fn ack_below(&mut self, upto: u64, d: Durability) {
        let done: Vec<u64> = self
            .pending
            .range(..upto)
            .filter(|(_, m)| **m == d)
            .map(|(s, _)| *s)
            .collect();
        for s in done {
            self.pending.remove(&s);
            self.out.push_back(Output::Acked { seq: s });
        }
    }

    fn check_majority(&mut self, now: Instant) {
        let silence = self.cfg.silence();
        let heard = 1 + self
            .peers()
            .iter()
            .filter(|p| {
                self.heard
                    .get(p)
                    .is_some_and(|t| now.saturating_duration_since(*t) <= silence)
            })
            .count();
        if heard < self.cfg.quorum().min(self.members.len()) {
            // Cut off from a majority: stop accepting writes.
            self.signal(Signal::SteppedDown);
            self.leader = None;
            self.last_leader = now;
            self.abandon_pending();
        }
    }

    fn abandon_pending(&mut self) {
        for (s, _) in core::mem::take(&mut self.pending) {
            self.out.push_back(Output::Abandoned { seq: s });
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
