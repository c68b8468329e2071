//! Replicated logs over real nodes: every host is a `Node` holding one replica of the log
//! `orders`, its messages on log streams inside the encrypted sessions, its syncs on a
//! simulated disk, and the same client and checker as [`crate::replog`].
//!
//! This module owns the workload (sessions kept up as an application would, a client writing
//! to whoever leads, a disk that completes each persistence ticket after a sync latency and
//! loses an unfinished one on a crash) and nothing inside the node: it uses only `Node`'s
//! public log API (`open_log`, `log_append`, `log_persisted`, `log_status`, `log_read`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto_core::replication::store::{Event as StoredEvent, HardState, LogStore, MemLog};
use proto_core::replication::{
    Durability, LogEvent, LogId, LogSpec, Placement, ReplicationConfig, Retention, Role,
    StoreError, Sync,
};
use proto_core::{Event, Instant, Node, NodeId, PeerSpec};

use crate::replog::{agreement, faults, start_client, values_of, History, LogParams, LogView};
use crate::scenarios::{host_addr, identity, node_factory};
use crate::{HostId, World};

/// The log every host holds.
pub const LOG: &str = "orders";

/// One persistence request in flight: what it makes durable once its sync completes.
#[derive(Debug, Clone)]
struct Op {
    incarnation: u32,
    ticket: u64,
    /// Drop the disk's events from here, then add `events`.
    from: u64,
    reset: Option<u64>,
    events: Vec<StoredEvent>,
    state: HardState,
}

/// What one host's disk holds durably, and the sync in progress (lost on a crash).
#[derive(Debug, Clone, Default)]
pub struct Disk {
    first: u64,
    /// Durable events, from `first`.
    pub events: Vec<StoredEvent>,
    /// Durable term and vote.
    pub state: HardState,
    incarnation: u32,
    pending: Option<Op>,
}

impl Disk {
    fn apply(&mut self, op: Op) {
        if let Some(s) = op.reset {
            self.events.clear();
            self.first = s;
        }
        let keep = op.from.saturating_sub(self.first) as usize;
        self.events.truncate(keep);
        self.events.extend(op.events);
        self.state = op.state;
    }
}

/// Every host's disk (shared with the stores inside the nodes, so `Send`).
pub type Disks = Arc<Mutex<Vec<Disk>>>;

fn lock(d: &Disks) -> std::sync::MutexGuard<'_, Vec<Disk>> {
    d.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A log store in memory whose `persist` hands the changes since the last one to the host's
/// disk as a pending sync ([`Sync::Later`]); the workload completes it.
#[derive(Debug)]
pub struct SimStore {
    mem: MemLog,
    host: usize,
    disks: Disks,
    /// The lowest sequence changed since the last persist, and a skip-ahead since then.
    dirty: u64,
    reset: Option<u64>,
}

impl SimStore {
    /// The store host `host` restarts with: what its disk holds durably.
    #[must_use]
    pub fn restore(host: usize, disks: Disks) -> SimStore {
        let mut mem = MemLog::new(1_000_000, 64 << 10);
        let (first, events, next) = {
            let mut all = lock(&disks);
            let d = all.get_mut(host).expect("a disk per host");
            d.incarnation += 1;
            d.pending = None;
            (d.first, d.events.clone(), d.first + d.events.len() as u64)
        };
        let _ = mem.skip_to(first);
        for e in &events {
            // The disk only ever holds what a store accepted, in order.
            let _ = mem.append(e.seq, e.term, e.at, &e.payload);
        }
        SimStore {
            mem,
            host,
            disks,
            dirty: next,
            reset: None,
        }
    }
}

impl LogStore for SimStore {
    fn append(&mut self, seq: u64, term: u64, at: Instant, p: &[u8]) -> Result<(), StoreError> {
        self.mem.append(seq, term, at, p)?;
        self.dirty = self.dirty.min(seq);
        Ok(())
    }
    fn term_at(&self, seq: u64) -> Option<u64> {
        self.mem.term_at(seq)
    }
    fn read(&self, from: u64, n: usize, b: usize) -> Vec<StoredEvent> {
        self.mem.read(from, n, b)
    }
    fn first_seq(&self) -> u64 {
        self.mem.first_seq()
    }
    fn next_seq(&self) -> u64 {
        self.mem.next_seq()
    }
    fn skip_to(&mut self, seq: u64) -> Result<(), StoreError> {
        self.mem.skip_to(seq)?;
        self.reset = Some(seq);
        self.dirty = seq;
        Ok(())
    }
    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        self.mem.truncate_from(from)?;
        self.dirty = self.dirty.min(from);
        Ok(())
    }
    fn apply_retention(&mut self, r: &Retention, now: Instant, keep: u64) -> u64 {
        self.mem.apply_retention(r, now, keep)
    }
    fn bytes(&self) -> u64 {
        self.mem.bytes()
    }
    fn persist(&mut self, upto: u64, state: HardState) -> Sync {
        let from = self.dirty.max(self.mem.first_seq());
        let events: Vec<StoredEvent> = if upto > from {
            self.mem.read(from, (upto - from) as usize, usize::MAX)
        } else {
            Vec::new()
        };
        let mut all = lock(&self.disks);
        if let Some(d) = all.get_mut(self.host) {
            d.pending = Some(Op {
                incarnation: d.incarnation,
                ticket: 0,
                from: self.dirty,
                reset: self.reset.take(),
                events,
                state,
            });
        }
        self.dirty = self.dirty.max(upto);
        Sync::Later
    }
    fn hard_state(&self) -> HardState {
        lock(&self.disks)
            .get(self.host)
            .map(|d| d.state)
            .unwrap_or_default()
    }
}

/// The log's view the checker reads: the committed part (after healing, the whole log).
impl LogView for Node {
    fn commit(&self) -> u64 {
        self.log_status(LogId::from_name(LOG))
            .map_or(0, |s| s.commit)
    }
    fn first(&self) -> u64 {
        self.log_status(LogId::from_name(LOG))
            .map_or(0, |s| s.first_seq)
    }
    fn term_at(&self, seq: u64) -> Option<u64> {
        let e = self.log_read(LogId::from_name(LOG), seq, 1, 1).ok()?;
        e.first().filter(|e| e.seq == seq).map(|e| e.term)
    }
    fn values(&self) -> Vec<u64> {
        let id = LogId::from_name(LOG);
        let Some(s) = self.log_status(id) else {
            return Vec::new();
        };
        if s.commit != s.next_seq {
            // Something is not committed: make the logs differ, so the check says so.
            return vec![u64::MAX];
        }
        values_of(
            &self
                .log_read(id, s.first_seq, usize::MAX, usize::MAX)
                .unwrap_or_default(),
        )
    }
    fn leads(&self) -> bool {
        self.log_status(LogId::from_name(LOG))
            .is_some_and(|s| s.role == Role::Leader)
    }
    fn append_value(&mut self, now: Instant, value: u64) -> Option<u64> {
        self.log_append(
            now,
            LogId::from_name(LOG),
            &value.to_le_bytes(),
            Durability::Quorum,
        )
        .ok()
    }
}

/// Connects every pair of live hosts that has no session (the host with the higher index
/// initiates), as an application keeping its mesh up would, and again every 250 ms.
fn keep_connected(w: &mut World<Node>, ids: Rc<[NodeId]>) {
    let n = ids.len();
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            let (hi, hj) = (HostId(i as u32), HostId(j as u32));
            let (Some(mi), Some(mj)) = (w.machine(hi), w.machine(hj)) else {
                continue;
            };
            // The higher index initiates; the lower one only when the higher one still holds
            // a session the lower one lost (it restarted), so that it never would.
            let lacks = mi.session_with(&ids[j]).is_none();
            if !lacks || (i < j && mj.session_with(&ids[i]).is_none()) {
                continue;
            }
            let spec = PeerSpec::known(identity(j).public(), mj.static_key());
            let _ = w.with_machine(hi, |m, now| m.connect(now, host_addr(j), spec));
        }
    }
    let next = w.now().saturating_add(Duration::from_millis(250));
    w.at(next, move |w| keep_connected(w, ids));
}

/// Completes a sync at `at`: the disk makes `op` durable and the node hears of it. A crash
/// (or a restart) before then loses it; a paused host's sync completes, but the process
/// hears of it only once it runs again.
fn complete_sync(w: &mut World<Node>, disks: Disks, host: HostId, op: Op, at: Instant) {
    w.at(at, move |w| {
        let i = host.0 as usize;
        let current = w.machine(host).is_some()
            && lock(&disks)
                .get(i)
                .is_some_and(|d| d.incarnation == op.incarnation);
        if !current {
            return;
        }
        if !w.is_up(host) {
            let later = w.now().saturating_add(Duration::from_millis(5));
            complete_sync(w, disks, host, op, later);
            return;
        }
        let ticket = op.ticket;
        if let Some(d) = lock(&disks).get_mut(i) {
            d.apply(op);
        }
        let log = LogId::from_name(LOG);
        let _ = w.with_machine(host, |m, t| m.log_persisted(t, log, ticket));
    });
}

/// Builds the world over nodes: each host opens [`LOG`] (pinned on every host, heartbeat
/// 100 ms) over its disk, the faults of [`faults`] come from the seed, and the client and the
/// checks are those of [`crate::replog`].
#[must_use]
pub fn meshlog(p: LogParams) -> (World<Node>, Rc<RefCell<History>>) {
    let mut w: World<Node> = World::new(p.seed);
    w.set_default_link(p.link);
    let ids: Rc<[NodeId]> = (0..p.nodes).map(|i| identity(i).node_id()).collect();
    let disks: Disks = Arc::new(Mutex::new(vec![Disk::default(); p.nodes]));
    let cfg = ReplicationConfig {
        factor: p.nodes as u8,
        heartbeat_ms: 100,
        placement: Placement::Pinned(ids.to_vec()),
        ..ReplicationConfig::default()
    };
    for i in 0..p.nodes {
        let (disks, cfg) = (disks.clone(), cfg.clone());
        let mut make = node_factory(i);
        w.add_host(format!("n{i}"), host_addr(i), move |s| {
            let mut n = make(s);
            let store = SimStore::restore(i, disks.clone());
            let spec = LogSpec::new(cfg.clone(), Box::new(store));
            if let Err(e) = n.open_log(s.now, LOG, spec) {
                panic!("the log opens: {e}");
            }
            n
        });
    }
    for f in faults(&p) {
        w.schedule(f);
    }
    {
        let ids = ids.clone();
        w.at(Instant::from_millis(10), move |w| keep_connected(w, ids));
    }
    let history = Rc::new(RefCell::new(History::default()));
    start_client(&mut w, history.clone(), &p);
    {
        let h = history.clone();
        let sync = p.sync_latency;
        w.on_event(move |w, host, ev| {
            let i = host.0 as usize;
            let now = w.now();
            let Event::Log(ev) = ev else { return };
            let res = match ev {
                LogEvent::Acked { seq, .. } => {
                    h.borrow_mut().acked(now, i, *seq);
                    Ok(())
                }
                LogEvent::Abandoned { seq, .. } => {
                    h.borrow_mut().abandoned(i, *seq);
                    Ok(())
                }
                LogEvent::Role {
                    role: Role::Leader,
                    term,
                    ..
                } => h.borrow_mut().led(now, i, *term),
                LogEvent::PersistRequested { ticket, .. } => {
                    // The store queued the op; the sync completes after the latency, unless
                    // the host crashed (or restarted) meanwhile.
                    let ticket = *ticket;
                    let op = lock(&disks).get_mut(i).and_then(|d| {
                        d.pending.take().map(|mut op| {
                            op.ticket = ticket;
                            op
                        })
                    });
                    if let Some(op) = op {
                        complete_sync(w, disks.clone(), host, op, now.saturating_add(sync));
                    }
                    Ok(())
                }
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

/// Runs the world over nodes to its end and checks the final state as
/// [`crate::replog::run_and_check`] does.
pub fn run_and_check(p: LogParams) -> Result<History, String> {
    let (mut w, history) = meshlog(p);
    w.run_until(p.end).map_err(|f| format!("{f:?}"))?;
    let h = history.borrow().clone();
    crate::replog::check_final(&w, &h, &p)?;
    Ok(h)
}
