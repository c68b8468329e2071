//! A replicated log over three nodes whose disks sync only when the input says and whose
//! nodes crash and restart from what their disks hold, against a reference model: the
//! coordinator, elections and catch-up across crashes, with durability as a real store
//! gives it.
//!
//! Each node's store keeps its log in memory and answers every persist with
//! [`Sync::Later`]: what the request covers becomes durable on the node's [`Disk`] only when
//! a `Sync` step completes it (the node then hears `log_persisted`). A crash loses the
//! memory, the sync in flight and the datagrams towards the node; a restart opens the log
//! over what the disk holds, with the same identity and fresh randomness. The nodes keep
//! their sessions up as an application would (the one that lacks a session dials).
//!
//! After every step:
//! - **committed means forever**: an event any node ever reported committed at a sequence is
//!   the one every node reports there, then and later, across crashes;
//! - **acknowledged means committed**: an append acknowledged at quorum is that event, and no
//!   other append is acknowledged at its sequence;
//! - **one leader per term**: no two nodes lead in the same term (a node that forgot its
//!   vote in a crash could break this);
//! - **one sync at a time**: a node never asks for a second sync of a log before the first
//!   completed.
//!
//! At the end every node restarts, syncs complete at once and the wire is clean: within 10 s
//! every node follows one leader, within 10 tries of 3 s a client retrying on whoever leads
//! gets a quorum append acknowledged, and within 5 s more every node has caught up to hold
//! every acknowledged append, committed.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use proto_core::crypto::RustCrypto;
use proto_core::replication::store::{Event as StoredEvent, HardState, LogStore};
use proto_core::replication::{
    Durability, LogEvent, LogId, LogSpec, MemLog, Placement, ReplicationConfig, Retention, Role,
    StoreError, Sync,
};
use proto_core::wire;
use proto_core::{Event, Identity, Instant, Node, NodeId, Seed};

use crate::node::{node_at, WireOp};

/// Nodes in the mesh.
const N: usize = 3;
const MAX_STEPS: usize = 512;
/// Most datagrams in flight towards one node (older ones are lost).
const IN_FLIGHT: usize = 256;
/// Rounds of 50 ms on a clean wire at the end.
const CLEAN_ROUNDS: usize = 200;
const MAX_EVENTS: usize = 4096;
const MAX_EVENT_BYTES: usize = 256;

/// The log every node holds.
const LOG: &str = "fuzz";

fn identity_seed(i: usize) -> Seed {
    Seed::from_u64(200 + i as u64)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 1, i as u8 + 1], 4000))
}

/// What a node's disk holds durably, and the sync its store asked for last.
#[derive(Debug, Default)]
pub struct Disk {
    /// The first durable sequence.
    first: u64,
    /// Durable events, from `first` without gaps.
    events: Vec<StoredEvent>,
    /// Durable term and vote.
    state: HardState,
    /// What the last persist asks to make durable (taken by the mesh with its ticket).
    requested: Option<Image>,
}

/// The disk's contents once a sync completes.
#[derive(Debug, Clone)]
struct Image {
    first: u64,
    events: Vec<StoredEvent>,
    state: HardState,
}

type SharedDisk = Arc<Mutex<Disk>>;

fn lock(d: &SharedDisk) -> std::sync::MutexGuard<'_, Disk> {
    d.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A store in memory whose persists are synced by the mesh (see the module docs).
struct DiskStore {
    mem: MemLog,
    disk: SharedDisk,
}

impl DiskStore {
    /// The store a node starts with: what its disk holds.
    fn restore(disk: SharedDisk) -> DiskStore {
        let mut mem = MemLog::new(MAX_EVENTS, MAX_EVENT_BYTES);
        {
            let mut d = lock(&disk);
            d.requested = None;
            // The disk only ever holds what a store accepted, in order.
            let _ = mem.skip_to(d.first);
            for e in &d.events {
                let _ = mem.append(e.seq, e.term, e.at, &e.payload);
            }
        }
        DiskStore { mem, disk }
    }
}

impl LogStore for DiskStore {
    fn append(&mut self, seq: u64, term: u64, at: Instant, p: &[u8]) -> Result<(), StoreError> {
        self.mem.append(seq, term, at, p)
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
        self.mem.skip_to(seq)
    }
    fn truncate_from(&mut self, from: u64) -> Result<(), StoreError> {
        self.mem.truncate_from(from)
    }
    fn apply_retention(&mut self, r: &Retention, now: Instant, keep: u64) -> u64 {
        self.mem.apply_retention(r, now, keep)
    }
    fn bytes(&self) -> u64 {
        self.mem.bytes()
    }
    fn persist(&mut self, upto: u64, state: HardState) -> Sync {
        let first = self.mem.first_seq();
        let mut events: Vec<StoredEvent> = self
            .mem
            .read(first, usize::MAX, usize::MAX)
            .into_iter()
            .take_while(|e| e.seq < upto)
            .collect();
        let mut d = lock(&self.disk);
        // Durable events past `upto` stay durable while memory still holds them unchanged
        // (nothing truncated them since).
        let next = first + events.len() as u64;
        let kept = d
            .events
            .iter()
            .filter(|e| e.seq >= next)
            .take_while(|e| {
                let held = self.mem.read(e.seq, 1, usize::MAX);
                held.first().is_some_and(|h| h == *e)
            })
            .cloned()
            .collect::<Vec<_>>();
        if kept.first().is_none_or(|e| e.seq == next) {
            events.extend(kept);
        }
        d.requested = Some(Image {
            first,
            events,
            state,
        });
        Sync::Later
    }
    fn hard_state(&self) -> HardState {
        lock(&self.disk).state
    }
}

/// Three nodes (each up or crashed), their disks, and the datagrams in flight between them.
struct Mesh {
    nodes: [Option<Node>; N],
    incarnation: [u64; N],
    disks: [SharedDisk; N],
    /// The sync each node asked for and has not had: its ticket and what it makes durable.
    syncing: [Option<(u64, Image)>; N],
    /// In flight towards node `i`: the sender and the bytes.
    wire: [VecDeque<(usize, Vec<u8>)>; N],
    now: Instant,
    /// Events each node reported since the last check.
    events: [Vec<Event>; N],
    ids: [NodeId; N],
    log: LogId,
    out: Vec<u8>,
    /// Disks that drop the newest event of every sync (for the tests of the model itself).
    lossy: [bool; N],
}

impl Mesh {
    fn new() -> Mesh {
        let mut m = Mesh {
            nodes: [None, None, None],
            incarnation: [0; N],
            disks: Default::default(),
            syncing: Default::default(),
            wire: Default::default(),
            now: Instant::ZERO,
            events: Default::default(),
            ids: core::array::from_fn(|i| Identity::from_seed(&identity_seed(i)).node_id()),
            log: LogId::from_name(LOG),
            out: Vec::new(),
            lossy: [false; N],
        };
        for i in 0..N {
            m.start(i);
        }
        m
    }

    /// A new mesh after clean rounds until a leader is elected (at most 200 of them).
    fn with_leader() -> Mesh {
        let mut m = Mesh::new();
        for _ in 0..200 {
            if m.leader().is_some() {
                break;
            }
            m.round();
        }
        m
    }

    /// Starts node `i` (again): its identity, fresh randomness, the log over its disk.
    fn start(&mut self, i: usize) {
        self.incarnation[i] += 1;
        let seed = 1_000 * self.incarnation[i] + i as u64;
        let mut n = node_at(seed, &identity_seed(i), Arc::new(RustCrypto), self.now);
        self.out.resize(n.config().max_packet_size, 0);
        let cfg = ReplicationConfig {
            factor: N as u8,
            heartbeat_ms: 100,
            placement: Placement::Pinned(self.ids.to_vec()),
            ..ReplicationConfig::default()
        };
        let store = DiskStore::restore(self.disks[i].clone());
        let id = n
            .open_log(self.now, LOG, LogSpec::new(cfg, Box::new(store)))
            .expect("a valid log opens over its disk");
        assert_eq!(id, self.log);
        self.nodes[i] = Some(n);
        self.drain();
    }

    fn crash(&mut self, i: usize) {
        if self.nodes[i].take().is_some() {
            self.syncing[i] = None;
            lock(&self.disks[i]).requested = None;
            self.wire[i].clear();
            self.events[i].clear();
        }
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            self.start(i);
            self.keep_connected();
        }
    }

    /// Completes node `i`'s sync: the disk takes the image, the node hears of it.
    fn sync(&mut self, i: usize) {
        let Some((ticket, mut image)) = self.syncing[i].take() else {
            return;
        };
        if self.lossy[i] {
            image.events.pop();
        }
        {
            let mut d = lock(&self.disks[i]);
            d.first = image.first;
            d.events = image.events;
            d.state = image.state;
        }
        let (now, log) = (self.now, self.log);
        if let Some(n) = self.nodes[i].as_mut() {
            n.log_persisted(now, log, ticket)
                .expect("the ticket the node issued");
        }
        self.drain();
    }

    /// Moves every live node's output onto the wire, its sync request to `syncing` and its
    /// events to `events`.
    fn drain(&mut self) {
        for i in 0..N {
            let Some(n) = self.nodes[i].as_mut() else {
                continue;
            };
            while let Some(t) = n
                .poll_transmit(self.now, &mut self.out)
                .expect("buffer is max_packet_size")
            {
                let bytes = self.out.get(..t.len).expect("within the buffer").to_vec();
                assert!(
                    wire::decode(&bytes).is_ok(),
                    "node {i} sent an undecodable packet"
                );
                let Some(to) = (0..N).find(|&k| addr(k) == t.destination) else {
                    continue;
                };
                let q = &mut self.wire[to];
                if q.len() >= IN_FLIGHT {
                    q.pop_front();
                }
                q.push_back((i, bytes));
            }
            while let Some(ev) = n.poll_event() {
                if let Event::Log(LogEvent::PersistRequested { ticket, .. }) = ev {
                    let image = lock(&self.disks[i]).requested.take();
                    let image = image.expect("a PersistRequested follows the store's persist");
                    assert!(
                        self.syncing[i].is_none(),
                        "node {i} asked for sync {ticket} before its last one completed"
                    );
                    self.syncing[i] = Some((ticket, image));
                } else if self.events[i].len() < 4096 {
                    self.events[i].push(ev);
                }
            }
        }
    }

    /// Hands node `to` the datagram at `index` of its queue (modulo its length).
    fn deliver(&mut self, to: usize, index: usize) -> bool {
        let q = &mut self.wire[to];
        if q.is_empty() {
            return false;
        }
        let Some((from, d)) = q.remove(index % q.len()) else {
            return false;
        };
        self.feed(to, from, &d);
        true
    }

    fn feed(&mut self, to: usize, from: usize, bytes: &[u8]) {
        let now = self.now;
        if let Some(n) = self.nodes[to].as_mut() {
            n.handle_datagram(now, addr(from), bytes)
                .expect("a drained node takes any datagram");
        }
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        let now = self.now;
        for n in self.nodes.iter_mut().flatten() {
            n.handle_timeout(now).expect("drained");
        }
        self.drain();
        self.keep_connected();
    }

    /// Every live node that lacks a session with a live peer dials it: the higher index,
    /// or the lower one when the higher still holds a session the lower lost in a crash.
    fn keep_connected(&mut self) {
        for i in 0..N {
            for j in 0..N {
                let (Some(ni), Some(nj)) = (&self.nodes[i], &self.nodes[j]) else {
                    continue;
                };
                if i == j || ni.session_with(&self.ids[j]).is_some() {
                    continue;
                }
                if i < j && nj.session_with(&self.ids[i]).is_none() {
                    continue;
                }
                let spec = nj.peer_spec();
                let now = self.now;
                if let Some(ni) = self.nodes[i].as_mut() {
                    let _ = ni.connect(now, addr(j), spec);
                }
            }
        }
        self.drain();
    }

    /// Delivers everything in flight (at most `limit` datagrams), syncing as it goes when
    /// `sync`.
    fn settle(&mut self, limit: usize, sync: bool) {
        for _ in 0..limit {
            if sync {
                for i in 0..N {
                    self.sync(i);
                }
            }
            let mut any = false;
            for to in 0..N {
                any |= self.deliver(to, 0);
            }
            if !any && (!sync || self.syncing.iter().all(Option::is_none)) {
                return;
            }
        }
    }

    fn apply(&mut self, op: &WireOp) {
        match *op {
            WireOp::Deliver { to, index } => {
                let _ = self.deliver(usize::from(to) % N, usize::from(index));
            }
            WireOp::Lose { to, index } => {
                let q = &mut self.wire[usize::from(to) % N];
                if !q.is_empty() {
                    let n = q.len();
                    q.remove(usize::from(index) % n);
                }
            }
            WireOp::Duplicate { to, index } => {
                let to = usize::from(to) % N;
                let q = &self.wire[to];
                if !q.is_empty() {
                    let (from, d) = q[usize::from(index) % q.len()].clone();
                    self.feed(to, from, &d);
                }
            }
            WireOp::Advance { ms } => {
                self.advance(Duration::from_millis(u64::from(ms).min(2_000)));
            }
        }
    }

    fn status(&self, i: usize) -> Option<proto_core::replication::LogStatus> {
        self.nodes[i].as_ref()?.log_status(self.log)
    }

    /// Each node's role, term, commit point, tail and sync in flight (for failure messages).
    fn describe(&self) -> String {
        (0..N)
            .map(|i| match self.status(i) {
                Some(s) => format!(
                    "node {i}: {:?} term {} commit {} next {} persisting {}, sessions {:?}",
                    s.role,
                    s.term,
                    s.commit,
                    s.next_seq,
                    s.persisting,
                    self.sessions(i)
                ),
                None => format!("node {i}: down"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether node `i` holds an established session with each node.
    fn sessions(&self, i: usize) -> [bool; N] {
        core::array::from_fn(|j| {
            self.nodes[i].as_ref().is_some_and(|n| {
                n.session_with(&self.ids[j])
                    .and_then(|s| n.session_info(s))
                    .is_some_and(|info| info.established)
            })
        })
    }

    fn leader(&self) -> Option<usize> {
        (0..N).find(|&i| self.status(i).is_some_and(|s| s.role == Role::Leader))
    }

    /// A clean round: syncs complete, everything is delivered, 50 ms pass.
    fn round(&mut self) {
        self.settle(1024, true);
        self.advance(Duration::from_millis(50));
    }
}

/// One step of a [`log_mesh`] input.
#[derive(Arbitrary, Debug)]
pub enum MeshOp {
    /// Node `node % 3` appends (at quorum when `quorum`, else locally).
    Append {
        /// Which node.
        node: u8,
        /// Quorum or local durability.
        quorum: bool,
    },
    /// Node `node % 3`'s disk completes the sync it was asked for.
    Sync {
        /// Which node.
        node: u8,
    },
    /// Node `node % 3` crashes (it stays down until a `Restart`, or the end).
    Crash {
        /// Which node.
        node: u8,
    },
    /// Node `node % 3` starts again from its disk.
    Restart {
        /// Which node.
        node: u8,
    },
    /// Something the wire does (delivery, loss, duplication, time).
    Wire(WireOp),
}

#[derive(Default)]
struct Model {
    /// Appends waiting for their outcome: (node, seq) -> (payload, at quorum).
    pending: BTreeMap<(usize, u64), (Vec<u8>, bool)>,
    /// Acknowledged at quorum: seq -> payload.
    acked: BTreeMap<u64, Vec<u8>>,
    /// Every event seen committed: seq -> (term, payload).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    leaders: BTreeMap<u64, NodeId>,
    next: u32,
}

impl Model {
    fn append(&mut self, m: &mut Mesh, i: usize, d: Durability) -> Option<u64> {
        let payload = [i as u8]
            .into_iter()
            .chain(self.next.to_le_bytes())
            .collect::<Vec<u8>>();
        self.next += 1;
        let (now, log) = (m.now, m.log);
        let seq = m.nodes[i]
            .as_mut()?
            .log_append(now, log, &payload, d)
            .ok()?;
        self.pending
            .insert((i, seq), (payload, d == Durability::Quorum));
        m.drain();
        Some(seq)
    }

    fn forget(&mut self, i: usize) {
        self.pending.retain(|(k, _), _| *k != i);
    }

    fn check(&mut self, m: &mut Mesh) {
        for i in 0..N {
            for ev in m.events[i].drain(..) {
                match ev {
                    Event::Log(LogEvent::Acked { seq, .. }) => {
                        if let Some((payload, true)) = self.pending.remove(&(i, seq)) {
                            let prev = self.acked.insert(seq, payload.clone());
                            assert!(
                                prev.is_none_or(|p| p == payload),
                                "two appends acknowledged at quorum at {seq}"
                            );
                        }
                    }
                    Event::Log(LogEvent::Abandoned { seq, .. }) => {
                        // A leader change dropped it; its sequence may be used again.
                        self.pending.remove(&(i, seq));
                    }
                    _ => {}
                }
            }
            let Some(s) = m.status(i) else { continue };
            if s.role == Role::Leader {
                let prev = *self.leaders.entry(s.term).or_insert(m.ids[i]);
                assert_eq!(prev, m.ids[i], "two leaders in term {}", s.term);
            }
            let Some(n) = &m.nodes[i] else { continue };
            for e in n
                .log_read(m.log, 0, MAX_EVENTS, 1 << 22)
                .unwrap_or_default()
            {
                let now = (e.term, e.payload);
                let seen = self.committed.entry(e.seq).or_insert_with(|| now.clone());
                assert_eq!(
                    *seen, now,
                    "node {i} reports another event committed at {}",
                    e.seq
                );
            }
        }
        for (seq, payload) in &self.acked {
            if let Some((_, p)) = self.committed.get(seq) {
                assert_eq!(
                    p, payload,
                    "acknowledged append {seq} is not the event committed there"
                );
            }
        }
    }
}

/// What a run of [`run`] did, for tests that want to see that it did something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Appends acknowledged at quorum (the final one included).
    pub acked: usize,
    /// Sequences seen committed.
    pub committed: usize,
    /// Terms in which a leader was seen.
    pub terms: usize,
    /// Starts of every node, the first ones included.
    pub starts: u64,
}

/// See the module docs.
pub fn log_mesh(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let ops = core::iter::from_fn(|| {
        if u.is_empty() {
            return None;
        }
        MeshOp::arbitrary(&mut u).ok()
    });
    let _ = run(ops.take(MAX_STEPS));
}

/// Applies one step of an input, then the checks.
fn step(m: &mut Mesh, model: &mut Model, op: MeshOp) {
    match op {
        MeshOp::Append { node, quorum } => {
            let d = if quorum {
                Durability::Quorum
            } else {
                Durability::Local
            };
            let _ = model.append(m, usize::from(node) % N, d);
        }
        MeshOp::Sync { node } => m.sync(usize::from(node) % N),
        MeshOp::Crash { node } => {
            let i = usize::from(node) % N;
            m.crash(i);
            model.forget(i);
        }
        MeshOp::Restart { node } => m.restart(usize::from(node) % N),
        MeshOp::Wire(op) => m.apply(&op),
    }
    model.check(m);
}

/// Runs the steps `ops` with the checks of the module docs (the fuzz target runs at most 512).
///
/// # Panics
///
/// When a check fails.
pub fn run(ops: impl IntoIterator<Item = MeshOp>) -> Summary {
    // Sessions and a leader first, on a clean wire, so that the input meets a working log.
    let mut m = Mesh::with_leader();
    let mut model = Model::default();
    model.check(&mut m);
    for op in ops {
        step(&mut m, &mut model, op);
    }
    // Every node back, syncs at once, a clean wire.
    for i in 0..N {
        m.restart(i);
    }
    // Until every node follows one leader (at most `CLEAN_ROUNDS`).
    for _ in 0..CLEAN_ROUNDS {
        let led_by = |i: usize| m.status(i).and_then(|s| s.leader.map(|l| (s.term, l)));
        if led_by(0).is_some() && (1..N).all(|i| led_by(i) == led_by(0)) {
            break;
        }
        m.round();
        model.check(&mut m);
    }
    // A client that retries on whoever leads gets a quorum append acknowledged.
    let mut acked = None;
    for _ in 0..10 {
        let seq = m
            .leader()
            .and_then(|i| Some((i, model.append(&mut m, i, Durability::Quorum)?)));
        for _ in 0..60 {
            m.round();
            model.check(&mut m);
            if seq.is_none_or(|k| !model.pending.contains_key(&k)) {
                break;
            }
        }
        if let Some((_, s)) = seq.filter(|(_, s)| model.acked.contains_key(s)) {
            acked = Some(s);
            break;
        }
    }
    let Some(last) = acked else {
        panic!(
            "no quorum append acknowledged on a clean wire in 10 tries of 3 s ({})",
            m.describe()
        );
    };
    // Catch-up: every node commits through it and holds every acknowledged append.
    for _ in 0..100 {
        if (0..N).all(|i| m.status(i).is_some_and(|s| s.commit > last)) {
            break;
        }
        m.round();
        model.check(&mut m);
    }
    for i in 0..N {
        let s = m.status(i).expect("every node is up with its log");
        assert!(
            s.commit > last,
            "node {i} has not caught up in 5 s: commit {} of {} ({})",
            s.commit,
            last + 1,
            m.describe()
        );
        let n = m.nodes[i].as_ref().expect("up");
        let held: BTreeMap<u64, Vec<u8>> = n
            .log_read(m.log, 0, MAX_EVENTS, 1 << 22)
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.seq, e.payload))
            .collect();
        for (seq, payload) in model.acked.range(s.first_seq..) {
            assert_eq!(
                held.get(seq),
                Some(payload),
                "node {i} lost acknowledged append {seq}"
            );
        }
    }
    Summary {
        acked: model.acked.len(),
        committed: model.committed.len(),
        terms: model.leaders.len(),
        starts: m.incarnation.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_of_work(ops: &mut Vec<MeshOp>) {
        for node in 0..3 {
            ops.push(MeshOp::Append { node, quorum: true });
        }
        for _ in 0..3 {
            for node in 0..3 {
                ops.push(MeshOp::Sync { node });
            }
            for to in 0..12 {
                ops.push(MeshOp::Wire(WireOp::Deliver { to, index: 0 }));
            }
        }
        ops.push(MeshOp::Wire(WireOp::Advance { ms: 30 }));
    }

    #[test]
    fn appends_are_acknowledged_across_a_crash_of_every_node_in_turn() {
        let mut ops = Vec::new();
        for crashed in 0..3 {
            for _ in 0..2 {
                round_of_work(&mut ops);
            }
            ops.push(MeshOp::Crash { node: crashed });
            // Long enough for an election if the crashed node led.
            // (in steps much shorter than the election timeouts, which are randomised to
            // break ties).
            for _ in 0..3 {
                for _ in 0..10 {
                    ops.push(MeshOp::Wire(WireOp::Advance { ms: 50 }));
                    for to in 0..6 {
                        ops.push(MeshOp::Wire(WireOp::Deliver { to, index: 0 }));
                    }
                    for node in 0..3 {
                        ops.push(MeshOp::Sync { node });
                    }
                }
                round_of_work(&mut ops);
            }
            for _ in 0..2 {
                round_of_work(&mut ops);
            }
            ops.push(MeshOp::Restart { node: crashed });
        }
        let s = run(ops);
        // Work went on while a node was down: with two of three up there is a quorum. Of the
        // 21 rounds' appends on the leader, those that met a crash of the leader are lost.
        assert!(s.acked >= 15, "{s:?}");
        // One of the crashed nodes led: a new term followed.
        assert!(s.terms >= 2, "{s:?}");
        assert!(s.committed >= s.acked, "{s:?}");
        assert_eq!(s.starts, 6, "{s:?}");
    }

    /// The leader and one follower commit an append while the third node is down; both
    /// crash and the follower comes back with the third. Returns the append's sequence and
    /// whether it survived on the follower.
    fn two_crashes_after_a_commit(lossy_follower: bool) -> (u64, bool) {
        let mut m = Mesh::with_leader();
        let mut model = Model::default();
        let l = m.leader().expect("a leader on a clean wire");
        let (f, g) = ((l + 1) % N, (l + 2) % N);
        m.lossy[f] = lossy_follower;
        m.crash(g);
        let seq = model
            .append(&mut m, l, Durability::Quorum)
            .expect("the leader takes an append");
        for _ in 0..20 {
            m.round();
            model.check(&mut m);
        }
        assert!(
            model.acked.contains_key(&seq),
            "acknowledged by {l} and {f}"
        );
        m.crash(l);
        m.crash(f);
        m.restart(f);
        m.restart(g);
        // A client goes on writing to whoever leads.
        for _ in 0..5 {
            for _ in 0..20 {
                m.round();
                model.check(&mut m);
            }
            if let Some(k) = m.leader() {
                let _ = model.append(&mut m, k, Durability::Quorum);
            }
        }
        let held = m.nodes[f]
            .as_ref()
            .and_then(|n| n.log_read(m.log, seq, 1, 1 << 20).ok())
            .unwrap_or_default();
        (seq, held.first().is_some_and(|e| e.seq == seq))
    }

    #[test]
    fn an_append_committed_on_two_disks_survives_both_their_nodes_crashing() {
        let (seq, held) = two_crashes_after_a_commit(false);
        assert!(held, "append {seq} lost");
    }

    /// The model itself: a disk that loses an event it acknowledged is caught.
    #[test]
    #[should_panic(expected = "two appends acknowledged at quorum")]
    fn the_model_catches_a_disk_that_loses_what_it_acknowledged() {
        let _ = two_crashes_after_a_commit(true);
    }

    #[test]
    fn a_disk_that_never_syncs_acknowledges_nothing_until_the_end() {
        let mut ops = Vec::new();
        for _ in 0..20 {
            for node in 0..3 {
                ops.push(MeshOp::Append { node, quorum: true });
            }
            for to in 0..3 {
                ops.push(MeshOp::Wire(WireOp::Deliver { to, index: 0 }));
            }
            ops.push(MeshOp::Wire(WireOp::Advance { ms: 30 }));
        }
        let mut syncless = Mesh::with_leader();
        let mut model = Model::default();
        for op in ops {
            step(&mut syncless, &mut model, op);
        }
        // Nothing leaves a replica before its sync, so nothing can reach a quorum.
        assert!(model.acked.is_empty(), "{} acknowledged", model.acked.len());
        assert!(!model.pending.is_empty(), "no append was taken");
    }
}
