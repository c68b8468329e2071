//! Replicated logs in the simulator: one [`LogReplica`] per host, a disk model with sync
//! latency that a crash empties of what was not synced, a client that writes to whoever leads,
//! and a Jepsen-style checker over the history.
//!
//! This module owns the host machine ([`LogHost`]), its simulated disk, the workload and the
//! checks. The replicas talk in raw datagrams here (each replication message is one datagram,
//! with catch-up chunks capped to fit); [`crate::meshlog`] runs them inside `Node`s over their
//! encrypted sessions, with the same client and checks. The checks, after every step and at
//! the end:
//! - never two leaders in one term;
//! - committed prefixes equal on every live host;
//! - at the end, after healing, every acknowledged write is in every host's log, and all logs
//!   are equal.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use proto_core::replication::machine::{Durability, LogReplica, Output};
use proto_core::replication::role::Role;
use proto_core::replication::store::{Event as StoredEvent, LogStore, MemLog};
use proto_core::replication::ReplicationConfig;
use proto_core::{Instant, NodeId};

use crate::machine::{ContractError, Machine};
use crate::scenarios::{host_addr, identity};
use crate::{Fault, HostId, LinkConfig, ScheduledFault, World};

/// What a host's disk holds durably.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// The term.
    pub term: u64,
    /// The vote in that term.
    pub vote: Option<NodeId>,
    /// The log's durable events.
    pub events: Vec<StoredEvent>,
}

/// Every host's disk, surviving crashes.
pub type Disks = Rc<RefCell<Vec<Disk>>>;

/// What a log host tells its application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// An append is on a majority.
    Acked {
        /// Its sequence.
        seq: u64,
    },
    /// This host stopped leading before an append was acknowledged.
    Abandoned {
        /// Its sequence.
        seq: u64,
    },
    /// The role changed.
    Role {
        /// The new role.
        to: Role,
        /// The term then.
        term: u64,
    },
}

/// One host running one replica of the log.
#[derive(Debug)]
pub struct LogHost {
    idx: usize,
    /// The replica.
    pub replica: LogReplica<MemLog>,
    ids: Rc<[NodeId]>,
    disks: Disks,
    sync_latency: Duration,
    /// Syncs in progress: when each completes, what it makes durable.
    syncing: VecDeque<(Instant, u64, Disk)>,
    /// Messages waiting for the syncs before them (term and vote must be durable first).
    held: VecDeque<(SocketAddr, Vec<u8>)>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<LogEvent>,
}

/// The log's id in every message.
const LOG: u64 = 0x0106;

impl LogHost {
    fn new(idx: usize, ids: Rc<[NodeId]>, disks: Disks, now: Instant, sync: Duration) -> LogHost {
        let disk = disks.borrow()[idx].clone();
        let mut store = MemLog::new(1_000_000, 4096);
        for e in &disk.events {
            // The disk only ever holds what a store accepted, in order.
            let _ = store.append(e.seq, e.term, e.at, &e.payload);
        }
        let cfg = ReplicationConfig {
            factor: ids.len() as u8,
            heartbeat_ms: 100,
            ..ReplicationConfig::default()
        };
        let mut replica = LogReplica::new(
            cfg,
            LOG,
            ids[idx],
            ids.to_vec(),
            store,
            disk.term,
            disk.vote,
            100_000_000,
            now,
        );
        // Each message is one datagram.
        replica.set_chunk_limits(16, 900);
        LogHost {
            idx,
            replica,
            ids,
            disks,
            sync_latency: sync,
            syncing: VecDeque::new(),
            held: VecDeque::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Appends `payload` if this host leads.
    pub fn append(&mut self, now: Instant, payload: &[u8]) -> Option<u64> {
        let seq = self.replica.append(now, payload, Durability::Quorum).ok()?;
        self.drain(now);
        Some(seq)
    }

    fn drain(&mut self, now: Instant) {
        while let Some(o) = self.replica.poll_output() {
            match o {
                Output::Send { to, bytes } => {
                    let Some(j) = self.ids.iter().position(|i| *i == to) else {
                        continue;
                    };
                    let dst = host_addr(j);
                    if self.syncing.is_empty() {
                        self.out.push_back((dst, bytes));
                    } else {
                        self.held.push_back((dst, bytes));
                    }
                }
                Output::Persist { upto } => {
                    let s = self.replica.store();
                    let snap = Disk {
                        term: self.replica.term(),
                        vote: self.replica.voted_for(),
                        events: s
                            .read(s.first_seq(), usize::MAX, usize::MAX)
                            .into_iter()
                            .filter(|e| e.seq < upto)
                            .collect(),
                    };
                    self.syncing
                        .push_back((now.saturating_add(self.sync_latency), upto, snap));
                }
                Output::Acked { seq } => self.events.push_back(LogEvent::Acked { seq }),
                Output::Abandoned { seq } => self.events.push_back(LogEvent::Abandoned { seq }),
                Output::Transition { change, term } => self.events.push_back(LogEvent::Role {
                    to: change.to,
                    term,
                }),
                _ => {}
            }
        }
    }

    fn complete_syncs(&mut self, now: Instant) {
        while self.syncing.front().is_some_and(|(at, _, _)| *at <= now) {
            if let Some((_, upto, snap)) = self.syncing.pop_front() {
                self.disks.borrow_mut()[self.idx] = snap;
                self.replica.on_persisted(now, upto);
                self.drain(now);
            }
        }
        if self.syncing.is_empty() {
            self.out.extend(self.held.drain(..));
        }
    }
}

impl Machine for LogHost {
    type Event = LogEvent;

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), ContractError> {
        if let Some(j) = (0..self.ids.len()).find(|j| host_addr(*j) == from) {
            // A malformed datagram changes nothing (the sweep never makes one).
            let _ = self.replica.on_message(now, self.ids[j], bytes);
            self.drain(now);
        }
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), ContractError> {
        self.complete_syncs(now);
        if self.replica.poll_timeout() <= now {
            self.replica.on_tick(now);
            self.drain(now);
        }
        self.complete_syncs(now);
        Ok(())
    }

    fn poll_transmit(
        &mut self,
        _now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, ContractError> {
        crate::machine::pop_datagram(&mut self.out, buf)
    }

    fn poll_event(&mut self) -> Option<LogEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let sync = self.syncing.front().map(|(at, _, _)| *at);
        Some(match sync {
            Some(s) => s.min(self.replica.poll_timeout()),
            None => self.replica.poll_timeout(),
        })
    }
}

/// How a replicated-log run is set up.
#[derive(Debug, Clone, Copy)]
pub struct LogParams {
    /// World seed (also draws the faults).
    pub seed: u64,
    /// Replicas (3 or 5 typically).
    pub nodes: usize,
    /// Random faults until this instant, then everything heals and restarts.
    pub chaos_until: Instant,
    /// The run ends here.
    pub end: Instant,
    /// Every link.
    pub link: LinkConfig,
    /// How long a sync takes.
    pub sync_latency: Duration,
    /// A write every this often, to whoever leads (until 3 s before the end).
    pub write_every: Duration,
}

impl Default for LogParams {
    fn default() -> Self {
        LogParams {
            seed: 1,
            nodes: 3,
            chaos_until: Instant::from_millis(20_000),
            end: Instant::from_millis(30_000),
            link: LinkConfig::with_latency(Duration::from_millis(2)),
            sync_latency: Duration::from_millis(2),
            write_every: Duration::from_millis(40),
        }
    }
}

/// The client's history and what the checker saw.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Writes attempted (value → host).
    pub attempted: BTreeMap<u64, usize>,
    /// Writes acknowledged (values).
    pub acked: BTreeSet<u64>,
    /// When each acknowledgement came, and from which host.
    pub ack_times: Vec<(Instant, usize)>,
    /// When each write was accepted (appended by a leader), and by which host.
    pub accept_times: Vec<(Instant, usize)>,
    /// When each host became leader.
    pub leader_times: Vec<(Instant, usize)>,
    /// Writes abandoned.
    pub abandoned: usize,
    /// Who led each term.
    pub leaders: BTreeMap<u64, BTreeSet<usize>>,
    /// Leader changes seen.
    pub elections: usize,
    /// (host, seq) → value of writes in flight.
    pub(crate) in_flight: BTreeMap<(usize, u64), u64>,
}

impl History {
    /// A leader accepted write `value` as its event `seq`.
    pub(crate) fn accepted(&mut self, now: Instant, host: usize, seq: u64, value: u64) {
        self.attempted.insert(value, host);
        self.in_flight.insert((host, seq), value);
        self.accept_times.push((now, host));
    }

    /// `host` acknowledged its event `seq`.
    pub(crate) fn acked(&mut self, now: Instant, host: usize, seq: u64) {
        if let Some(v) = self.in_flight.remove(&(host, seq)) {
            self.acked.insert(v);
            self.ack_times.push((now, host));
        }
    }

    /// `host` abandoned its event `seq`.
    pub(crate) fn abandoned(&mut self, host: usize, seq: u64) {
        self.in_flight.remove(&(host, seq));
        self.abandoned += 1;
    }

    /// `host` became leader of `term`; an error if another host led it too.
    pub(crate) fn led(&mut self, now: Instant, host: usize, term: u64) -> Result<(), String> {
        self.elections += 1;
        self.leader_times.push((now, host));
        let ls = self.leaders.entry(term).or_default();
        ls.insert(host);
        if ls.len() > 1 {
            return Err(format!("two leaders in term {term}: {ls:?}"));
        }
        Ok(())
    }
}

/// The faults of a run, drawn from its seed: every 300 ms to 1 s, one of a symmetric
/// partition, a one-way block, a crash, a restart of a crashed host, a pause, or a heal.
#[must_use]
pub fn faults(p: &LogParams) -> Vec<ScheduledFault> {
    let mut r = proto_core::Seed::from_u64(p.seed).rng("replog-faults", 0);
    let mut out = Vec::new();
    let mut at = Instant::from_millis(1_000);
    let mut down: BTreeSet<u32> = BTreeSet::new();
    let n = p.nodes as u64;
    while at < p.chaos_until {
        let h = HostId(r.below(n) as u32);
        let fault = match r.below(6) {
            0 => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for i in 0..p.nodes as u32 {
                    if r.below(2) == 0 {
                        a.push(HostId(i));
                    } else {
                        b.push(HostId(i));
                    }
                }
                Fault::Partition { a, b }
            }
            1 => Fault::Block {
                from: vec![h],
                to: vec![HostId(((h.0 as u64 + 1) % n) as u32)],
            },
            2 if (down.len() as u64) < (n - 1) / 2 && !down.contains(&h.0) => {
                down.insert(h.0);
                Fault::Crash(h)
            }
            3 => match down.pop_first() {
                Some(d) => Fault::Restart(HostId(d)),
                None => Fault::HealAll,
            },
            4 => Fault::Pause(h, Duration::from_millis(100 + r.below(600))),
            _ => Fault::HealAll,
        };
        out.push(ScheduledFault { at, fault });
        at = at.saturating_add(Duration::from_millis(300 + r.below(700)));
    }
    out.push(ScheduledFault {
        at: p.chaos_until,
        fault: Fault::HealAll,
    });
    for d in down {
        out.push(ScheduledFault {
            at: p.chaos_until,
            fault: Fault::Restart(HostId(d)),
        });
    }
    out
}

/// Builds the world: hosts, the client, the checks after every step, the faults.
#[must_use]
pub fn replog(p: LogParams) -> (World<LogHost>, Rc<RefCell<History>>) {
    let mut w: World<LogHost> = World::new(p.seed);
    w.set_default_link(p.link);
    let ids: Rc<[NodeId]> = (0..p.nodes).map(|i| identity(i).node_id()).collect();
    let disks: Disks = Rc::new(RefCell::new(vec![Disk::default(); p.nodes]));
    for i in 0..p.nodes {
        let (ids, disks) = (ids.clone(), disks.clone());
        let sync = p.sync_latency;
        w.add_host(format!("r{i}"), host_addr(i), move |s| {
            LogHost::new(i, ids.clone(), disks.clone(), s.now, sync)
        });
    }
    for f in faults(&p) {
        w.schedule(f);
    }
    let history = Rc::new(RefCell::new(History::default()));
    start_client(&mut w, history.clone(), &p);
    {
        let h = history.clone();
        w.on_event(move |w, host, ev| {
            let i = host.0 as usize;
            let now = w.now();
            let res = match ev {
                LogEvent::Acked { seq } => {
                    h.borrow_mut().acked(now, i, *seq);
                    Ok(())
                }
                LogEvent::Abandoned { seq } => {
                    h.borrow_mut().abandoned(i, *seq);
                    Ok(())
                }
                LogEvent::Role {
                    to: Role::Leader,
                    term,
                } => h.borrow_mut().led(now, i, *term),
                _ => Ok(()),
            };
            if let Err(e) = res {
                w.violation(e);
            }
        });
    }
    w.invariant(agreement(p.nodes));
    (w, history)
}

/// What the checker reads of a host's log (a `LogHost`, or a `Node` holding the log).
pub trait LogView {
    /// Events below this are committed here.
    fn commit(&self) -> u64;
    /// The first retained event.
    fn first(&self) -> u64;
    /// The term of a retained event.
    fn term_at(&self, seq: u64) -> Option<u64>;
    /// The values (the payloads' first 8 bytes) of every retained event.
    fn values(&self) -> Vec<u64>;
    /// Whether this host leads the log.
    fn leads(&self) -> bool;
    /// Appends `value` (quorum durability) as the leader; its sequence.
    fn append_value(&mut self, now: Instant, value: u64) -> Option<u64>;
}

impl LogView for LogHost {
    fn commit(&self) -> u64 {
        self.replica.commit()
    }
    fn first(&self) -> u64 {
        self.replica.store().first_seq()
    }
    fn term_at(&self, seq: u64) -> Option<u64> {
        self.replica.store().term_at(seq)
    }
    fn values(&self) -> Vec<u64> {
        let s = self.replica.store();
        values_of(&s.read(s.first_seq(), usize::MAX, usize::MAX))
    }
    fn leads(&self) -> bool {
        self.replica.role() == Role::Leader
    }
    fn append_value(&mut self, now: Instant, value: u64) -> Option<u64> {
        self.append(now, &value.to_le_bytes())
    }
}

/// The client: a unique value every `write_every`, to whoever leads, from 500 ms until 3 s
/// before the end (so that the logs can settle for the final check).
pub fn start_client<M: Machine + LogView + 'static>(
    w: &mut World<M>,
    history: Rc<RefCell<History>>,
    p: &LogParams,
) {
    fn tick<M: Machine + LogView + 'static>(
        w: &mut World<M>,
        h: Rc<RefCell<History>>,
        n: usize,
        every: Duration,
        end: Instant,
    ) {
        let now = w.now();
        if now >= end {
            return;
        }
        for i in 0..n {
            let host = HostId(i as u32);
            if w.machine(host).is_some_and(LogView::leads) {
                let value = h.borrow().attempted.len() as u64 + 1;
                if let Some(Some(seq)) = w.with_machine(host, |m, t| m.append_value(t, value)) {
                    h.borrow_mut().accepted(now, i, seq, value);
                }
            }
        }
        let next = now.saturating_add(every);
        w.at(next, move |w| tick(w, h, n, every, end));
    }
    let (n, every) = (p.nodes, p.write_every);
    let stop = p.end.saturating_sub(Duration::from_secs(3));
    w.at(Instant::from_millis(500), move |w| {
        tick(w, history, n, every, stop)
    });
}

/// The value each event carries.
pub(crate) fn values_of(events: &[StoredEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| {
            e.payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        })
        .collect()
}

/// The check after every step that committed logs agree: each host's committed events are
/// checked against one reference (the terms of the longest committed prefix seen),
/// incrementally (a committed event never changes, so each is checked once per host; a host
/// that restarts is checked again from its new commit point).
pub fn agreement<M: Machine + LogView>(
    nodes: usize,
) -> impl FnMut(&World<M>) -> Result<(), String> {
    let mut reference: Vec<u64> = Vec::new();
    let mut checked: Vec<u64> = vec![0; nodes];
    move |w| {
        for (i, done) in checked.iter_mut().enumerate() {
            let Some(m) = w.machine(HostId(i as u32)) else {
                *done = 0;
                continue;
            };
            let commit = m.commit();
            if commit < *done {
                *done = commit;
            }
            for seq in (*done).max(m.first())..commit {
                let Some(t) = m.term_at(seq) else {
                    return Err(format!("host {i} committed event {seq} it does not hold"));
                };
                match reference.get(seq as usize) {
                    Some(want) if *want != t => {
                        return Err(format!(
                            "host {i} committed event {seq} of term {t}, another host term {want}"
                        ));
                    }
                    Some(_) => {}
                    None => reference.push(t),
                }
            }
            *done = commit;
        }
        Ok(())
    }
}

/// The final check: every host is up, all logs are equal, and every acknowledged write is in
/// each.
pub fn check_final<M: Machine + LogView>(
    w: &World<M>,
    h: &History,
    p: &LogParams,
) -> Result<(), String> {
    let mut logs = Vec::new();
    for i in 0..p.nodes {
        let m = w
            .machine(HostId(i as u32))
            .ok_or_else(|| format!("host {i} down at the end"))?;
        logs.push(m.values());
    }
    for (i, l) in logs.iter().enumerate() {
        if *l != logs[0] {
            return Err(format!(
                "seed {}: host {i}'s log differs from host 0's after healing",
                p.seed
            ));
        }
        for v in &h.acked {
            if !l.contains(v) {
                return Err(format!(
                    "seed {}: acknowledged write {v} missing on host {i}",
                    p.seed
                ));
            }
        }
    }
    Ok(())
}

/// Runs a replicated-log world to its end and checks the final state: every acknowledged write
/// is in every host's log, and all logs are equal. Returns the history.
pub fn run_and_check(p: LogParams) -> Result<History, String> {
    let (mut w, history) = replog(p);
    w.run_until(p.end).map_err(|f| format!("{f:?}"))?;
    let h = history.borrow().clone();
    check_final(&w, &h, &p)?;
    Ok(h)
}
